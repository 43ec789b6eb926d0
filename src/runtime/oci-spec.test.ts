import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isHangarError } from '../protocol/errors.ts';
import { hybridCgroup2Mounts } from './crun-command.ts';
import { parseOomRecord } from './kmsg-oom.ts';
import { DEFAULT_CAPABILITIES } from './oci-defaults.ts';
import { buildOciSpec } from './oci-spec.ts';
import { convertSeccomp, loadSeccomp } from './seccomp-profile.ts';

const machine = {
  id: 'abc',
  hostname: 'h',
  rootfs: '/r',
  bundleDir: '/b',
  logPath: '/l',
  process: { args: ['app', '--flag'], env: ['A=1'], cwd: '', uid: 1000, gid: 1000 },
  limits: { cpus: 1.5, memoryMb: 64 },
};
const opts = { seccompBpf: 'AAAA', initHostPath: '/tini', hostMemoryBytes: 2 ** 30, nofileLimit: 1024 };

describe('buildOciSpec', () => {
  it('runs the app under tini with limits and a cgroup per machine', () => {
    const spec = buildOciSpec(machine, opts);
    assert.deepEqual(spec.process.args, ['/.hangar/init', '--', 'app', '--flag']);
    assert.equal(spec.process.cwd, '/');
    assert.equal(spec.process.terminal, false);
    assert.equal(spec.linux.cgroupsPath, '/hangar/abc');
    assert.deepEqual(spec.linux.resources.cpu, { quota: 150_000, period: 100_000 });
    assert.deepEqual(spec.linux.resources.memory, { limit: 64 * 2 ** 20, swap: 64 * 2 ** 20 });
    assert.equal(spec.linux.resources.pids.limit, 4096);
  });

  it('gives a non-root user only the bounding set, root all three', () => {
    assert.deepEqual(Object.keys(buildOciSpec(machine, opts).process.capabilities), ['bounding']);
    const root = buildOciSpec({ ...machine, process: { ...machine.process, uid: 0 } }, opts);
    assert.deepEqual(Object.keys(root.process.capabilities).sort(), ['bounding', 'effective', 'permitted']);
  });

  it('binds volumes nodev and nosuid, idmapped into the machine\'s range when it has one', () => {
    const volumes = [{ source: '/data/volumes/vol_a', destination: '/data' }];
    const find = (spec: ReturnType<typeof buildOciSpec>) => spec.mounts.find((m) => m.destination === '/data');
    assert.deepEqual(find(buildOciSpec({ ...machine, volumes, idRange: { base: 2 ** 28, size: 65536 } }, opts)), {
      destination: '/data', type: 'bind', source: '/data/volumes/vol_a', options: ['bind', 'rw', 'nodev', 'nosuid', 'idmap'],
    });
    assert.deepEqual(find(buildOciSpec({ ...machine, volumes }, opts))?.options, ['bind', 'rw', 'nodev', 'nosuid']);
  });

  it('refuses more memory than the host has, naming the maximum', () => {
    assert.throws(
      () => buildOciSpec({ ...machine, limits: { memoryMb: 2048 } }, opts),
      (err) => isHangarError(err, 'memory_unavailable') && /at most 1024/.test(err.hint ?? ''),
    );
  });
});

describe('seccomp conversion', () => {
  const profile = {
    defaultAction: 'SCMP_ACT_ERRNO',
    defaultErrnoRet: 38,
    archMap: [{ architecture: 'SCMP_ARCH_X86_64', subArchitectures: ['SCMP_ARCH_X86'] }],
    syscalls: [
      { names: ['read'], action: 'SCMP_ACT_ALLOW' },
      { names: ['arch_prctl'], action: 'SCMP_ACT_ALLOW', includes: { arches: ['amd64'] } },
      { names: ['s390_only'], action: 'SCMP_ACT_ALLOW', includes: { arches: ['s390x'] } },
      { names: ['bpf'], action: 'SCMP_ACT_ALLOW', includes: { caps: ['CAP_SYS_ADMIN'] } },
      { names: ['bpf'], action: 'SCMP_ACT_ERRNO', errnoRet: 1, excludes: { caps: ['CAP_SYS_ADMIN'] } },
      { names: ['future'], action: 'SCMP_ACT_ALLOW', includes: { minKernel: '7.1' } },
      { names: ['personality'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 8, op: 'SCMP_CMP_EQ' }] },
    ],
  };

  it('keeps the rules that apply to the granted caps, arch and kernel', () => {
    const out = convertSeccomp(profile, { caps: DEFAULT_CAPABILITIES, arch: 'amd64', kernel: '6.18.44-fc' });
    assert.deepEqual(out.architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86']);
    assert.equal(out.defaultErrnoRet, 38);
    assert.deepEqual(
      out.syscalls.map((r) => `${r.names[0]}:${r.action}`),
      ['read:SCMP_ACT_ALLOW', 'arch_prctl:SCMP_ACT_ALLOW', 'bpf:SCMP_ACT_ERRNO', 'personality:SCMP_ACT_ALLOW'],
    );
    assert.deepEqual(out.syscalls.at(-1)!.args, [{ index: 0, value: 8, valueTwo: 0, op: 'SCMP_CMP_EQ' }]);
    const newer = convertSeccomp(profile, { caps: ['CAP_SYS_ADMIN'], arch: 'amd64', kernel: '7.2.0' });
    assert.ok(newer.syscalls.some((r) => r.names[0] === 'future'));
    assert.ok(newer.syscalls.some((r) => r.names[0] === 'bpf' && r.action === 'SCMP_ACT_ALLOW'));
  });

  it('loads the host profile once', async () => {
    const a = await loadSeccomp(DEFAULT_CAPABILITIES);
    assert.equal(a, await loadSeccomp(DEFAULT_CAPABILITIES));
    assert.ok(a.syscalls.length > 10);
  });
});

describe('host facts parsing', () => {
  it('finds a cgroup2 mount only next to v1 controllers', () => {
    const v1 = '32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu';
    const v2 = '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw';
    assert.deepEqual(hybridCgroup2Mounts(`${v1}\n${v2}\n`), ['/sys/fs/cgroup/unified']);
    assert.deepEqual(hybridCgroup2Mounts('41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n'), []);
  });

  it('reads OOM kills from kernel log records', () => {
    const rec =
      '6,1234,1552594146,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=x,mems_allowed=0,oom_memcg=/hangar/abc,task_memcg=/hangar/abc,task=sh,pid=4485,uid=0';
    assert.deepEqual(parseOomRecord(rec), { cgroup: '/hangar/abc', atSec: 1552.594146 });
    assert.equal(parseOomRecord('6,1,2,-;something else'), undefined);
  });
});
