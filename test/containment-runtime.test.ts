import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import koffi from 'koffi';
import tar from 'tar-stream';
import { Hangar, type Machine } from '../src/sdk/index.ts';
import { REFUSED_SYSCALLS } from '../src/runtime/seccomp-harden.ts';
import { withDaemon, type TestDaemon } from './helpers/daemon.ts';

// A machine tried as a hostile workload would: what it runs as on the host, which system calls it
// gets, and whether it can reach the host's cgroups or kernel keyring. The syscall probe is a
// small static program (test/fixtures/syscall-probe.c) built here and run inside the machine.

const APP = 'hostile';
let d: TestDaemon & { close(): Promise<void> };
let hangar: Hangar;
let work: string;
let probe: Buffer;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'hangar-test-probe-'));
  // Every call the filter refuses that this architecture has (the headers say which).
  writeFileSync(join(work, 'refused.h'), REFUSED_SYSCALLS.map((name) => `#ifdef SYS_${name}\nREFUSED(${name})\n#endif\n`).join(''));
  execFileSync('gcc', ['-static', '-O1', '-I', work, '-o', join(work, 'probe'), resolve(import.meta.dirname, 'fixtures/syscall-probe.c')]);
  probe = await readFile(join(work, 'probe'));
  d = await withDaemon();
  hangar = new Hangar({ baseUrl: d.url, token: d.token });
  await hangar.apps.create(APP);
});
after(async () => {
  await d?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

const busybox = () => hangar.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });

async function sh(m: Machine, script: string): Promise<{ code: number; out: string }> {
  const r = await d.client.machines.exec(APP, m.id, ['sh', '-c', script]);
  return { code: r.exit_code, out: r.stdout + r.stderr };
}

async function runProbe(m: Machine): Promise<Map<string, string>> {
  await m.files.write('/probe', probe, { mode: 0o755 });
  const r = await d.client.machines.exec(APP, m.id, ['/probe']);
  assert.equal(r.exit_code, 0, r.stderr);
  return new Map(r.stdout.trim().split('\n').map((line) => line.split(' ') as [string, string]));
}

function hostPidOf(m: Machine): number {
  const bundle = join(d.dataDir, 'machines', m.id, 'bundle');
  return Number(readFileSync(join(bundle, 'pid'), 'utf8'));
}

function hostUidOf(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('Uid:'))!;
  return Number(line.split(/\s+/)[1]);
}

describe('a machine runs as an unprivileged host id', () => {
  it('its root is a host uid of its own range, not 0, and files it makes are owned by that range', async () => {
    const [a, b] = await Promise.all([busybox(), busybox()]);
    const uidA = hostUidOf(hostPidOf(a));
    const uidB = hostUidOf(hostPidOf(b));
    assert.ok(uidA >= 2 ** 28 && uidB >= 2 ** 28, `machine roots are high host ids (${uidA}, ${uidB})`);
    assert.notEqual(Math.floor(uidA / 65536), Math.floor(uidB / 65536), 'each machine has a range of its own');

    const inside = await sh(a, 'id -u; touch /made-inside; ls -ln /made-inside /bin/busybox');
    assert.match(inside.out, /^0\n/, 'root inside');
    assert.match(inside.out, /\s0\s+0\s.*\/made-inside/, 'its own file shows as root inside');
    assert.match(inside.out, /\s0\s+0\s.*\/bin\/busybox/, "the image's files show as root inside");
    const upper = statSync(join(d.dataDir, 'machines', a.id, 'disk', 'upper', 'made-inside'));
    assert.equal(upper.uid, uidA, 'on the host, the file belongs to the machine range');
    assert.equal(statSync(join(d.dataDir, 'images')).uid, 0, 'shared image layers stay root-owned on disk');
  });

  it("what the daemon writes into a machine belongs to the machine's root, and archives show the machine's ids", async () => {
    const m = await busybox();
    await m.files.write('/etc/written/by-api.conf', 'x=1\n', { mode: 0o600 });
    await m.update({ config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] }, files: [{ guest_path: '/etc/by-config.conf', raw_value: Buffer.from('y=2\n').toString('base64') }] } });
    const r = await sh(m, 'cat /etc/written/by-api.conf /etc/by-config.conf && echo more >> /etc/written/by-api.conf && ls -lnd /etc/written /etc/written/by-api.conf /etc/by-config.conf && touch /tmp/robot-file && chown 1234:1234 /tmp/robot-file');
    assert.equal(r.code, 0, r.out);
    for (const path of ['/etc/written', '/etc/written/by-api.conf', '/etc/by-config.conf']) {
      assert.match(r.out, new RegExp(`\\s0\\s+0\\s.*${path}$`, 'm'), `${path} is root's inside`);
    }
    const archive = Buffer.from(await new Response(await m.files.downloadTar('/tmp')).arrayBuffer());
    const owners = new Map<string, number>();
    const extract = tar.extract();
    extract.on('entry', (h, stream, next) => {
      owners.set(h.name, h.uid ?? -1);
      stream.resume();
      stream.on('end', next);
    });
    await new Promise<void>((resolve, reject) => extract.on('finish', () => resolve()).on('error', reject).end(archive));
    assert.equal(owners.get('./robot-file'), 1234, `the archive gives the machine's uid: ${JSON.stringify([...owners])}`);
  });

  it('keeps its files and range across stop and start', async () => {
    const m = await busybox();
    const uid = hostUidOf(hostPidOf(m));
    assert.equal((await sh(m, 'echo kept > /root/note && chmod 600 /root/note')).code, 0);
    await m.stop();
    await m.wait('stopped');
    await m.start();
    await m.wait('started');
    assert.equal(hostUidOf(hostPidOf(m)), uid);
    assert.equal((await sh(m, 'cat /root/note')).out, 'kept\n');
  });
});

