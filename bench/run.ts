import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanupDataDir, makeDataDir, startDaemon } from '../test/helpers/daemon.ts';
import { BareFloor } from './bare-floor.ts';
import { printThroughput, proxyThroughput } from './proxy-throughput.ts';

// `npm run bench`: machine lifecycle latencies through the API (and a wake through the edge
// proxy), next to the bare floor (bare-floor.ts: crun on a `crun spec` bundle in one long-lived
// shell, interleaved with Hangar's starts) and raw crun on Hangar's own bundle in the same run;
// then proxy throughput (see proxy-throughput.ts) on a daemon of its own, unless
// BENCH_SKIP_PROXY=1. Prints a table; goals are in DESIGN.md ("Performance goals").

const RUNS = Number(process.env.BENCH_RUNS ?? 50);
const APP = 'bench';

type Row = { name: string; samples: number[] };

function pct(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const SETTLE_MS = 100;
const settle = () => new Promise((r) => setTimeout(r, SETTLE_MS));

async function time(fn: () => Promise<unknown> | unknown): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

function firstByte(proxyUrl: string, host: string): Promise<void> {
  const url = new URL(proxyUrl);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path: '/', headers: { host } }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`proxy answered ${res.statusCode}`));
      res.once('data', () => resolve());
      res.resume();
    });
    req.on('error', reject);
    req.end();
  });
}

const dataDir = await makeDataDir();
const daemon = await startDaemon(dataDir);
const { client } = daemon;
const rows: Row[] = [];
try {
  // Benchmarks start and stop machines as fast as they can: no start rate limit in the way.
  await client.apps.create(APP, { settings: { limits: { starts_per_second: 1000, start_burst: 1000, creates_per_minute: 100000 } } });
  const config = { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] } };
  await client.machines.create(APP, { config, skip_launch: true }); // builds the base image once

  const progress = (what: string) => process.stderr.write(`bench: ${what}\n`);
  progress(`create × ${RUNS}`);
  const create: number[] = [];
  const createStarted: number[] = [];
  const ids: string[] = [];
  for (let i = 0; i < RUNS; i++) {
    let id = '';
    await settle();
    create.push(await time(async () => (id = (await client.machines.create(APP, { config, skip_launch: true })).id)));
    ids.push(id);
    await settle();
    createStarted.push(await time(async () => ids.push((await client.machines.create(APP, { config })).id)));
  }
  rows.push({ name: 'create (skip_launch, cached image)', samples: create }, { name: 'create + start', samples: createStarted });

  progress(`start/stop/exec × ${RUNS}`);
  const m = await client.machines.create(APP, { config });
  const start: number[] = [];
  const stop: number[] = [];
  const exec: number[] = [];
  const floorRun: number[] = [];
  const floorExec: number[] = [];
  const floor = new BareFloor();
  try {
    for (let i = 0; i < RUNS; i++) {
      // Each call after a pause, the floor's as well: what one leaves running in the background
      // (a spare forked ahead, a group removed late) lands in no one else's measurement.
      await settle();
      exec.push(await time(() => client.machines.exec(APP, m.id, ['true'])));
      await settle();
      stop.push(await time(() => client.machines.stop(APP, m.id)));
      await settle();
      start.push(await time(() => client.machines.start(APP, m.id)));
      await settle();
      const f = await floor.measure();
      floorRun.push(f.runMs);
      floorExec.push(f.execMs);
    }
  } finally {
    await floor.close();
  }
  rows.push({ name: 'start (stopped → running)', samples: start }, { name: 'stop', samples: stop }, { name: 'exec `true`', samples: exec });
  rows.push({ name: 'floor: `crun run -d`, `crun spec` bundle, one shell', samples: floorRun }, { name: 'floor: `crun exec true` on it', samples: floorExec });

  // Wake on request: a stopped machine's httpd, asked through the edge proxy; to the first byte.
  progress(`wake on request × ${RUNS}`);
  const served = {
    image: 'hangar/busybox',
    init: { cmd: ['sh', '-c', 'echo ok > /tmp/index.html; exec httpd -f -p 8080 -h /tmp'] },
    services: [{ internal_port: 8080 }],
  };
  await client.apps.create('bench-web');
  const web = await client.machines.create('bench-web', { config: served as never });
  const wake: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    await client.machines.stop('bench-web', web.id);
    wake.push(await time(() => firstByte(daemon.proxyUrl, 'bench-web.localhost')));
  }
  await client.machines.destroy('bench-web', web.id, { force: true });
  rows.push({ name: 'wake on request (stopped → first byte via proxy)', samples: wake });

  // Raw crun on the same bundle and rootfs, through the same private mount namespace crun
  // needs on these hosts (see README, "Host notes").
  progress(`raw crun × ${RUNS}`);
  await client.machines.stop(APP, m.id);
  const bundle = mkdtempSync(join(tmpdir(), 'bench-raw-'));
  const spec = JSON.parse(readFileSync(join(dataDir, 'machines', m.id, 'bundle', 'config.json'), 'utf8'));
  spec.linux.cgroupsPath = '/hangar-bench/raw';
  writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
  const stateRoot = join(bundle, 'state');
  mkdirSync(stateRoot);
  const hybrid = readFileSync('/proc/self/mountinfo', 'utf8').includes(' - cgroup2 ');
  const crun = (args: string) =>
    hybrid
      ? spawnSync('unshare', ['-m', '--propagation', 'slave', 'sh', '-c', `umount /sys/fs/cgroup/unified 2>/dev/null; exec crun --root ${stateRoot} ${args}`], { stdio: 'ignore' })
      : spawnSync('sh', ['-c', `exec crun --root ${stateRoot} ${args}`], { stdio: 'ignore' });
  const raw: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    raw.push(await time(() => {
      const r = crun(`run -d -b ${bundle} raw`);
      if (r.status !== 0) throw new Error(`raw crun run failed with status ${r.status}`);
    }));
    crun('kill raw SIGKILL');
    crun('delete -f raw');
  }
  rmSync(bundle, { recursive: true, force: true });
  // crun removes the container's groups, not their parent: an empty group left in every
  // hierarchy would slow each later cgroup operation on the host.
  for (const controller of readdirSync('/sys/fs/cgroup')) {
    try {
      rmdirSync(join('/sys/fs/cgroup', controller, 'hangar-bench'));
    } catch {
      // not a hierarchy, or none made there
    }
  }
  rows.push({ name: "raw `crun run -d`, Hangar's bundle, unshare per run", samples: raw });

  for (const id of [...ids, m.id]) await client.machines.destroy(APP, id, { force: true });
} finally {
  await daemon.kill();
  await cleanupDataDir(dataDir);
}

