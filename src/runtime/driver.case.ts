// The conformance suite every runtime driver passes (after containerd's snapshot testsuite).
// A driver's own test file calls runDriverConformance; skips are listed there with their reasons.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { after, before, describe, it, type TestContext } from 'node:test';
import { isHangarError } from '../protocol/errors.ts';
import { runIsolationCases } from './driver-isolation.case.ts';
import {
  type ConformanceTarget,
  isAlive,
  loadFactory,
  makeRoot,
  type MachineOptions,
  prepareMachine,
  startMachine,
  until,
  waitForExit,
} from './driver-fixture.ts';
import type { Driver, ExitInfo } from './driver.ts';

export type { ConformanceTarget } from './driver-fixture.ts';

export type Suite = {
  target: ConformanceTarget;
  driver(): Driver;
  root(): string;
  start(t: TestContext, opts: MachineOptions): ReturnType<typeof startMachine>;
  /** `it`, or a skip when the target lists this case. */
  test(name: string, fn: (t: TestContext) => Promise<void>): void;
};

export function runDriverConformance(target: ConformanceTarget): void {
  describe(`driver conformance: ${target.name}`, () => {
    let driver: Driver;
    let root: string;
    before(async () => {
      root = makeRoot('hangar-conformance');
      driver = (await loadFactory(target))({ stateRoot: `${root}/state` });
      await driver.checkHost();
    });
    after(() => {
      // A driver may have bind-mounted its state root's parent onto itself (the crun launcher does).
      spawnSync('umount', ['-l', root], { stdio: 'ignore' });
      rmSync(root, { recursive: true, force: true });
    });
    const suite: Suite = {
      target,
      driver: () => driver,
      root: () => root,
      start: (t, opts) => startMachine(t, driver, target, root, opts),
      test: (name, fn) => {
        const reason = target.skip?.[name];
        if (reason) it(name, { skip: reason }, () => {});
        else it(name, { timeout: 120_000 }, fn);
      },
    };
    runLifecycleCases(suite);
    runExecCases(suite);
    runIsolationCases(suite);
  });
}

const LOOP = 'while :; do sleep 0.05; done';

