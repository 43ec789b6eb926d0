import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { cleanupDataDir, makeDataDir, startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { waitFor } from './helpers/wait.ts';
import { SPARE_ARGV0 } from '../src/runtime/spare-process.ts';

// Every crun call goes through one long-lived launcher process per daemon. Machines must not
// depend on it: killing it takes no machine with it, exits that happen while it is gone are still
// recorded, and the daemon starts a new one the next time it needs one. It lives and dies with
// its daemon.

const APP = 'launch';
const BUSYBOX = 'hangar/busybox';
let dataDir: string;
let d: TestDaemon;

before(async () => {
  dataDir = await makeDataDir();
  d = await startDaemon(dataDir);
  await d.client.apps.create(APP);
});
after(async () => {
  await d?.kill().catch(() => undefined);
  await cleanupDataDir(dataDir);
});

/** Pids of the launchers serving this data dir (its socket is in the data dir, on its command line). */
function launchers(): number[] {
  const found: number[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (argv.some((a) => a.endsWith('launcher-main.ts')) && argv.includes(join(dataDir, 'launcher.sock'))) found.push(Number(pid));
    } catch {
      // gone while we looked
    }
  }
  // A child the launcher is forking has its command line until it execs.
  return found.filter((pid) => !found.includes(parentOf(pid)));
}

function parentOf(pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]);
  } catch {
    return 0;
  }
}

function alive(pid: number): boolean {
  try {
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.startsWith('Z');
  } catch {
    return false;
  }
}

function initPid(id: string): number {
  return Number(readFileSync(join(dataDir, 'machines', id, 'bundle', 'pid'), 'utf8'));
}

function onlyLauncher(): number {
  const pids = launchers();
  assert.equal(pids.length, 1, `one launcher serves the data dir: ${pids.join(' ')}`);
  return pids[0]!;
}

/** Pids of the shells forked ahead by `launcher` (spare-process.ts), or by anyone when undefined. */
function spares(launcher?: number): number[] {
  const found: number[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (argv[3] === SPARE_ARGV0 && (launcher === undefined || parentOf(Number(pid)) === launcher) && alive(Number(pid))) found.push(Number(pid));
    } catch {
      // gone while we looked
    }
  }
  return found;
}

async function killLauncher(): Promise<number> {
  const pid = onlyLauncher();
  process.kill(pid, 'SIGKILL');
  await waitFor(async () => (alive(pid) ? undefined : true), 5_000, 'launcher gone');
  return pid;
}

