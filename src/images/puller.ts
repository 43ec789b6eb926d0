import { HangarError, isHangarError } from '../protocol/errors.ts';
import type { ContentStore } from './content-store.ts';
import type { ParsedRef } from './image-ref.ts';
import type { PullOptions } from './image-service.ts';
import type { LayerStore } from './layer-store.ts';
import { parseImageConfig, parseManifest, pickPlatform, type Descriptor } from './manifest.ts';
import type { RegistryClient } from './registry-client.ts';

// Fetches an image into the content store: manifest (through an index if there is one), config,
// then every layer not already present, downloaded and unpacked a few at a time.

const PARALLEL_LAYERS = 3;
const DOWNLOAD_ATTEMPTS = 3;

export type PullDeps = {
  registry: RegistryClient;
  content: ContentStore;
  layers: LayerStore;
  /** Downloads under way, by digest: two pulls sharing a layer must not write one ingest file. */
  downloads: Map<string, Promise<void>>;
};

export async function pullImage(deps: PullDeps, ref: ParsedRef, options: PullOptions, pin: (digest: string) => void): Promise<string> {
  const { registry, content } = deps;
  const { onProgress, signal } = options;
  onProgress?.({ phase: 'resolve', ref: ref.name });

  let fetched = await registry.getManifest(ref, ref.digest ?? (ref.tag as string), signal);
  let parsed = parseManifest(fetched.bytes, fetched.contentType, ref.name);
  if (parsed.kind === 'index') {
    const chosen = pickPlatform(parsed.manifests, ref.name);
    fetched = await registry.getManifest(ref, chosen.digest, signal);
    parsed = parseManifest(fetched.bytes, fetched.contentType, ref.name);
    if (parsed.kind === 'index') {
      throw new HangarError('unsupported_image', `${ref.name}: an image index points at another index`, {
        hint: 'reference a single-platform manifest by digest',
      });
    }
  }
  const manifest = parsed.manifest;
  pin(fetched.digest);
  pin(manifest.config.digest);
  for (const layer of manifest.layers) pin(layer.digest);

  if (!(await content.has(manifest.config.digest))) {
    const bytes = await registry.getBlobBytes(ref, manifest.config.digest, manifest.config.size, signal);
    await content.writeBytes(bytes, manifest.config.digest);
  }
  parseImageConfig(await content.readBytes(manifest.config.digest), ref.name);

  // Counted up front so progress can say "n layers" from its first line, whichever layer reports first.
  const toFetch: Descriptor[] = [];
  for (const layer of manifest.layers) if (!deps.layers.has(layer.digest) && !(await content.has(layer.digest))) toFetch.push(layer);
  const plan = { layers: toFetch.length, totalBytes: toFetch.reduce((n, l) => n + l.size, 0) };
  const queue = [...manifest.layers];
  const worker = async () => {
    for (let layer = queue.shift(); layer; layer = queue.shift()) {
      signal?.throwIfAborted();
      if (deps.layers.has(layer.digest)) continue;
      if (!(await content.has(layer.digest))) await sharedDownload(deps, ref, layer, options, plan);
      onProgress?.({ phase: 'unpack', digest: layer.digest });
      await deps.layers.ensure(layer.digest, content.blobPath(layer.digest), signal);
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL_LAYERS, queue.length) }, worker));

  // Stored last: a manifest in the store means everything it names is present.
  await content.writeBytes(fetched.bytes, fetched.digest);
  return fetched.digest;
}

type DownloadPlan = { layers: number; totalBytes: number };

async function sharedDownload(deps: PullDeps, ref: ParsedRef, layer: Descriptor, options: PullOptions, plan: DownloadPlan): Promise<void> {
  const running = deps.downloads.get(layer.digest);
  if (running) return running;
  const work = downloadLayer(deps, ref, layer, options, plan).finally(() => deps.downloads.delete(layer.digest));
  deps.downloads.set(layer.digest, work);
  return work;
}

async function downloadLayer(deps: PullDeps, ref: ParsedRef, layer: Descriptor, options: PullOptions, plan: DownloadPlan): Promise<void> {
  const { onProgress, signal } = options;
  const report = (doneBytes: number) =>
    onProgress?.({ phase: 'download', digest: layer.digest, doneBytes, totalBytes: layer.size, layers: plan.layers, pullBytes: plan.totalBytes });
  for (let attempt = 1; ; attempt++) {
    const ingest = await deps.content.openIngest(layer.digest);
    const resumed = ingest.offset > 0;
    report(ingest.offset);
    try {
      await deps.registry.downloadBlob(ref, layer.digest, layer.size, ingest, report, signal);
      await ingest.commit();
      return;
    } catch (err) {
      if (signal?.aborted || attempt >= DOWNLOAD_ATTEMPTS) throw err;
      // A dropped connection resumes from what is on disk; a bad resumed file restarts from zero
      // (commit already deleted it). A mismatch on a fresh download is the registry's fault.
      const retryable = isHangarError(err, 'registry_unreachable') || (resumed && isHangarError(err, 'digest_mismatch'));
      if (!retryable) throw err;
    }
  }
}
