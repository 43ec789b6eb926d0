import type { MachineMetrics } from '../protocol/machine-metrics.ts';
import type { HangarClient } from '../sdk/index.ts';
import { bytes } from '../mcp/observe-tools.ts';
import { printJson, printTable } from './output.ts';

// `hangar machines top`: the app's started machines (or the ones named) with their resource use,
// redrawn every interval until Ctrl-C; `--once` prints one table and exits. CPU% is the CPU time
// used between two readings over the time between them (100% = one core busy).

/** The first reading of CPU% needs a second one this much later. */
const FIRST_SAMPLE_MS = 500;
const CLEAR = '\x1b[H\x1b[2J';

export type TopOptions = { app: string; ids: string[]; once: boolean; intervalMs: number; json: boolean };

export async function top(client: HangarClient, opts: TopOptions): Promise<number> {
  const abort = new AbortController();
  const onSigint = () => abort.abort();
  process.once('SIGINT', onSigint);
  try {
    let before = await sample(client, opts);
    await sleep(FIRST_SAMPLE_MS, abort.signal);
    while (!abort.signal.aborted) {
      const now = await sample(client, opts);
      if (opts.json) printJson(now.map((r) => r.metrics));
      else {
        if (!opts.once) process.stdout.write(CLEAR);
        render(before, now);
      }
      if (opts.once) break;
      before = now;
      await sleep(opts.intervalMs, abort.signal);
    }
    return 0;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

type Reading = { metrics: MachineMetrics; name: string; atMs: number };

async function sample(client: HangarClient, opts: TopOptions): Promise<Reading[]> {
  const machines = opts.ids.length > 0
    ? await Promise.all(opts.ids.map((id) => client.machines.get(opts.app, id)))
    : (await client.machines.list(opts.app)).filter((m) => m.state === 'started');
  return Promise.all(machines.map(async (m) => ({ metrics: await client.machines.metrics(opts.app, m.id), name: m.name, atMs: Date.now() })));
}

function render(before: Reading[], now: Reading[]): void {
  const prev = new Map(before.map((r) => [r.metrics.machine_id, r]));
  printTable(now.map(({ metrics: m, name, atMs }) => {
    const p = prev.get(m.machine_id);
    const cpuPct = m.cpu && p?.metrics.cpu && atMs > p.atMs ? ((m.cpu.usage_seconds - p.metrics.cpu.usage_seconds) / ((atMs - p.atMs) / 1000)) * 100 : undefined;
    return {
      id: m.machine_id,
      name,
      state: m.state,
      'cpu%': cpuPct === undefined ? '-' : cpuPct.toFixed(1),
      'cpu time': m.cpu ? `${m.cpu.usage_seconds.toFixed(1)}s` : '-',
      mem: m.memory ? bytes(m.memory.current_bytes) : '-',
      peak: m.memory?.peak_bytes !== undefined ? bytes(m.memory.peak_bytes) : '-',
      limit: m.memory?.limit_bytes !== undefined ? bytes(m.memory.limit_bytes) : '-',
      pids: m.pids ? m.pids.current : '-',
      disk: m.disk ? `${bytes(m.disk.used_bytes)}/${bytes(m.disk.size_bytes)}` : '-',
      rx: m.network ? bytes(m.network.rx_bytes) : '-',
      tx: m.network ? bytes(m.network.tx_bytes) : '-',
    };
  }), ['id', 'name', 'state', 'cpu%', 'cpu time', 'mem', 'peak', 'limit', 'pids', 'disk', 'rx', 'tx']);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}
