// crun 1.8 compiles a machine's seccomp profile to BPF on every start (~20 ms here: Debian's
// build has no cache for it), but takes a compiled filter in the `run.oci.seccomp_bpf_data`
// annotation. crun is the compiler: a throwaway container is created (never started) with the
// profile, and the BPF crun leaves in its state dir is kept, once per profile and crun version.
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../protocol/errors.ts';
import { crunVersion } from './crun-command.ts';
import type { Launcher } from './launcher-client.ts';
import type { OciSeccomp } from './seccomp-profile.ts';

export const SECCOMP_BPF_ANNOTATION = 'run.oci.seccomp_bpf_data';

const compiled = new Map<string, Promise<string>>();

/** The profile as crun compiles it, base64-encoded for the annotation; cached in memory and in `cacheDir`. */
export function compiledSeccomp(launcher: Launcher, stateRoot: string, profile: OciSeccomp, cacheDir: string): Promise<string> {
  const key = createHash('sha256').update(JSON.stringify(profile)).digest('hex');
  let bpf = compiled.get(key);
  if (!bpf) {
    bpf = loadOrCompile(launcher, stateRoot, profile, cacheDir, key);
    compiled.set(key, bpf);
    bpf.catch(() => compiled.delete(key));
  }
  return bpf;
}

async function loadOrCompile(launcher: Launcher, stateRoot: string, profile: OciSeccomp, cacheDir: string, profileKey: string): Promise<string> {
  const version = await crunVersion();
  const key = createHash('sha256').update(profileKey).update(version).digest('hex').slice(0, 32);
  const cached = join(cacheDir, `${key}.bpf`);
  const hit = await readFile(cached).catch(() => undefined);
  if (hit && hit.length > 0) return hit.toString('base64');
  const bpf = await compile(launcher, stateRoot, profile, cacheDir);
  const tmp = `${cached}.${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, bpf);
  await rename(tmp, cached);
  return bpf.toString('base64');
}

async function compile(launcher: Launcher, stateRoot: string, profile: OciSeccomp, cacheDir: string): Promise<Buffer> {
  const id = `hangar-seccomp-${randomBytes(6).toString('hex')}`;
  const bundle = join(cacheDir, id);
  const rootfs = join(bundle, 'rootfs');
  await mkdir(join(rootfs, 'dev'), { recursive: true });
  // crun checks that the process's executable exists before it creates anything.
  await writeFile(join(rootfs, 'x'), '');
  await chmod(join(rootfs, 'x'), 0o755);
  const config = {
    ociVersion: '1.0.2',
    process: { args: ['/x'], cwd: '/', user: { uid: 0, gid: 0 }, terminal: false, noNewPrivileges: true, env: [] },
    root: { path: rootfs, readonly: false },
    mounts: [],
    linux: { namespaces: [{ type: 'mount' }, { type: 'pid' }, { type: 'network' }, { type: 'ipc' }, { type: 'uts' }], seccomp: profile },
  };
  await writeFile(join(bundle, 'config.json'), JSON.stringify(config));
  try {
    const created = await launcher.run({ op: 'create', id, bundleDir: bundle });
    if (created.code !== 0) throw new Error(created.stderr.trim() || `crun create exited with ${created.code}`);
    return await readFile(join(stateRoot, id, 'seccomp.bpf'));
  } catch (err) {
    throw new HangarError('host_unsupported', `crun could not compile the machines' seccomp profile: ${(err as Error).message}`, {
      hint: 'check that crun is built with seccomp support (`crun --version` lists +SECCOMP)',
      cause: err,
    });
  } finally {
    await launcher.run({ op: 'delete', id }).catch(() => undefined);
    await rm(bundle, { recursive: true, force: true });
  }
}