const p50Of = (prefix: string) => pct(rows.find((r) => r.name.startsWith(prefix))!.samples, 50);
const rawP50 = p50Of('raw');
const floorP50 = p50Of('floor: `crun run');
const line = (cells: string[]) => '| ' + cells.join(' | ') + ' |';
console.log(`\nHangar machine lifecycle, ${RUNS} runs each, ${execFileSync('nproc').toString().trim()} cores, crun ${execFileSync('crun', ['--version']).toString().split('\n')[0]!.split(' ').at(-1)}\n`);
console.log(line(['operation', 'p50 ms', 'p95 ms', 'p50 / floor', 'p50 / raw crun']));
console.log(line(['---', '---:', '---:', '---:', '---:']));
for (const r of rows) {
  const p50 = pct(r.samples, 50);
  console.log(line([r.name, p50.toFixed(1), pct(r.samples, 95).toFixed(1), (p50 / floorP50).toFixed(2) + '×', (p50 / rawP50).toFixed(2) + '×']));
}
const goal = (name: string, p50: number, ok: boolean, want: string) => `${name} ${want} → ${p50.toFixed(name === 'create' ? 1 : 2)}${name === 'create' ? ' ms' : '×'} ${ok ? 'met' : 'NOT met'}`;
const ratio = (prefix: string) => p50Of(prefix) / floorP50;
// Each start, stop and exec ran next to one floor measurement; on a busy host the median of those
// pairs' ratios moves less than the ratio of two medians.
const samplesOf = (prefix: string) => rows.find((r) => r.name.startsWith(prefix))!.samples;
const paired = (prefix: string) => pct(samplesOf(prefix).map((x, i) => x / samplesOf('floor: `crun run')[i]!), 50);
console.log(`\nper-run ratio to the floor run beside it, p50: start ${paired('start').toFixed(2)}×, stop ${paired('stop').toFixed(2)}×, exec ${paired('exec').toFixed(2)}×`);
const createP50 = p50Of('create (skip');
console.log(
  `\ngoals (floor = bare \`crun run -d\` p50 ${floorP50.toFixed(1)} ms): ` +
    [
      goal('start', ratio('start'), ratio('start') <= 1.5, 'p50 ≤ 1.5× floor'),
      goal('stop', ratio('stop'), ratio('stop') <= 1.5, 'p50 ≤ 1.5× floor'),
      goal('exec', ratio('exec'), ratio('exec') <= 1.5, 'p50 ≤ 1.5× floor'),
      goal('create', createP50, createP50 < 25, 'p50 < 25 ms'),
    ].join('; '),
);

if (process.env.BENCH_SKIP_PROXY !== '1') printThroughput(await proxyThroughput());
