// Measures start latency of the crun driver against a bare `crun run -d` through the same
// namespace wrapper (median of 20 each). Not a test: `node src/runtime/measure-start.ts`, as root.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeBusyboxRootfs } from '../../test/helpers/busybox-rootfs.ts';
import { crunArgv, detectCrunCommand, inCrunNamespace } from './crun-command.ts';
import { createCrunDriver } from './crun-driver.ts';
import type { MachineSpec } from './driver.ts';

const RUNS = 20;

// stdio ignored: a detached machine would hold captured pipes open and the call would never end.
function run(argv: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore' });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${argv.join(' ')} exited ${code}`))));
  });
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

const root = mkdtempSync(join(tmpdir(), 'hangar-measure-'));
try {
  const stateRoot = join(root, 'state');
  const driver = createCrunDriver({ stateRoot });
  const cmd = detectCrunCommand(stateRoot);
  const rootfs = makeBusyboxRootfs(root).path;
  const spec = (id: string): MachineSpec => ({
    id,
    hostname: id,
    rootfs,
    bundleDir: join(root, id),
    logPath: join(root, `${id}.log`),
    process: { args: ['sleep', '1000'], env: ['PATH=/bin'], cwd: '/', uid: 0, gid: 0 },
    limits: { memoryMb: 256, cpus: 1 },
  });

  const viaDriver: number[] = [];
  const raw: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const d = spec(`measure-d${i}`);
    await driver.prepare(d);
    let t = performance.now();
    await driver.start(d.id, d);
    viaDriver.push(performance.now() - t);
    const exited = new Promise((r) => driver.watchExit(d.id, d, r));
    await driver.kill(d.id, 'SIGKILL');
    await exited;
    await driver.cleanup(d.id, d);

    const r = spec(`measure-r${i}`);
    await driver.prepare(r);
    const argv = inCrunNamespace(cmd, crunArgv(cmd, ['run', '-d', '-b', r.bundleDir, '--pid-file', join(r.bundleDir, 'pid'), r.id]));
    t = performance.now();
    try {
      await run(argv);
      raw.push(performance.now() - t);
    } finally {
      await run(inCrunNamespace(cmd, crunArgv(cmd, ['delete', '-f', r.id])));
    }
  }
  const fmt = (xs: number[]) => `median ${median(xs).toFixed(1)} ms, min ${Math.min(...xs).toFixed(1)}, max ${Math.max(...xs).toFixed(1)}`;
  console.log(`driver.start (shim, foreground crun run, pid file): ${fmt(viaDriver)}`);
  console.log(`crun run -d through the same wrapper:              ${fmt(raw)}`);
} finally {
  rmSync(root, { recursive: true, force: true });
}
