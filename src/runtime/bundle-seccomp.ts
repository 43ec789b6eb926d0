// Which seccomp variant a machine runs under, and keeping its bundle on it. The bundle is written
// at create and update, but an app's nested_namespaces applies at each start: the start path reads
// the bundle's config and rewrites the filter only when the setting changed since.
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../protocol/errors.ts';
import { digestOf, readBundleFacts, type BundleFacts } from './bundle-config.ts';
import { SECCOMP_BPF_ANNOTATION } from './seccomp-bpf.ts';
import type { SeccompVariant } from './seccomp-harden.ts';

/** Nested namespaces only for a machine in a user namespace of its own: without one, its root
 * would own the namespaces it makes as host root. */
export function seccompVariantFor(nestedNamespaces: boolean | undefined, hasUserNamespace: boolean): SeccompVariant {
  return nestedNamespaces && hasUserNamespace ? 'nested-namespaces' : 'default';
}

type BundleConfig = { annotations?: Record<string, string> };

/** Puts the bundle's compiled filter on the variant `nestedNamespaces` calls for; a no-op when it is on it already. */
export async function applySeccompVariant(bundleDir: string, nestedNamespaces: boolean, bpfOf: (variant: SeccompVariant) => Promise<string>): Promise<void> {
  const unreadable = (err: Error) =>
    new HangarError('runtime_error', `the machine's bundle cannot be read: ${err.message}`, {
      hint: 'update the machine (POST …/machines/{id} with its config) to write its bundle again',
      cause: err,
    });
  let facts: BundleFacts;
  try {
    facts = readBundleFacts(bundleDir);
  } catch (err) {
    throw unreadable(err as Error);
  }
  const bpf = await bpfOf(seccompVariantFor(nestedNamespaces, facts.hasUserNamespace));
  if (facts.seccompDigest === digestOf(bpf)) return;
  const path = join(bundleDir, 'config.json');
  const config = JSON.parse(await readFile(path, 'utf8').catch((err: Error) => Promise.reject(unreadable(err)))) as BundleConfig;
  config.annotations = { ...config.annotations, [SECCOMP_BPF_ANNOTATION]: bpf };
  const tmp = `${path}.tmp`;
  await writeFile(tmp, JSON.stringify(config));
  await rename(tmp, path);
}