describe('the launcher', () => {
  it('runs apart from the daemon, in a mount namespace of its own on a hybrid-cgroup host', () => {
    const pid = onlyLauncher();
    assert.notEqual(pid, d.process.pid);
    const hybrid = readFileSync('/proc/self/mountinfo', 'utf8').includes(' - cgroup2 ');
    if (hybrid) {
      assert.notEqual(readlinkSync(`/proc/${pid}/ns/mnt`), readlinkSync('/proc/self/ns/mnt'));
      assert.doesNotMatch(readFileSync(`/proc/${pid}/mountinfo`, 'utf8'), / - cgroup2 /, 'crun sees no cgroup2 mount there');
    }
  });

  it('dies without taking machines with it; the daemon starts a new one and everything works again', async () => {
    const keeper = await d.client.machines.create(APP, { config: { image: BUSYBOX, init: { cmd: ['sleep', '3600'] } } });
    const ending = await d.client.machines.create(APP, {
      config: { image: BUSYBOX, init: { cmd: ['sh', '-c', 'sleep 2; exit 7'] }, restart: { policy: 'no' } },
    });
    await d.client.machines.exec(APP, keeper.id, ['sh', '-c', 'echo kept > /note']);
    const keeperInit = initPid(keeper.id);

    const old = await killLauncher();

    // The machine runs on; one that ends while no launcher exists has its exit recorded.
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(alive(keeperInit), 'the machine outlived the launcher');
    const ended = await waitFor(async () => {
      const m = await d.client.machines.get(APP, ending.id);
      return m.state === 'stopped' ? m : undefined;
    }, 15_000, 'the machine that ended is stopped');
    const exit = ended.events.find((e) => e.type === 'exit')?.request?.exit_event as { exit_code: number } | undefined;
    assert.equal(exit?.exit_code, 7);

    // The next call starts a new launcher: exec, ps, stop and start all work again.
    const r = await d.client.machines.exec(APP, keeper.id, ['cat', '/note']);
    assert.equal(r.stdout, 'kept\n');
    const fresh = onlyLauncher();
    assert.notEqual(fresh, old);
    assert.ok((await d.client.machines.ps(APP, keeper.id)).length >= 1);
    await d.client.machines.stop(APP, keeper.id);
    assert.equal((await d.client.machines.get(APP, keeper.id)).state, 'stopped');
    assert.ok(!alive(keeperInit));
    await d.client.machines.start(APP, keeper.id);
    assert.equal((await d.client.machines.exec(APP, keeper.id, ['cat', '/note'])).stdout, 'kept\n');
    await d.client.machines.start(APP, ending.id);
    assert.equal((await d.client.machines.get(APP, ending.id)).state, 'started');
  });

  it('keeps shells forked ahead for starts and execs, which put the machine in its own group; killed, they are forked again', async () => {
    const launcher = onlyLauncher();
    const m = await d.client.machines.create(APP, { config: { image: BUSYBOX, init: { cmd: ['sleep', '3600'] } } });
    await waitFor(async () => (spares(launcher).length === 2 ? true : undefined), 5_000, 'a spare for starts and one for execs');
    const hybrid = readFileSync('/proc/self/mountinfo', 'utf8').includes(' - cgroup2 ');
    const inOwnGroup = async () => {
      // Inside its cgroup namespace a process of the machine's own group sees itself at the root.
      const own = (await d.client.machines.exec(APP, m.id, ['cat', '/proc/self/cgroup'])).stdout;
      if (hybrid) assert.match(own, /^0::\/$/m, `the exec runs in the machine's v2 group: ${own}`);
      if (hybrid) assert.match(readFileSync(`/proc/${initPid(m.id)}/cgroup`, 'utf8'), new RegExp(`^0::/hangar/${m.id}$`, 'm'));
    };
    for (let i = 0; i < 3; i++) {
      await inOwnGroup();
      await d.client.machines.stop(APP, m.id);
      await d.client.machines.start(APP, m.id);
    }
    for (const pid of spares(launcher)) process.kill(pid, 'SIGKILL');
    await inOwnGroup();
    await d.client.machines.stop(APP, m.id);
    await d.client.machines.start(APP, m.id);
    await inOwnGroup();
    await waitFor(async () => (spares(launcher).length === 2 ? true : undefined), 5_000, 'spares forked again');
    await d.client.machines.destroy(APP, m.id, { force: true });
  });

  it('sees mounts made after it started, and loses them when a machine is destroyed', async () => {
    const launcher = onlyLauncher();
    const m = await d.client.machines.create(APP, { config: { image: BUSYBOX, init: { cmd: ['sleep', '3600'] } } });
    assert.equal((await d.client.machines.exec(APP, m.id, ['sh', '-c', 'echo ok'])).stdout, 'ok\n');
    const machineDir = join(dataDir, 'machines', m.id);
    const mountsOf = () =>
      readFileSync(`/proc/${launcher}/mountinfo`, 'utf8')
        .split('\n')
        .filter((l) => l.split(' ')[4]?.startsWith(machineDir + '/'));
    assert.ok(mountsOf().length > 0, 'its root filesystem is visible to the launcher');
    await d.client.machines.destroy(APP, m.id, { force: true });
    assert.deepEqual(mountsOf(), [], 'nothing of the machine stays mounted in the launcher');
  });

  it('goes with its daemon; a restarted daemon adopts the machines with a launcher of its own', async () => {
    const m = await d.client.machines.create(APP, { config: { image: BUSYBOX, init: { cmd: ['sleep', '3600'] } } });
    const old = onlyLauncher();
    await d.kill();
    await waitFor(async () => (alive(old) ? undefined : true), 5_000, 'launcher gone with its daemon');
    await waitFor(async () => (spares(old).length === 0 ? true : undefined), 5_000, 'its spares gone with it');
    assert.ok(alive(initPid(m.id)), 'the machine outlived both');
    d = await startDaemon(dataDir);
    assert.equal((await d.client.machines.get(APP, m.id)).state, 'started');
    assert.equal((await d.client.machines.exec(APP, m.id, ['echo', 'back'])).stdout, 'back\n');
    assert.notEqual(onlyLauncher(), old);
  });
});
