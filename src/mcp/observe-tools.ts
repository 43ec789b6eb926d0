import { z } from 'zod';
import type { MachineMetrics } from '../protocol/machine-metrics.ts';
import type { FileWatchEvent } from '../sdk/index.ts';
import { egressLine } from '../protocol/egress-log.ts';
import { appArg, machineArg, pathArg, READ_ONLY, tool } from './tool-def.ts';

// Looking at a machine from outside: its resource use (machine_metrics), what changes in its
// files (file_watch) and what it sent beyond its app (machine_egress).

const MAX_WATCH_S = 60;
const MAX_WATCH_EVENTS = 1000;

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

const MAX_EGRESS_EVENTS = 1000;

export const observeTools = [
  tool({
    name: 'machine_egress',
    description:
      "A machine's egress log, newest last: every name it looked up outside its app (allowed or refused by the app's egress policy, with the addresses answered), " +
      'every connection it opened beyond its app, with bytes out and in once it ended, and every attempt the policy denied. ' +
      'Use it to audit what a machine talked to, or to see why a download fails under an egress allowlist (a refused name, a denied address). ' +
      'Also a resource: hangar://apps/APP/machines/ID/egress.',
    input: {
      app: appArg,
      id: machineArg,
      tail: z.int().min(1).max(MAX_EGRESS_EVENTS).default(100).meta({ description: `How many of the latest events; default 100, at most ${MAX_EGRESS_EVENTS}` }),
    },
    annotations: READ_ONLY,
    run: async ({ app, id, tail }, ctx) => {
      const { events } = await ctx.client.machines.egress(app, id, { tail, signal: ctx.signal });
      return { summary: events.length ? events.map(egressLine).join('\n') : `${id}: no egress yet`, data: { events } };
    },
  }),
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
  tool({
    name: 'file_watch',
    description:
      'Watch a directory of a started machine for duration_s seconds (at most ' + MAX_WATCH_S + ') and return what changed: ' +
      'create, modify, delete and rename events with paths as the machine sees them (rename has from), each also sent as a progress notification. ' +
      'recursive: true includes every directory below it. Returns early once max_events have come. ' +
      'Use it to see what a build, an install or a server writes, e.g. while a machine_exec runs in another call.',
    input: {
      app: appArg,
      id: machineArg,
      path: pathArg.meta({ description: 'Directory to watch, absolute inside the machine' }),
      recursive: z.boolean().default(false).meta({ description: 'Also every directory below it' }),
      duration_s: z.number().min(0.1).max(MAX_WATCH_S).default(10).meta({ description: `Seconds to collect for; default 10, at most ${MAX_WATCH_S}` }),
      max_events: z.int().min(1).max(MAX_WATCH_EVENTS).default(200).meta({ description: `Stop after this many events; default 200, at most ${MAX_WATCH_EVENTS}` }),
    },
    annotations: READ_ONLY,
    run: async ({ app, id, path, recursive, duration_s, max_events }, ctx) => {
      const watch = await ctx.client.machines.watchFiles(app, id, path, { recursive, signal: ctx.signal });
      const events: FileWatchEvent[] = [];
      const timer = setTimeout(() => watch.close(), duration_s * 1000);
      try {
        for await (const event of watch) {
          events.push(event);
          await ctx.progress(JSON.stringify(event));
          if (events.length >= max_events) break;
        }
      } finally {
        clearTimeout(timer);
        watch.close();
      }
      const truncated = events.length >= max_events;
      const ended = watch.endReason && watch.endReason !== 'closed' ? `; the watch ended: ${watch.endReason}` : '';
      const lines = events.slice(0, 20).map((e) => (e.type === 'rename' ? `rename ${e.from} -> ${e.path}` : 'path' in e ? `${e.type} ${e.path}` : `${e.type} ${JSON.stringify(e)}`));
      const more = events.length > 20 ? `\n… and ${events.length - 20} more` : '';
      const head = `${events.length} change(s) in ${watch.path}${truncated ? ` (stopped at max_events ${max_events})` : ` over ${duration_s}s`}${ended}`;
      return { summary: [head, ...lines].join('\n') + more, data: { path: watch.path, events, truncated } };
    },
  }),
];
