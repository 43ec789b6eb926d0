// Test support for the driver conformance suite: machines that are always torn down, even when
// the test that made them fails.
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type { Driver, ExitInfo, MachineLimits, MachineSpec, ProcessSpec } from './driver.ts';

export type ConformanceTarget = {
  name: string;
  /** Module exporting `factoryExport(opts: { stateRoot })`; the daemon-death case imports it in a child process. */
  factoryModule: string;
  factoryExport: string;
  makeRootfs(parent: string): { path: string };
  /** Cases this driver cannot pass, by case name, each with the reason; they show up as skipped. */
  skip?: Record<string, string>;
};

export type DriverFactory = (opts: { stateRoot: string }) => Driver;

export async function loadFactory(target: ConformanceTarget): Promise<DriverFactory> {
  const mod = (await import(target.factoryModule)) as Record<string, DriverFactory>;
  return mod[target.factoryExport]!;
}

export type MachineOptions = { args: string[]; limits?: MachineLimits; uid?: number; gid?: number; env?: string[] };

export type TestMachine = { id: string; spec: MachineSpec; dir: string; log(): string };

export function newMachineId(): string {
  return randomBytes(7).toString('hex');
}

/** Lays out (but does not start) a machine whose runtime state and files are removed after the test. */
export async function prepareMachine(t: TestContext, driver: Driver, target: ConformanceTarget, root: string, opts: MachineOptions): Promise<TestMachine> {
  const id = newMachineId();
  const dir = join(root, id);
  mkdirSync(dir, { recursive: true });
  const proc: ProcessSpec = {
    args: opts.args,
    env: opts.env ?? ['PATH=/bin', 'HANGAR_TEST=conformance'],
    cwd: '/',
    uid: opts.uid ?? 0,
    gid: opts.gid ?? 0,
  };
  const spec: MachineSpec = {
    id,
    hostname: `m-${id.slice(0, 6)}`,
    rootfs: target.makeRootfs(dir).path,
    bundleDir: join(dir, 'bundle'),
    logPath: join(dir, 'logs', 'current'),
    process: proc,
    limits: opts.limits ?? {},
  };
  t.after(() => teardown(driver, spec, dir));
  await driver.prepare(spec);
  return { id, spec, dir, log: () => readLog(spec.logPath) };
}

export async function startMachine(t: TestContext, driver: Driver, target: ConformanceTarget, root: string, opts: MachineOptions) {
  const machine = await prepareMachine(t, driver, target, root, opts);
  const { pid } = await driver.start(machine.id, machine.spec);
  return { ...machine, pid };
}

async function teardown(driver: Driver, spec: MachineSpec, dir: string): Promise<void> {
  try {
    const state = await driver.state(spec.id, spec);
    if (state.status === 'running') {
      await driver.kill(spec.id, 'SIGKILL').catch(() => undefined);
      await waitForExit(driver, spec, 10_000).catch(() => undefined);
    }
    await driver.cleanup(spec.id, spec);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function waitForExit(driver: Driver, spec: MachineSpec, timeoutMs: number): Promise<ExitInfo> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`machine ${spec.id} did not exit within ${timeoutMs} ms`));
    }, timeoutMs);
    const stop = driver.watchExit(spec.id, spec, (exit) => {
      clearTimeout(timer);
      resolve(exit);
    });
  });
}

export async function until(what: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function readLog(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function makeRoot(prefix: string): string {
  const root = join('/tmp', `${prefix}-${randomBytes(4).toString('hex')}`);
  mkdirSync(root, { recursive: true });
  return root;
}
