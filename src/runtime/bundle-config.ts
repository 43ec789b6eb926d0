// What the daemon reads back from a machine's bundle config.json, parsed once per version of the
// file. Every start reads it (for its seccomp variant) and every exec (for the machine's env,
// user and cwd); it changes only at create, update and a variant switch, each of which replaces
// the file by rename. A stat costs a fraction of reading and parsing it.
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { SECCOMP_BPF_ANNOTATION } from './seccomp-bpf.ts';

/** Where start-extras.ts records what a start added. */
export const START_EXTRAS_ANNOTATION = 'dev.hangar.start-extras';

/** The OCI process of the machine (its init), which an exec takes its defaults from. */
export type MachineProcess = { env: string[]; cwd: string; user: { uid: number; gid: number }; capabilities?: Record<string, string[]> };

export type BundleFacts = {
  process: MachineProcess;
  hasUserNamespace: boolean;
  /** sha256 of the compiled filter in the bundle's annotation (the filter itself is ~12 KB), or undefined without one. */
  seccompDigest: string | undefined;
  /** Whether the last start added env or binds to the bundle (start-extras.ts). */
  hasStartExtras: boolean;
  /** What that start was asked to add, as a digest (start-extras.ts): the same again needs no rewrite. */
  startExtrasDigest: string | undefined;
};

type RawConfig = { process: MachineProcess; annotations?: Record<string, string>; linux?: { namespaces?: Array<{ type: string }> } };

/** Enough for every machine a host runs; past it the cache starts over rather than grow with destroyed machines. */
const MAX_ENTRIES = 10_000;
const known = new Map<string, { version: string; facts: BundleFacts }>();

export function digestOf(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** The bundle's facts as its config.json says now. Throws what fs and JSON.parse throw. */
export function readBundleFacts(bundleDir: string): BundleFacts {
  const path = join(bundleDir, 'config.json');
  const st = statSync(path, { bigint: true });
  // A rename gives a new inode; a write in place a new mtime or size.
  const version = `${st.ino}:${st.mtimeNs}:${st.size}`;
  const cached = known.get(path);
  if (cached?.version === version) return cached.facts;
  const config = JSON.parse(readFileSync(path, 'utf8')) as RawConfig;
  const bpf = config.annotations?.[SECCOMP_BPF_ANNOTATION];
  const extras = config.annotations?.[START_EXTRAS_ANNOTATION];
  const facts: BundleFacts = {
    process: config.process,
    hasUserNamespace: config.linux?.namespaces?.some((ns) => ns.type === 'user') ?? false,
    seccompDigest: bpf === undefined ? undefined : digestOf(bpf),
    hasStartExtras: extras !== undefined,
    startExtrasDigest: extras === undefined ? undefined : (JSON.parse(extras) as { digest?: string }).digest,
  };
  if (known.size >= MAX_ENTRIES) known.clear();
  known.set(path, { version, facts });
  return facts;
}
