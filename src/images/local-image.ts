import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import type { ContentStore } from './content-store.ts';
import type { ImageRunConfig } from './image-service.ts';
import type { LayerStore } from './layer-store.ts';
import { hostPlatform, MEDIA } from './manifest.ts';

// Turns a tar stream made on this host into a one-layer OCI image in the content store, exactly as
// a pulled image would be stored, so the rest of Hangar cannot tell built from pulled.

export type StoredLayer = { digest: string; size: number; diffId: string };

/**
 * Compresses a layer tar into the content store as it streams, never holding it whole: the
 * sha256 of the compressed bytes is the blob's digest, that of the tar itself its diff_id.
 */
export async function storeLayerBlob(content: ContentStore, tar: AsyncIterable<Buffer> | NodeJS.ReadableStream, pin: (digest: string) => void, signal?: AbortSignal): Promise<StoredLayer> {
  const diff = createHash('sha256');
  const tap = new Transform({
    transform(chunk: Buffer, _enc, done) {
      diff.update(chunk);
      done(null, chunk);
    },
  });
  const gzip = createGzip({ level: 6 });
  const [, layer] = await Promise.all([
    pipeline(tar, tap, gzip, { signal }),
    content.writeStream(gzip).then((written) => {
      pin(written.digest);
      return written;
    }),
  ]);
  return { ...layer, diffId: `sha256:${diff.digest('hex')}` };
}

export async function storeOneLayerImage(
  deps: { content: ContentStore; layers: LayerStore },
  tar: AsyncIterable<Buffer>,
  runConfig: ImageRunConfig,
  created: Date,
  createdBy: string,
  pin: (digest: string) => void,
  signal?: AbortSignal,
): Promise<string> {
  const layer = await storeLayerBlob(deps.content, tar, pin, signal);

  const config = {
    created: created.toISOString(),
    ...hostPlatform(),
    config: runConfig,
    rootfs: { type: 'layers', diff_ids: [layer.diffId] },
    history: [{ created: created.toISOString(), created_by: createdBy }],
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDigest = `sha256:${createHash('sha256').update(configBytes).digest('hex')}`;
  pin(configDigest);
  await deps.content.writeBytes(configBytes, configDigest);

  const manifest = {
    schemaVersion: 2,
    mediaType: MEDIA.ociManifest,
    config: { mediaType: MEDIA.ociConfig, digest: configDigest, size: configBytes.length },
    layers: [{ mediaType: MEDIA.ociLayerGzip, digest: layer.digest, size: layer.size }],
  };
  await deps.layers.ensure(layer.digest, deps.content.blobPath(layer.digest), signal);
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const manifestDigest = `sha256:${createHash('sha256').update(manifestBytes).digest('hex')}`;
  await deps.content.writeBytes(manifestBytes, manifestDigest);
  return manifestDigest;
}
