// Conformance cases for limits and hardening: what a machine must not be able to see or do.
import assert from 'node:assert/strict';
import type { Suite } from './driver.case.ts';
import { until, waitForExit } from './driver-fixture.ts';

// Docker's default capability set as a CapBnd mask.
const DEFAULT_CAP_MASK = '00000000a80425fb';

export function runIsolationCases(s: Suite): void {
  s.test('a memory hog over its limit is OOM-killed and reported so', async (t) => {
    // The shell accumulates the whole stream in a variable, so the shell itself outgrows 32 MiB.
    const hog = 'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo survived ${#x}';
    const m = await s.start(t, { args: ['sh', '-c', hog], limits: { memoryMb: 32 } });
    const exit = await waitForExit(s.driver(), m.spec, 60_000);
    assert.equal(exit.exitCode, 137);
    assert.equal(exit.oomKilled, true);
    assert.doesNotMatch(m.log(), /survived/);
  });

  s.test('the pids limit caps the number of processes', async (t) => {
    // The inner shell dies when fork fails; the outer one counts without forking (glob, builtins).
    const forker = 'sh -c "i=0; while [ \\$i -lt 80 ]; do sleep 30 & i=\\$((i+1)); done" 2>/dev/null; set -- /proc/[0-9]*; echo procs=$#';
    const m = await s.start(t, { args: ['sh', '-c', forker], limits: { pidsLimit: 20 } });
    await waitForExit(s.driver(), m.spec, 30_000);
    const procs = Number(/procs=(\d+)/.exec(m.log())?.[1]);
    assert.ok(procs > 2 && procs <= 20, `saw ${procs} processes`);
  });

  s.test('the cpu quota is visible in the machine cgroup', async (t) => {
    const m = await s.start(t, { args: ['sleep', '1000'], limits: { cpus: 0.5 } });
    const res = await exec(s, m.id, 'cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/cpu.max');
    assert.match(res, /^(50000|50000 100000)$/m);
  });

  s.test('the machine runs with the default hardening', async (t) => {
    const m = await s.start(t, { args: ['sleep', '1000'] });
    for (const who of ['1', 'self']) {
      const status = await exec(s, m.id, `cat /proc/${who}/status`);
      assert.match(status, new RegExp(`^CapBnd:\\s+${DEFAULT_CAP_MASK}$`, 'm'), `CapBnd of ${who}`);
      assert.match(status, /^Seccomp:\s+2$/m, `Seccomp of ${who}`);
      assert.match(status, /^NoNewPrivs:\s+1$/m, `NoNewPrivs of ${who}`);
    }
    assert.equal(await exec(s, m.id, 'head -c 16 /proc/kcore | wc -c'), '0');
    assert.match(await exec(s, m.id, 'mount -t tmpfs x /mnt 2>&1; echo rc=$?'), /rc=[1-9]/);
    assert.match(await exec(s, m.id, 'echo 1 > /proc/sysrq-trigger 2>&1; echo rc=$?'), /rc=[1-9]/);
    assert.match(await exec(s, m.id, 'mkdir /sys/hangar-test 2>&1; echo rc=$?'), /rc=[1-9]/);
    assert.match(await exec(s, m.id, 'grep " /sys " /proc/mounts'), /\bro\b/);
    assert.match(await exec(s, m.id, 'mkdir /sys/fs/cgroup/memory/hangar-test 2>&1; echo rc=$?'), /rc=[1-9]/);
    assert.equal(await exec(s, m.id, 'hostname'), m.spec.hostname);
  });

  s.test('host processes are invisible and the network is loopback only', async (t) => {
    const m = await s.start(t, { args: ['sleep', '1000'] });
    // init, the app, and the exec'd shell with its pipeline: nothing of the host's.
    const ps = await exec(s, m.id, 'ps -o pid,args');
    const lines = ps.split('\n').slice(1);
    assert.ok(lines.length <= 6, `machine sees:\n${ps}`);
    assert.match(lines[0]!, /^\s*1 \/\.hangar\/init -- sleep 1000$/);
    const links = await exec(s, m.id, 'ls /sys/class/net');
    assert.deepEqual(links.split(/\s+/), ['lo']);
  });

  s.test('a non-root machine user holds no effective capabilities', async (t) => {
    const m = await s.start(t, { args: ['sh', '-c', 'grep -E "^(CapEff|CapBnd)" /proc/self/status; id -u; sleep 1000'], uid: 1000, gid: 1000 });
    await until('status in log', () => m.log().includes('1000'));
    assert.match(m.log(), /^CapEff:\s+0000000000000000$/m);
    assert.match(m.log(), new RegExp(`^CapBnd:\\s+${DEFAULT_CAP_MASK}$`, 'm'));
  });
}

async function exec(s: Suite, id: string, script: string): Promise<string> {
  const res = await s.driver().exec(id, { command: ['sh', '-c', script], timeoutMs: 10_000 });
  return res.stdout.toString().trim();
}
