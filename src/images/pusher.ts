import type { CommitProgress } from '../protocol/commit.ts';
import type { ContentStore } from './content-store.ts';
import type { ParsedRef } from './image-ref.ts';
import { MEDIA, parseManifest } from './manifest.ts';
import type { RegistryClient } from './registry-client.ts';

// Sends a stored image to its registry: every blob the repository lacks (config, layers), one at
// a time from the content store, then the manifest byte for byte, so its digest is the same there.

export type PushProgress = Extract<CommitProgress, { phase: 'push' | 'manifest' }>;

export async function pushImage(
  deps: { registry: RegistryClient; content: ContentStore },
  ref: ParsedRef,
  manifestDigest: string,
  options: { onProgress?: (p: PushProgress) => void; signal?: AbortSignal } = {},
): Promise<void> {
  const { registry, content } = deps;
  const { onProgress, signal } = options;
  const bytes = await content.readBytes(manifestDigest);
  const parsed = parseManifest(bytes, null, ref.name);
  if (parsed.kind !== 'manifest') throw new Error(`${ref.name} is stored as an index`);
  const blobs = [parsed.manifest.config, ...parsed.manifest.layers];
  for (const [i, blob] of blobs.entries()) {
    signal?.throwIfAborted();
    const report = (doneBytes: number, skipped?: boolean) =>
      onProgress?.({ phase: 'push', digest: blob.digest, doneBytes, totalBytes: blob.size, blobs: blobs.length, blobIndex: i + 1, ...(skipped ? { skipped } : {}) });
    if (await registry.hasBlob(ref, blob.digest, signal)) {
      report(blob.size, true);
      continue;
    }
    report(0);
    await registry.uploadBlob(ref, blob.digest, { path: content.blobPath(blob.digest), size: await content.size(blob.digest) }, report, signal);
  }
  const mediaType = (JSON.parse(bytes.toString('utf8')) as { mediaType?: string }).mediaType ?? MEDIA.ociManifest;
  onProgress?.({ phase: 'manifest', ref: ref.name });
  await registry.putManifest(ref, ref.tag ?? manifestDigest, bytes, mediaType, signal);
}
