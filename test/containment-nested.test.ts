import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import koffi from 'koffi';
import { Hangar, type Machine } from '../src/sdk/index.ts';
import { ALWAYS_REFUSED_SYSCALLS } from '../src/runtime/seccomp-harden.ts';
import { DEFAULT_PIDS_LIMIT } from '../src/runtime/oci-spec.ts';
import { HANGAR, withDaemon, type TestDaemon } from './helpers/daemon.ts';

// Nested namespaces are an app's opt-in (nested_namespaces). A machine of such an app may make user,
// mount and other namespaces of its own, as rootless container tools do; from in there it tries
// what a hostile workload would against the host's cgroups, sysctls and keyring
// (test/fixtures/nested-escape.c), and the calls no namespace confines stay refused
// (test/fixtures/syscall-probe.c). Both probes are built here and run inside machines.

const PLAIN = 'plain';
const NESTED = 'nested';
let d: TestDaemon & { close(): Promise<void> };
let hangar: Hangar;
let work: string;
let escapeProbe: Buffer;
let syscallProbe: Buffer;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'hangar-test-nested-'));
  const fixtures = resolve(import.meta.dirname, 'fixtures');
  writeFileSync(join(work, 'refused.h'), ALWAYS_REFUSED_SYSCALLS.map((name) => `#ifdef SYS_${name}\nREFUSED(${name})\n#endif\n`).join(''));
  execFileSync('gcc', ['-static', '-O1', '-I', work, '-o', join(work, 'syscall-probe'), join(fixtures, 'syscall-probe.c')]);
  execFileSync('gcc', ['-static', '-O1', '-o', join(work, 'nested-escape'), join(fixtures, 'nested-escape.c')]);
  [syscallProbe, escapeProbe] = await Promise.all([readFile(join(work, 'syscall-probe')), readFile(join(work, 'nested-escape'))]);
  d = await withDaemon();
  hangar = new Hangar({ baseUrl: d.url, token: d.token });
  await hangar.apps.create(PLAIN);
  await hangar.apps.create(NESTED, { settings: { nested_namespaces: true } });
});
after(async () => {
  await d?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

const busybox = (app: string) => hangar.machines.create(app, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });

async function sh(m: Machine, script: string): Promise<{ code: number; out: string }> {
  const r = await d.client.machines.exec(m.app, m.id, ['sh', '-c', script]);
  return { code: r.exit_code, out: r.stdout + r.stderr };
}

async function runProbe(m: Machine, probe: Buffer, args: string[] = []): Promise<Map<string, string>> {
  await m.files.write('/probe', probe, { mode: 0o755 });
  const r = await d.client.machines.exec(m.app, m.id, ['/probe', ...args]);
  assert.equal(r.exit_code, 0, r.stdout + r.stderr);
  return new Map(r.stdout.trim().split('\n').map((line) => [line.slice(0, line.indexOf(' ')), line.slice(line.indexOf(' ') + 1)]));
}

const NESTED_MOUNT = "mkdir -p /mnt && unshare -U -r -m sh -c 'mount -t tmpfs x /mnt && echo ok'";

describe('nested namespaces are an opt-in of the app', () => {
  it('a machine of a default app cannot unshare -U -r (EPERM)', async () => {
    assert.equal((await hangar.apps.get(PLAIN)).nested_namespaces, false, 'off by default');
    const r = await sh(await busybox(PLAIN), 'unshare -U -r true');
    assert.notEqual(r.code, 0);
    assert.match(r.out, /Operation not permitted/);
  });

  it('a machine of an opted-in app makes a user and mount namespace and mounts a tmpfs in it', async () => {
    assert.equal((await hangar.apps.get(NESTED)).nested_namespaces, true);
    const m = await busybox(NESTED);
    const r = await sh(m, NESTED_MOUNT);
    assert.equal(r.out, 'ok\n', `exit ${r.code}`);
    const own = await sh(m, 'mkdir -p /mnt && mount -t tmpfs x /mnt');
    assert.notEqual(own.code, 0, `its own mount namespace stays as it was set up: ${own.out}`);
  });

  it("the setting applies at a machine's next start or update, from the API and the CLI", async () => {
    const app = 'later';
    await hangar.apps.create(app);
    const m = await busybox(app);
    assert.notEqual((await sh(m, NESTED_MOUNT)).code, 0);

    assert.equal((await hangar.apps.update(app, { nested_namespaces: true })).nested_namespaces, true);
    assert.notEqual((await sh(m, NESTED_MOUNT)).code, 0, 'a running machine keeps what it started with');
    await m.stop();
    await m.wait('stopped');
    await m.start();
    await m.wait('started');
    assert.equal((await sh(m, NESTED_MOUNT)).out, 'ok\n', 'allowed after a start');

    const cli = spawnSync(HANGAR, ['apps', 'update', app, '--no-nested-namespaces', '--json'], { encoding: 'utf8', env: { ...process.env, HANGAR_DATA_DIR: d.dataDir } });
    assert.equal(cli.status, 0, cli.stderr);
    assert.equal(JSON.parse(cli.stdout).nested_namespaces, false);
    await m.update({ config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] }, env: { UPDATED: '1' } } });
    await m.wait('started');
    assert.notEqual((await sh(m, NESTED_MOUNT)).code, 0, 'refused again after an update');
  });
});

