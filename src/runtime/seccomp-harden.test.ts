import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { applySeccompVariant, seccompVariantFor } from './bundle-seccomp.ts';
import { SECCOMP_BPF_ANNOTATION } from './seccomp-bpf.ts';
import { ALWAYS_REFUSED_SYSCALLS, NAMESPACE_SYSCALLS, REFUSED_SYSCALLS, hardenSeccomp, type SeccompVariant } from './seccomp-harden.ts';
import type { OciSeccomp } from './seccomp-profile.ts';

// Podman's shape: one big allow list that includes the namespace, mount and keyring calls.
const podmanLike: OciSeccomp = {
  defaultAction: 'SCMP_ACT_ERRNO',
  architectures: ['SCMP_ARCH_X86_64'],
  syscalls: [{ names: ['read', 'clone', 'clone3', 'unshare', 'mount', 'keyctl', 'bpf'], action: 'SCMP_ACT_ALLOW' }],
};

function actionsFor(profile: OciSeccomp, name: string): string[] {
  return profile.syscalls.filter((r) => r.names.includes(name)).map((r) => `${r.action}${r.errnoRet ? `:${r.errnoRet}` : ''}${r.args ? ':args' : ''}`);
}

describe('hardenSeccomp variants', () => {
  it('the default variant refuses namespaces and mounts, and clone only with namespace flags', () => {
    const out = hardenSeccomp(podmanLike);
    for (const name of REFUSED_SYSCALLS) assert.deepEqual(actionsFor(out, name), ['SCMP_ACT_ERRNO:1'], name);
    assert.deepEqual(actionsFor(out, 'clone'), ['SCMP_ACT_ALLOW:args']);
    assert.deepEqual(actionsFor(out, 'clone3'), ['SCMP_ACT_ERRNO:38']);
    assert.deepEqual(actionsFor(out, 'read'), ['SCMP_ACT_ALLOW']);
  });

  it('the nested-namespaces variant allows them, and still refuses what no namespace confines', () => {
    const out = hardenSeccomp(podmanLike, 'nested-namespaces');
    for (const name of [...NAMESPACE_SYSCALLS, 'clone', 'clone3']) assert.deepEqual(actionsFor(out, name), ['SCMP_ACT_ALLOW'], name);
    for (const name of ALWAYS_REFUSED_SYSCALLS) assert.deepEqual(actionsFor(out, name), ['SCMP_ACT_ERRNO:1'], name);
  });

  it('nested namespaces only for a machine with a user namespace of its own', () => {
    assert.equal(seccompVariantFor(true, true), 'nested-namespaces');
    assert.equal(seccompVariantFor(true, false), 'default');
    assert.equal(seccompVariantFor(false, true), 'default');
    assert.equal(seccompVariantFor(undefined, true), 'default');
  });
});

describe('applySeccompVariant', () => {
  const bpfOf = async (variant: SeccompVariant) => `bpf-of-${variant}`;

  async function bundleWith(namespaces: string[]): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'hangar-test-bundle-'));
    const config = { annotations: { [SECCOMP_BPF_ANNOTATION]: 'bpf-of-default', other: 'kept' }, linux: { namespaces: namespaces.map((type) => ({ type })) } };
    await writeFile(join(dir, 'config.json'), JSON.stringify(config));
    return dir;
  }
  const annotations = async (dir: string) => (JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as { annotations: Record<string, string> }).annotations;

  it("puts a bundle on the variant its app now asks for, and back", async (t) => {
    const dir = await bundleWith(['user', 'mount', 'pid']);
    t.after(() => rm(dir, { recursive: true, force: true }));
    await applySeccompVariant(dir, true, bpfOf);
    assert.deepEqual(await annotations(dir), { [SECCOMP_BPF_ANNOTATION]: 'bpf-of-nested-namespaces', other: 'kept' });
    await applySeccompVariant(dir, false, bpfOf);
    assert.equal((await annotations(dir))[SECCOMP_BPF_ANNOTATION], 'bpf-of-default');
  });

  it('keeps a machine without a user namespace on the default variant', async (t) => {
    const dir = await bundleWith(['mount', 'pid']);
    t.after(() => rm(dir, { recursive: true, force: true }));
    await applySeccompVariant(dir, true, bpfOf);
    assert.equal((await annotations(dir))[SECCOMP_BPF_ANNOTATION], 'bpf-of-default');
  });
});
