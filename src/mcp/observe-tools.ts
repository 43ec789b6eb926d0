import type { MachineMetrics } from '../protocol/machine-metrics.ts';
import { appArg, machineArg, READ_ONLY, tool } from './tool-def.ts';

// Looking at a machine from outside: its resource use (machine_metrics).

/** 1536 → "1.5 KiB". */
export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) (n /= 1024), i++;
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function metricsLine(m: MachineMetrics): string {
  const parts = [m.state];
  if (m.cpu) parts.push(`cpu ${m.cpu.usage_seconds.toFixed(2)}s`);
  if (m.memory) parts.push(`memory ${bytes(m.memory.current_bytes)}${m.memory.limit_bytes ? ` of ${bytes(m.memory.limit_bytes)}` : ''}${m.memory.peak_bytes !== undefined ? ` (peak ${bytes(m.memory.peak_bytes)})` : ''}`);
  if (m.pids) parts.push(`${m.pids.current} pids`);
  if (m.disk) parts.push(`disk ${bytes(m.disk.used_bytes)} of ${bytes(m.disk.size_bytes)}`);
  if (m.network) parts.push(`net rx ${bytes(m.network.rx_bytes)} tx ${bytes(m.network.tx_bytes)}`);
  return `${m.machine_id}: ${parts.join(', ')}`;
}

export const observeTools = [
  tool({
    name: 'machine_metrics',
    description:
      "A machine's resource use now: CPU seconds, memory (current, peak, limit) and process count this run (null unless it runs), " +
      'disk used of its size, network bytes received and sent. Call it twice a few seconds apart for rates (CPU seconds per second ≈ cores busy). ' +
      'Use it to see whether a build is still working, why a machine is slow, or whether it is near its memory limit (OOM) or disk size.',
    input: { app: appArg, id: machineArg },
    annotations: READ_ONLY,
    run: async ({ app, id }, ctx) => {
      const metrics = await ctx.client.machines.metrics(app, id, { signal: ctx.signal });
      return { summary: metricsLine(metrics), data: metrics };
    },
  }),
];
