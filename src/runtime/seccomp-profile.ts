// Turns the containers/common seccomp profile (the one Podman and Docker ship) into the OCI
// runtime-spec form crun takes, evaluating its conditional rules for this host once.
import { readFile } from 'node:fs/promises';
import { release } from 'node:os';
import { HangarError } from '../protocol/errors.ts';

export const DEFAULT_SECCOMP_PATH = '/usr/share/containers/seccomp.json';

type Arg = { index: number; value: number; valueTwo?: number; op: string };
type Conditions = { caps?: string[]; arches?: string[]; minKernel?: string };
type CommonRule = {
  names?: string[];
  name?: string;
  action: string;
  args?: Arg[] | null;
  errnoRet?: number;
  includes?: Conditions;
  excludes?: Conditions;
};
type CommonProfile = {
  defaultAction: string;
  defaultErrnoRet?: number;
  archMap?: { architecture: string; subArchitectures?: string[] }[];
  syscalls?: CommonRule[];
};

export type OciSyscall = { names: string[]; action: string; errnoRet?: number; args?: Arg[] };
export type OciSeccomp = {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures: string[];
  syscalls: OciSyscall[];
};

export type SeccompTarget = {
  /** Capabilities the process may hold (the bounding set). */
  caps: readonly string[];
  /** Go-style arch name the profile's `arches` conditions use. */
  arch: string;
  /** Kernel release, e.g. `6.18.44`. */
  kernel: string;
};

const GO_ARCH_TO_SCMP: Record<string, string> = {
  amd64: 'SCMP_ARCH_X86_64',
  arm64: 'SCMP_ARCH_AARCH64',
  s390x: 'SCMP_ARCH_S390X',
  ppc64le: 'SCMP_ARCH_PPC64LE',
};

export function nodeArchToGo(arch: string): string {
  return arch === 'x64' ? 'amd64' : arch;
}

function kernelAtLeast(kernel: string, min: string): boolean {
  const have = kernel.split(/[.-]/).map((n) => Number.parseInt(n, 10) || 0);
  const want = min.split('.').map((n) => Number.parseInt(n, 10) || 0);
  for (let i = 0; i < want.length; i++) {
    if ((have[i] ?? 0) !== want[i]) return (have[i] ?? 0) > want[i]!;
  }
  return true;
}

function applies(rule: CommonRule, target: SeccompTarget): boolean {
  const inc = rule.includes ?? {};
  const exc = rule.excludes ?? {};
  if (inc.arches?.length && !inc.arches.includes(target.arch)) return false;
  if (inc.caps?.length && !inc.caps.every((c) => target.caps.includes(c))) return false;
  if (inc.minKernel && !kernelAtLeast(target.kernel, inc.minKernel)) return false;
  if (exc.arches?.length && exc.arches.includes(target.arch)) return false;
  if (exc.caps?.length && exc.caps.some((c) => target.caps.includes(c))) return false;
  if (exc.minKernel && kernelAtLeast(target.kernel, exc.minKernel)) return false;
  return true;
}

export function convertSeccomp(profile: CommonProfile, target: SeccompTarget): OciSeccomp {
  const native = GO_ARCH_TO_SCMP[target.arch];
  const entry = profile.archMap?.find((a) => a.architecture === native);
  const architectures = entry ? [entry.architecture, ...(entry.subArchitectures ?? [])] : native ? [native] : [];
  const syscalls: OciSyscall[] = [];
  for (const rule of profile.syscalls ?? []) {
    if (!applies(rule, target)) continue;
    const names = rule.names ?? (rule.name ? [rule.name] : []);
    if (names.length === 0) continue;
    const out: OciSyscall = { names, action: rule.action };
    if (rule.errnoRet !== undefined) out.errnoRet = rule.errnoRet;
    if (rule.args?.length) out.args = rule.args.map(({ index, value, valueTwo, op }) => ({ index, value, valueTwo: valueTwo ?? 0, op }));
    syscalls.push(out);
  }
  const result: OciSeccomp = { defaultAction: profile.defaultAction, architectures, syscalls };
  if (profile.defaultErrnoRet !== undefined) result.defaultErrnoRet = profile.defaultErrnoRet;
  return result;
}

const cache = new Map<string, Promise<OciSeccomp>>();

/** The host's default profile converted for `caps` on this machine's arch and kernel; parsed once per process. */
export function loadSeccomp(caps: readonly string[], path = DEFAULT_SECCOMP_PATH): Promise<OciSeccomp> {
  const key = `${path}\0${caps.join(',')}`;
  let loaded = cache.get(key);
  if (!loaded) {
    loaded = readAndConvert(path, caps);
    cache.set(key, loaded);
    loaded.catch(() => cache.delete(key));
  }
  return loaded;
}

async function readAndConvert(path: string, caps: readonly string[]): Promise<OciSeccomp> {
  let profile: CommonProfile;
  try {
    profile = JSON.parse(await readFile(path, 'utf8')) as CommonProfile;
    if (typeof profile.defaultAction !== 'string' || !Array.isArray(profile.syscalls)) throw new Error('not a seccomp profile');
  } catch (err) {
    throw new HangarError('host_unsupported', `cannot load the seccomp profile ${path}: ${(err as Error).message}`, {
      hint: 'install the containers-common package (apt-get install containers-common), which ships /usr/share/containers/seccomp.json',
      cause: err,
    });
  }
  return convertSeccomp(profile, { caps, arch: nodeArchToGo(process.arch), kernel: release() });
}
