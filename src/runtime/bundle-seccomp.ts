// Which seccomp variant a machine runs under, and keeping its bundle on it. The bundle is written
// at create and update, but an app's nested_namespaces applies at each start: the start path reads
// the bundle's config and rewrites the filter only when the setting changed since.
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../protocol/errors.ts';
import { SECCOMP_BPF_ANNOTATION } from './seccomp-bpf.ts';
import type { SeccompVariant } from './seccomp-harden.ts';

/** Nested namespaces only for a machine in a user namespace of its own: without one, its root
 * would own the namespaces it makes as host root. */
export function seccompVariantFor(nestedNamespaces: boolean | undefined, hasUserNamespace: boolean): SeccompVariant {
  return nestedNamespaces && hasUserNamespace ? 'nested-namespaces' : 'default';
}

type BundleConfig = { annotations?: Record<string, string>; linux?: { namespaces?: Array<{ type: string }> } };

/** Puts the bundle's compiled filter on the variant `nestedNamespaces` calls for; a no-op when it is on it already. */
export async function applySeccompVariant(bundleDir: string, nestedNamespaces: boolean, bpfOf: (variant: SeccompVariant) => Promise<string>): Promise<void> {
  const path = join(bundleDir, 'config.json');
  const text = await readFile(path, 'utf8').catch((err: Error) => {
    throw new HangarError('runtime_error', `the machine's bundle cannot be read: ${err.message}`, {
      hint: 'update the machine (POST …/machines/{id} with its config) to write its bundle again',
      cause: err,
    });
  });
  const config = JSON.parse(text) as BundleConfig;
  const hasUserNamespace = config.linux?.namespaces?.some((ns) => ns.type === 'user') ?? false;
  const bpf = await bpfOf(seccompVariantFor(nestedNamespaces, hasUserNamespace));
  if (config.annotations?.[SECCOMP_BPF_ANNOTATION] === bpf) return;
  config.annotations = { ...config.annotations, [SECCOMP_BPF_ANNOTATION]: bpf };
  const tmp = `${path}.tmp`;
  await writeFile(tmp, JSON.stringify(config));
  await rename(tmp, path);
}