describe('from namespaces of its own, an opted-in machine still cannot touch the host', () => {
  const libc = koffi.load('libc.so.6');
  const syscall = libc.func('long syscall(long number, ...)');
  const KEY_SPEC_USER_KEYRING = -4;
  const SYS_ADD_KEY = 248;
  const SYS_KEYCTL = 250;
  const KEYCTL_UNLINK = 9;
  const KEYCTL_READ = 11;
  const secret = `hangar-test-${randomBytes(8).toString('hex')}`;
  const knobs = ['/proc/sys/kernel/panic', '/proc/sys/kernel/core_pattern'];
  let key: number;
  let m: Machine;
  let seen: Map<string, string>;
  let knobsBefore: string[];

  before(async () => {
    key = syscall(SYS_ADD_KEY, 'str', 'user', 'str', secret, 'str', secret, 'long', secret.length, 'long', KEY_SPEC_USER_KEYRING);
    assert.ok(key > 0, 'the test could add a host key');
    knobsBefore = knobs.map((k) => readFileSync(k, 'utf8'));
    m = await busybox(NESTED);
    seen = await runProbe(m, escapeProbe, [secret]);
    assert.equal(seen.get('unshare'), 'ok', 'the probe made its user, mount and cgroup namespaces');
    assert.equal(seen.get('uid_map'), 'ok');
    assert.equal(seen.get('tmpfs'), 'ok', 'and can mount in them');
  });
  after(() => {
    if (key > 0) syscall(SYS_KEYCTL, 'long', KEYCTL_UNLINK, 'long', key, 'long', KEY_SPEC_USER_KEYRING);
  });

  it('a cgroup2 mounted inside is rooted at the machine\'s own group, and none of it is writable', () => {
    // The machine has a cgroup namespace of its own, so a new one made inside starts at its group.
    if (seen.get('cgroup2') !== 'ok') return assert.match(seen.get('cgroup2')!, /EPERM|EACCES/);
    assert.equal(seen.get('cgroup2_dirs'), '-', 'no other group shows: not the host root, not /hangar');
    assert.equal(seen.get('cgroup2_writable'), '-', 'no file of it opens for writing');
    assert.notEqual(seen.get('cgroup2_mkdir'), 'ok', 'no group can be made in it');
  });

  it('cgroup v1 hierarchies mounted inside are rooted at the machine\'s group too', () => {
    for (const name of ['cgroup1_pids', 'cgroup1_memory']) {
      if (seen.get(name) !== 'ok') {
        assert.match(seen.get(name)!, /EPERM|EACCES|ENOENT|EBUSY/, name);
        continue;
      }
      assert.equal(seen.get(`${name}_dirs`), '-', `${name}: no other group shows`);
      assert.equal(seen.get(`${name}_writable`), '-', `${name}: no file of it opens for writing (release_agent included)`);
      assert.notEqual(seen.get(`${name}_mkdir`), 'ok', `${name}: no group can be made in it`);
    }
    if (seen.get('cgroup1_pids') === 'ok') assert.equal(seen.get('cgroup1_pids_pids_max'), String(DEFAULT_PIDS_LIMIT), "its root holds the machine's own pids limit");
  });

  it("nothing was made in the machine's groups on the host", () => {
    const groups = ['/sys/fs/cgroup/unified', '/sys/fs/cgroup/pids', '/sys/fs/cgroup/memory', '/sys/fs/cgroup'].map((root) => join(root, 'hangar', m.id)).filter((g) => existsSync(g));
    assert.ok(groups.length > 0, 'the machine has host groups to look at');
    for (const group of groups) assert.equal(existsSync(join(group, 'hangar-escape')), false, group);
  });

  it('/proc/sys stays read-only for host-wide knobs', () => {
    assert.notEqual(seen.get('procsys_remount_rw'), 'ok', 'it cannot be remounted read-write');
    assert.notEqual(seen.get('procsys_umount'), 'ok', 'it cannot be unmounted to uncover what is below');
    for (const knob of ['panic', 'core_pattern']) {
      assert.equal(seen.get(`procsys_read_${knob}`), 'ok', `${knob} is readable`);
      assert.notEqual(seen.get(`procsys_write_${knob}`), 'ok', `${knob} cannot be written`);
    }
    assert.deepEqual(knobs.map((k) => readFileSync(k, 'utf8')), knobsBefore, 'the host values are unchanged');
  });

  it("the host root's keyring stays invisible", () => {
    assert.equal(seen.get('keyctl_user'), 'EPERM', 'keyring calls stay refused');
    assert.notEqual(seen.get('proc_keys_umount'), 'ok', 'the mask over /proc/keys cannot be unmounted');
    assert.equal(seen.get('proc_keys_secret'), 'unseen');
    assert.notEqual(seen.get('proc_mount'), 'ok', 'no fresh, unmasked proc can be mounted');
    assert.notEqual(seen.get('fresh_proc_keys_secret'), 'seen');
    assert.notEqual(seen.get('sysfs_rw'), 'ok', 'no writable sysfs can be mounted');
    const buf = Buffer.alloc(64);
    const len = syscall(SYS_KEYCTL, 'long', KEYCTL_READ, 'long', key, 'void *', buf, 'long', buf.length);
    assert.equal(buf.subarray(0, Number(len)).toString(), secret, 'the host key is still there, unchanged');
  });

  describe('calls no namespace confines stay refused', () => {
    let results: Map<string, string>;
    before(async () => {
      results = await runProbe(await busybox(NESTED), syscallProbe);
    });

    it('namespaces may be made: a user namespace, and others inside it', () => {
      // The probe unshares its user namespace first, so its mount namespace is made inside it.
      for (const name of ['clone_newuser', 'unshare_user', 'unshare_mount']) assert.equal(results.get(name), 'ok', name);
      assert.equal(results.get('clone_newns'), 'EPERM', "a mount namespace owned by the machine's own user namespace needs CAP_SYS_ADMIN there, which it has not");
    });

    for (const name of ALWAYS_REFUSED_SYSCALLS) {
      it(`${name} answers EPERM`, (t) => {
        const result = results.get(`refused:${name}`);
        if (result === undefined) return t.skip(`${process.arch} has no ${name}`);
        assert.equal(result, 'EPERM');
      });
    }
  });
});
