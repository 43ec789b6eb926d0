import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanupDataDir, makeDataDir, startDaemon } from '../test/helpers/daemon.ts';
import { printThroughput, proxyThroughput } from './proxy-throughput.ts';

// `npm run bench`: machine lifecycle latencies through the API (and a wake through the edge
// proxy), next to raw crun on the same bundle in the same run; then proxy throughput (see
// proxy-throughput.ts) on a daemon of its own. Prints a table; goals are in DESIGN.md ("Performance goals").

const RUNS = Number(process.env.BENCH_RUNS ?? 50);
const APP = 'bench';

type Row = { name: string; samples: number[] };

function pct(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

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
  await client.apps.create(APP);
  const config = { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] } };
  await client.machines.create(APP, { config, skip_launch: true }); // builds the base image once

  const progress = (what: string) => process.stderr.write(`bench: ${what}\n`);
  progress(`create × ${RUNS}`);
  const create: number[] = [];
  const createStarted: number[] = [];
  const ids: string[] = [];
  for (let i = 0; i < RUNS; i++) {
    let id = '';
    create.push(await time(async () => (id = (await client.machines.create(APP, { config, skip_launch: true })).id)));
    ids.push(id);
    createStarted.push(await time(async () => ids.push((await client.machines.create(APP, { config })).id)));
  }
  rows.push({ name: 'create (skip_launch, cached image)', samples: create }, { name: 'create + start', samples: createStarted });

  progress(`start/stop/exec × ${RUNS}`);
  const m = await client.machines.create(APP, { config });
  const start: number[] = [];
  const stop: number[] = [];
  const exec: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    exec.push(await time(() => client.machines.exec(APP, m.id, ['true'])));
    stop.push(await time(() => client.machines.stop(APP, m.id)));
    start.push(await time(() => client.machines.start(APP, m.id)));
  }
  rows.push({ name: 'start (stopped → running)', samples: start }, { name: 'stop', samples: stop }, { name: 'exec `true`', samples: exec });

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
  rows.push({ name: 'raw `crun run -d` (baseline)', samples: raw });

  for (const id of [...ids, m.id]) await client.machines.destroy(APP, id, { force: true });
} finally {
  await daemon.kill();
  await cleanupDataDir(dataDir);
}

const rawP50 = pct(rows.at(-1)!.samples, 50);
const line = (cells: string[]) => '| ' + cells.join(' | ') + ' |';
console.log(`\nHangar machine lifecycle, ${RUNS} runs each, ${execFileSync('nproc').toString().trim()} cores, crun ${execFileSync('crun', ['--version']).toString().split('\n')[0]!.split(' ').at(-1)}\n`);
console.log(line(['operation', 'p50 ms', 'p95 ms', 'p50 / raw crun']));
console.log(line(['---', '---:', '---:', '---:']));
for (const r of rows) {
  console.log(line([r.name, pct(r.samples, 50).toFixed(1), pct(r.samples, 95).toFixed(1), (pct(r.samples, 50) / rawP50).toFixed(2) + '×']));
}
const startP50 = pct(rows.find((r) => r.name.startsWith('start'))!.samples, 50);
const createP50 = pct(rows[0]!.samples, 50);
console.log(`\ngoals: start p50 ≤ 1.5× raw crun → ${(startP50 / rawP50).toFixed(2)}× ${startP50 / rawP50 <= 1.5 ? 'met' : 'NOT met'}; create p50 < 300 ms → ${createP50.toFixed(0)} ms ${createP50 < 300 ? 'met' : 'NOT met'}`);

printThroughput(await proxyThroughput());