function runLifecycleCases(s: Suite): void {
  s.test('start returns the pid of a running init, and its output reaches the log', async (t) => {
    const m = await s.start(t, { args: ['sh', '-c', `echo hello-from-machine; ${LOOP}`] });
    assert.ok(m.pid > 0 && isAlive(m.pid));
    assert.deepEqual(await s.driver().state(m.id, m.spec), { status: 'running', pid: m.pid });
    await until('log output', () => m.log().includes('hello-from-machine'));
  });

  s.test('watchExit reports the exit code exactly once, and at once to a late subscriber', async (t) => {
    const m = await s.start(t, { args: ['sh', '-c', 'sleep 0.2; exit 7'] });
    const calls: ExitInfo[] = [];
    s.driver().watchExit(m.id, m.spec, (exit) => calls.push(exit));
    await until('exit', () => calls.length > 0);
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(calls.length, 1);
    assert.equal(calls[0]!.exitCode, 7);
    assert.equal(calls[0]!.oomKilled, false);
    assert.ok(calls[0]!.exitedAt instanceof Date);
    const late = await waitForExit(s.driver(), m.spec, 2_000);
    assert.equal(late.exitCode, 7);
  });

  s.test('SIGTERM reaches the app through the init, and the trap decides the exit code', async (t) => {
    const m = await s.start(t, { args: ['sh', '-c', `trap 'echo got-term; exit 42' TERM; echo ready; ${LOOP}`] });
    await until('trap installed', () => m.log().includes('ready'));
    const exited = waitForExit(s.driver(), m.spec, 10_000);
    await s.driver().kill(m.id, 'SIGTERM');
    const exit = await exited;
    assert.equal(exit.exitCode, 42);
    assert.match(m.log(), /got-term/);
  });

  s.test('SIGKILL exit is 137 with signal SIGKILL and not an OOM kill', async (t) => {
    const m = await s.start(t, { args: ['sleep', '1000'], limits: { memoryMb: 64 } });
    const exited = waitForExit(s.driver(), m.spec, 10_000);
    await s.driver().kill(m.id, 'SIGKILL');
    const exit = await exited;
    assert.equal(exit.exitCode, 137);
    assert.equal(exit.signal, 'SIGKILL');
    assert.equal(exit.oomKilled, false);
  });

  s.test('state tells exited after the exit and absent after cleanup', async (t) => {
    const m = await s.start(t, { args: ['sh', '-c', 'exit 3'] });
    await waitForExit(s.driver(), m.spec, 10_000);
    const state = await s.driver().state(m.id, m.spec);
    assert.equal(state.status, 'exited');
    assert.equal(state.status === 'exited' && state.exit.exitCode, 3);
    await s.driver().cleanup(m.id, m.spec);
    await s.driver().cleanup(m.id, m.spec);
    assert.deepEqual(await s.driver().state(m.id, m.spec), { status: 'absent' });
  });

  s.test('a machine can be started again after cleanup', async (t) => {
    const m = await s.start(t, { args: ['sh', '-c', 'echo run; exit 0'] });
    await waitForExit(s.driver(), m.spec, 10_000);
    await s.driver().cleanup(m.id, m.spec);
    await s.driver().start(m.id, m.spec);
    assert.equal((await waitForExit(s.driver(), m.spec, 10_000)).exitCode, 0);
    assert.equal(m.log().match(/run/g)?.length, 2);
  });

  s.test('start rejects with runtime_error and the runtime message when the rootfs is gone', async (t) => {
    const m = await prepareMachine(t, s.driver(), s.target, s.root(), { args: ['true'] });
    rmSync(m.spec.rootfs, { recursive: true, force: true });
    await assert.rejects(s.driver().start(m.id, m.spec), (err) => isHangarError(err, 'runtime_error') && err.message.includes(m.spec.rootfs) && !!err.hint);
  });

  s.test('a command that cannot run exits 127 with the reason in the log', async (t) => {
    const m = await s.start(t, { args: ['/no/such/binary'] });
    assert.equal((await waitForExit(s.driver(), m.spec, 10_000)).exitCode, 127);
    assert.match(m.log(), /\/no\/such\/binary/);
  });

  s.test('prepare refuses more memory than the host has', async (t) => {
    await assert.rejects(
      prepareMachine(t, s.driver(), s.target, s.root(), { args: ['true'], limits: { memoryMb: 1024 * 1024 * 1024 } }),
      (err) => isHangarError(err, 'memory_unavailable') && /at most \d+/.test(err.hint ?? ''),
    );
  });

  s.test('a machine keeps running after the process that started it exits', async (t) => {
    const m = await prepareMachine(t, s.driver(), s.target, s.root(), { args: ['sh', '-c', LOOP] });
    const child = spawnSync(
      process.execPath,
      ['--input-type=module', '-e', START_IN_CHILD, s.target.factoryModule, s.target.factoryExport, `${s.root()}/state`, JSON.stringify(m.spec)],
      { encoding: 'utf8', timeout: 30_000 },
    );
    assert.equal(child.status, 0, child.stderr);
    const { pid } = JSON.parse(child.stdout) as { pid: number };
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(isAlive(pid));
    assert.deepEqual(await s.driver().state(m.id, m.spec), { status: 'running', pid });
    const exited = waitForExit(s.driver(), m.spec, 10_000);
    await s.driver().kill(m.id, 'SIGKILL');
    assert.equal((await exited).exitCode, 137);
  });
}

const START_IN_CHILD = `
const [mod, name, stateRoot, specJson] = process.argv.slice(1);
const driver = (await import(mod))[name]({ stateRoot });
const spec = JSON.parse(specJson);
const { pid } = await driver.start(spec.id, spec);
process.stdout.write(JSON.stringify({ pid }));
process.exit(0);
`;