describe('seccomp refuses what a container without CAP_SYS_ADMIN may not do', () => {
  let results: Map<string, string>;
  before(async () => {
    results = await runProbe(await busybox());
  });

  it('refuses new namespaces, mounts, the keyring, bpf and perf events', () => {
    const refused = [
      'unshare_user', 'unshare_mount', 'unshare_cgroup', 'setns', 'mount_tmpfs',
      'mount_cgroup2', 'umount2', 'pivot_root', 'fsopen', 'open_tree', 'move_mount', 'mount_setattr',
      'keyctl_user', 'keyctl_session', 'add_key', 'request_key', 'bpf', 'perf_event_open', 'sethostname', 'syslog',
      'reboot', 'userfaultfd',
    ];
    for (const name of refused) assert.equal(results.get(name), 'EPERM', `${name} is refused with EPERM (got ${results.get(name)})`);
    // clone's rule allows it without namespace flags; with them it falls to the default (ENOSYS).
    for (const name of ['clone_newuser', 'clone_newns']) assert.ok(['EPERM', 'ENOSYS'].includes(results.get(name)!), `${name}: ${results.get(name)}`);
    assert.equal(results.get('clone3'), 'ENOSYS', 'clone3 says ENOSYS, so libc falls back to clone');
    assert.notEqual(results.get('mknod_char'), 'ok', 'device nodes cannot be made');
  });

  it('still lets programs fork and run', () => {
    assert.equal(results.get('fork'), 'ok');
  });

  describe('each call on the refused list answers EPERM', () => {
    for (const name of REFUSED_SYSCALLS) {
      it(name, (t) => {
        const result = results.get(`refused:${name}`);
        if (result === undefined) return t.skip(`${process.arch} has no ${name}`);
        assert.equal(result, 'EPERM');
      });
    }
  });
});

describe("the host's cgroups and keyring are out of reach", () => {
  const libc = koffi.load('libc.so.6');
  const syscall = libc.func('long syscall(long number, ...)');
  const KEY_SPEC_USER_KEYRING = -4;
  const SYS_ADD_KEY = 248;
  const SYS_KEYCTL = 250;
  const KEYCTL_UNLINK = 9;
  const KEYCTL_READ = 11;

  it('a machine lands in a cgroup v2 group of its own, and a host process in another group survives it', async (t) => {
    const v2 = '/sys/fs/cgroup/unified';
    let victim: ChildProcess | undefined;
    const group = join(v2, `hangar-test-victim-${randomBytes(4).toString('hex')}`);
    t.after(async () => {
      if (victim && victim.exitCode === null && victim.signalCode === null) {
        const exited = once(victim, 'exit');
        victim.kill('SIGKILL');
        await exited;
      }
      // Busy until the kernel has the victim out of it; an empty group left behind slows every cgroup operation on the host.
      for (let i = 0; i < 50 && existsSync(group); i++) {
        try {
          rmdirSync(group);
        } catch {
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    });
    const hybrid = readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${v2} `);
    if (hybrid) {
      mkdirSync(group);
      victim = spawn('sleep', ['600'], { stdio: 'ignore' });
      writeFileSync(join(group, 'cgroup.procs'), String(victim.pid));
    }
    const m = await busybox();
    const cgroups = readFileSync(`/proc/${hostPidOf(m)}/cgroup`, 'utf8');
    assert.match(cgroups, new RegExp(`^0::/hangar/${m.id}$`, 'm'), 'its v2 group is its own, not the host root');
    // The attack: a cgroup2 mounted from inside, then cgroup.kill on a host group.
    const attack = await sh(m, 'mkdir -p /mnt/cg && mount -t cgroup2 none /mnt/cg && ls /mnt/cg');
    assert.notEqual(attack.code, 0, `mounting cgroup2 is refused: ${attack.out}`);
    assert.match((await sh(m, 'cat /proc/self/cgroup')).out, /^0::\/$/m, 'inside, its own group is its root');
    if (victim) assert.equal(victim.exitCode, null, 'the host process is alive');
  });

  it("cannot read or unlink host root's user keyring", async (t) => {
    const secret = `hangar-test-${randomBytes(8).toString('hex')}`;
    const key = syscall(SYS_ADD_KEY, 'str', 'user', 'str', secret, 'str', secret, 'long', secret.length, 'long', KEY_SPEC_USER_KEYRING);
    assert.ok(key > 0, 'the test could add a host key');
    t.after(() => syscall(SYS_KEYCTL, 'long', KEYCTL_UNLINK, 'long', key, 'long', KEY_SPEC_USER_KEYRING));
    const m = await busybox();
    const results = await runProbe(m);
    assert.equal(results.get('keyctl_user'), 'EPERM');
    assert.equal(results.get('keyctl_session'), 'EPERM');
    const procKeys = await sh(m, 'cat /proc/keys 2>&1; cat /proc/key-users 2>&1');
    assert.ok(!procKeys.out.includes(secret), 'the key is not listed inside');
    const buf = Buffer.alloc(64);
    const len = syscall(SYS_KEYCTL, 'long', KEYCTL_READ, 'long', key, 'void *', buf, 'long', buf.length);
    assert.equal(buf.subarray(0, Number(len)).toString(), secret, 'the host key is still there, unchanged');
  });
});
