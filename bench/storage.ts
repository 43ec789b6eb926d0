import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { cleanupDataDir, makeDataDir, startDaemon } from '../test/helpers/daemon.ts';

// `npm run bench` (second part): the storage engine's goals from DESIGN.md. Checkpoint of a
// stopped and of a started machine with 1 GB written, restore, fork × 8, checkpoint time with
// 1,000 checkpoints already there, and write throughput inside a machine against the host disk.
// BENCH_CHECKPOINTS changes the 1,000.

const RUNS = Number(process.env.BENCH_RUNS ?? 20);
const MANY = Number(process.env.BENCH_CHECKPOINTS ?? 1000);
const APP = 'bench-storage';

function pct(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function time(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

const progress = (what: string) => process.stderr.write(`bench: ${what}\n`);
const dataDir = await makeDataDir();
const daemon = await startDaemon(dataDir);
const { client } = daemon;
const rows: Array<{ name: string; samples: number[]; goal: string }> = [];
try {
  // Benchmarks start and stop machines as fast as they can: no start rate limit in the way.
  await client.apps.create(APP, { settings: { limits: { starts_per_second: 1000, start_burst: 1000, creates_per_minute: 100000 } } });
  const config = { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] }, rootfs: { size_gb: 4 } };
  const m = await client.machines.create(APP, { config });
  const sh = (id: string, script: string) => client.machines.exec(APP, id, ['sh', '-c', script], { timeoutS: 600 });

  progress('writing 1 GB into a machine, and the same on the host disk');
  const inMachine = await time(() => sh(m.id, 'dd if=/dev/zero of=/gig bs=1M count=1024 conv=fsync 2>/dev/null'));
  const hostFile = join(dataDir, 'bench-host-gig');
  const onHost = await time(async () => execFileSync('dd', ['if=/dev/zero', `of=${hostFile}`, 'bs=1M', 'count=1024', 'conv=fsync'], { stdio: 'ignore' }));
  rmSync(hostFile);

  progress(`checkpoint of the started machine × ${RUNS}`);
  const started: number[] = [];
  for (let i = 0; i < RUNS; i++) started.push(await time(() => client.checkpoints.create(APP, m.id)));
  rows.push({ name: 'checkpoint, started, 1 GB written', samples: started, goal: '< 300 ms' });

  progress(`checkpoint of the stopped machine × ${RUNS}`);
  await client.machines.stop(APP, m.id);
  const stopped: number[] = [];
  for (let i = 0; i < RUNS; i++) stopped.push(await time(() => client.checkpoints.create(APP, m.id)));
  rows.push({ name: 'checkpoint, stopped, 1 GB written', samples: stopped, goal: '< 100 ms' });

  progress(`restore of the stopped machine × ${RUNS}`);
  const ids = (await client.checkpoints.list(APP, m.id)).map((c) => c.id);
  const restore: number[] = [];
  for (let i = 0; i < RUNS; i++) restore.push(await time(() => client.checkpoints.restore(APP, m.id, ids[i % ids.length]!)));
  rows.push({ name: 'restore, stopped', samples: restore, goal: '< 300 ms' });
  const start: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    start.push(await time(() => client.machines.start(APP, m.id)));
    await client.machines.stop(APP, m.id);
  }
  rows.push({ name: 'start after a restore', samples: start, goal: '(start)' });

  progress('fork × 8 of the machine with 1 GB written, started');
  await client.machines.start(APP, m.id);
  const fork: number[] = [];
  for (let i = 0; i < Math.min(RUNS, 5); i++) {
    let made: string[] = [];
    fork.push(await time(async () => (made = (await client.machines.fork(APP, m.id, { count: 8 })).machines.map((f) => f.id))));
    for (const id of made) await client.machines.destroy(APP, id, { force: true });
  }
  rows.push({ name: 'fork × 8 (started copies), 1 GB written', samples: fork, goal: '< 1 s' });

  progress(`${MANY} checkpoints, then checkpoint × ${RUNS} more`);
  await client.machines.stop(APP, m.id);
  for (let i = (await client.checkpoints.list(APP, m.id)).length; i < MANY; i++) await client.checkpoints.create(APP, m.id);
  const crowded: number[] = [];
  for (let i = 0; i < RUNS; i++) crowded.push(await time(() => client.checkpoints.create(APP, m.id)));
  rows.push({ name: `checkpoint, stopped, with ${MANY} checkpoints`, samples: crowded, goal: '< 100 ms' });

  const width = Math.max(...rows.map((r) => r.name.length));
  process.stdout.write(`\n${'storage operation'.padEnd(width)}    p50 ms   p90 ms   goal\n`);
  for (const r of rows) {
    process.stdout.write(`${r.name.padEnd(width)}  ${pct(r.samples, 50).toFixed(1).padStart(8)} ${pct(r.samples, 90).toFixed(1).padStart(8)}   ${r.goal}\n`);
  }
  const mibs = (ms: number) => (1024 / (ms / 1000)).toFixed(0);
  process.stdout.write(`\nwrite 1 GiB + fsync: in a machine ${mibs(inMachine)} MiB/s, on the host disk ${mibs(onHost)} MiB/s\n`);
} finally {
  await daemon.kill().catch(() => undefined);
  await cleanupDataDir(dataDir);
}