function runExecCases(s: Suite): void {
  s.test('exec returns stdout, stderr and the exit code, and sees the machine env', async (t) => {
    const m = await s.start(t, { args: ['sleep', '1000'] });
    const res = await s.driver().exec(m.id, { command: ['sh', '-c', 'echo out=$HANGAR_TEST; echo err >&2; exit 5'], timeoutMs: 10_000 });
    assert.equal(res.exitCode, 5);
    assert.equal(res.stdout.toString(), 'out=conformance\n');
    assert.equal(res.stderr.toString(), 'err\n');
    assert.equal(res.timedOut, false);
    const over = await s.driver().exec(m.id, { command: ['sh', '-c', 'echo $HANGAR_TEST $EXTRA; pwd; id -u'], env: ['HANGAR_TEST=over', 'EXTRA=1'], cwd: '/tmp', uid: 1000, gid: 1000, timeoutMs: 10_000 });
    assert.equal(over.stdout.toString(), 'over 1\n/tmp\n1000\n');
  });

  s.test('exec feeds stdin', async (t) => {
    const m = await s.start(t, { args: ['sleep', '1000'] });
    const res = await s.driver().exec(m.id, { command: ['sh', '-c', 'wc -c; cat'], stdin: '', timeoutMs: 10_000 });
    assert.equal(res.stdout.toString().trim(), '0');
    const echo = await s.driver().exec(m.id, { command: ['cat'], stdin: Buffer.from('line1\nline2\n'), timeoutMs: 10_000 });
    assert.equal(echo.stdout.toString(), 'line1\nline2\n');
  });

  s.test('exec output keeps its head and tail within the budget and counts what it left out', async (t) => {
    const m = await s.start(t, { args: ['sleep', '1000'] });
    const res = await s.driver().exec(m.id, { command: ['sh', '-c', 'echo first; head -c 6291456 /dev/zero | tr "\\0" x; echo; echo last'], timeoutMs: 20_000 });
    assert.equal(res.exitCode, 0);
    const total = 6 + 6 * 1024 * 1024 + 1 + 5;
    assert.equal(res.stdoutDroppedBytes, total - 1024 * 1024);
    assert.match(res.stdout, /^first\nx+\n\[hangar: \d+ bytes of output left out here; .+\]\nx+\nlast\n$/);
    const small = await s.driver().exec(m.id, { command: ['sh', '-c', 'seq 1 1000; seq 1 1000 >&2'], maxOutputBytes: 1000, timeoutMs: 20_000 });
    assert.equal(small.stdoutDroppedBytes + small.stderrDroppedBytes, 2 * 3893 - 1000);
    assert.ok(small.stdout.startsWith('1\n2\n') && small.stdout.endsWith('999\n1000\n'));
  });

  s.test('exec timeout kills the exec-ed process tree, not just the client', async (t) => {
    const m = await s.start(t, { args: ['sleep', '1000'] });
    const started = Date.now();
    const res = await s.driver().exec(m.id, { command: ['sh', '-c', 'sleep 4321; echo never'], timeoutMs: 300 });
    assert.equal(res.timedOut, true);
    assert.ok(Date.now() - started < 5_000);
    assert.notEqual(res.exitCode, 0);
    await assertNoProcess(s, m.id, 'sleep 4321');
  });

  s.test('exec is cancelled by an AbortSignal the same way', async (t) => {
    const m = await s.start(t, { args: ['sleep', '1000'] });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 300);
    await assert.rejects(s.driver().exec(m.id, { command: ['sleep', '4322'], timeoutMs: 30_000, signal: controller.signal }));
    await assertNoProcess(s, m.id, 'sleep 4322');
  });

  s.test('execStream hands output over as it comes, takes stdin, and lists the machine processes', async (t) => {
    const m = await s.start(t, { args: ['sleep', '1000'] });
    const proc = await s.driver().execStream(m.id, { command: ['sh', '-c', 'read line; echo "got $line"; sleep 5; echo late'], timeoutMs: 10_000 });
    let out = '';
    proc.stdout.on('data', (c: Buffer) => (out += c.toString()));
    proc.stdin.end('hello\n');
    for (let i = 0; i < 50 && !out.includes('got hello'); i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(out, 'got hello\n', 'output arrives while the command still runs');
    const pids = await s.driver().processes(m.id);
    assert.ok(pids.length >= 3, `init, sleep and the exec'd shell: ${pids.join(' ')}`);
    const controller = new AbortController();
    const cancelled = await s.driver().execStream(m.id, { command: ['sleep', '4323'], timeoutMs: 30_000, signal: controller.signal });
    controller.abort();
    const exit = await cancelled.exit;
    assert.equal(exit.cancelled, true);
    await assertNoProcess(s, m.id, 'sleep 4323');
    assert.equal((await proc.exit).exitCode, 0);
    assert.equal(out, 'got hello\nlate\n');
  });

  s.test('exec into a machine that is not running is a runtime_error', async (t) => {
    const m = await s.start(t, { args: ['sh', '-c', 'exit 0'] });
    await waitForExit(s.driver(), m.spec, 10_000);
    await assert.rejects(s.driver().exec(m.id, { command: ['true'], timeoutMs: 5_000 }), (err) => isHangarError(err, 'runtime_error'));
  });
}

async function assertNoProcess(s: Suite, id: string, pattern: string): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const ps = await s.driver().exec(id, { command: ['ps', '-o', 'pid,args'], timeoutMs: 10_000 });
    if (!ps.stdout.toString().includes(pattern)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`a process "${pattern}" still runs in the machine`);
}
