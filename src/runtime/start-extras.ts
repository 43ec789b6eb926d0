// What a machine gets at each start on top of its bundle as create or update wrote it: env vars
// and read-only binds that come from its app and may change while it is stopped (its app's
// secrets' placeholders, the egress CA bundle). The start path rewrites the bundle's config only
// when they changed, and records what it added (an annotation) so that what is taken away later
// leaves the bundle as it was, a variable it replaced restored.
import { createHash } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readBundleFacts, START_EXTRAS_ANNOTATION } from './bundle-config.ts';

export type StartExtras = {
  /** Set, replacing the machine's own value. */
  env: Record<string, string>;
  /** Set only where the machine's env has no such variable. */
  envDefaults: Record<string, string>;
  /** Host files bound read-only over paths in the machine. */
  binds: Array<{ source: string; destination: string }>;
};

export const NO_EXTRAS: StartExtras = { env: {}, envDefaults: {}, binds: [] };

const ANNOTATION = START_EXTRAS_ANNOTATION;

type Mount = { destination: string; type?: string; source?: string; options?: string[] };
type BundleConfig = { annotations?: Record<string, string>; process: { env?: string[] }; mounts?: Mount[] };
/** Per variable, the value it had before (null: it had none); the binds' destinations; what was asked for, as a digest. */
type Added = { env: Record<string, string | null>; binds: string[]; digest: string };

/** Brings the bundle in `bundleDir` to `extras`; writes nothing when it is there already. */
export async function applyStartExtras(bundleDir: string, extras: StartExtras): Promise<void> {
  // Most machines have none, and had none; the others mostly have what they had: nothing to read.
  const facts = readBundleFacts(bundleDir);
  const digest = isEmpty(extras) ? '' : createHash('sha256').update(JSON.stringify(extras)).digest('hex');
  if (digest === '' ? !facts.hasStartExtras : facts.startExtrasDigest === digest) return;
  const path = join(bundleDir, 'config.json');
  const text = await readFile(path, 'utf8');
  const config = JSON.parse(text) as BundleConfig;
  const before = config.annotations?.[ANNOTATION];
  if (!before && isEmpty(extras)) return;
  const env = new Map<string, string>();
  for (const entry of config.process.env ?? []) {
    const eq = entry.indexOf('=');
    if (eq > 0) env.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  let mounts = config.mounts ?? [];
  // Undo what the last start added.
  if (before) {
    const added = JSON.parse(before) as Added;
    for (const [name, was] of Object.entries(added.env)) {
      if (was === null) env.delete(name);
      else env.set(name, was);
    }
    mounts = mounts.filter((m) => !(m.type === 'bind' && added.binds.includes(m.destination) && m.source?.startsWith(bundleDir + '/')));
  }
  const added: Added = { env: {}, binds: [], digest };
  for (const [name, value] of Object.entries(extras.envDefaults)) {
    if (env.has(name)) continue;
    added.env[name] = null;
    env.set(name, value);
  }
  for (const [name, value] of Object.entries(extras.env)) {
    if (!(name in added.env)) added.env[name] = env.get(name) ?? null;
    env.set(name, value);
  }
  for (const b of extras.binds) {
    mounts.push({ destination: b.destination, type: 'bind', source: b.source, options: ['bind', 'ro', 'nosuid', 'nodev', 'noexec'] });
    added.binds.push(b.destination);
  }
  config.process.env = [...env].map(([k, v]) => `${k}=${v}`);
  config.mounts = mounts;
  const annotations = { ...config.annotations };
  if (isEmpty(extras)) delete annotations[ANNOTATION];
  else annotations[ANNOTATION] = JSON.stringify(added);
  config.annotations = annotations;
  const next = JSON.stringify(config);
  if (next === text) return;
  const tmp = `${path}.extras.tmp`;
  await writeFile(tmp, next);
  await rename(tmp, path);
}

/** Whether the bundle's last start added extras (read once per machine after a daemon restart). */
export function hasStartExtras(bundleDir: string): boolean {
  try {
    return readBundleFacts(bundleDir).hasStartExtras;
  } catch {
    return false;
  }
}

function isEmpty(extras: StartExtras): boolean {
  return Object.keys(extras.env).length === 0 && Object.keys(extras.envDefaults).length === 0 && extras.binds.length === 0;
}
