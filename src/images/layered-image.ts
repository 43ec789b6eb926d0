import { HangarError } from '../protocol/errors.ts';
import { sha256Digest, type ContentStore } from './content-store.ts';
import type { ImageRunConfig } from './image-service.ts';
import type { LayerStore } from './layer-store.ts';
import { storeLayerBlob, type StoredLayer } from './local-image.ts';
import { MEDIA, parseImageConfig, parseManifest, type Descriptor } from './manifest.ts';

// A new image made of a stored image plus one more layer on top (a machine's commit): the base's
// layer blobs are shared as they are, its config is kept but for the run config, the new layer's
// diff_id and a history entry. Stored as a pulled image would be, new layer unpacked, so the
// image is usable here at once and can be pushed as it is.

/** Docker's schema2 names for what OCI calls the same bytes; the new manifest is OCI throughout. */
const OCI_LAYER_TYPE: Record<string, string> = {
  'application/vnd.docker.image.rootfs.diff.tar.gzip': MEDIA.ociLayerGzip,
};

export type LayeredImageInput = {
  /** Manifest digest of the stored image to build on. */
  baseDigest: string;
  /** The new layer, an uncompressed tar stream. */
  layer: AsyncIterable<Buffer> | NodeJS.ReadableStream;
  runConfig: (base: ImageRunConfig) => ImageRunConfig;
  createdBy: string;
  /** For messages: the name being made. */
  name: string;
};

export type LayeredImage = { manifestDigest: string; layer: StoredLayer; layers: number };

export async function storeLayeredImage(
  deps: { content: ContentStore; layers: LayerStore },
  input: LayeredImageInput,
  pin: (digest: string) => void,
  signal?: AbortSignal,
): Promise<LayeredImage> {
  const { content } = deps;
  pin(input.baseDigest);
  const base = await readBase(content, input.baseDigest, input.name);
  for (const l of base.layers) pin(l.digest);

  const layer = await storeLayerBlob(content, input.layer, pin, signal);
  // Unpacked like any pulled layer (and checked the same way): the image is usable here at once.
  await deps.layers.ensure(layer.digest, content.blobPath(layer.digest), signal);

  const created = new Date().toISOString();
  const config = {
    ...base.config,
    created,
    config: input.runConfig(base.runConfig),
    rootfs: { type: 'layers', diff_ids: [...base.diffIds, layer.diffId] },
    history: [...base.history, { created, created_by: input.createdBy }],
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDigest = sha256Digest(configBytes);
  pin(configDigest);
  await content.writeBytes(configBytes, configDigest);

  const layers: Descriptor[] = [
    ...base.layers.map((l) => ({ mediaType: OCI_LAYER_TYPE[l.mediaType] ?? l.mediaType, digest: l.digest, size: l.size })),
    { mediaType: MEDIA.ociLayerGzip, digest: layer.digest, size: layer.size },
  ];
  const manifest = {
    schemaVersion: 2,
    mediaType: MEDIA.ociManifest,
    config: { mediaType: MEDIA.ociConfig, digest: configDigest, size: configBytes.length },
    layers,
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const manifestDigest = sha256Digest(manifestBytes);
  pin(manifestDigest);
  await content.writeBytes(manifestBytes, manifestDigest);
  return { manifestDigest, layer, layers: layers.length };
}

type Base = { layers: Descriptor[]; config: Record<string, unknown>; runConfig: ImageRunConfig; diffIds: string[]; history: unknown[] };

async function readBase(content: ContentStore, digest: string, name: string): Promise<Base> {
  const missing = () =>
    new HangarError('image_not_found', `the image the machine was created from (${digest}) is no longer in the local store, so ${name} cannot be built on it`, {
      hint: "pull the machine's image again (hangar images pull IMAGE), then commit",
      details: { digest },
    });
  if (!(await content.has(digest))) throw missing();
  const parsed = parseManifest(await content.readBytes(digest), null, digest);
  if (parsed.kind !== 'manifest') throw missing();
  const { manifest } = parsed;
  for (const l of manifest.layers) if (!(await content.has(l.digest))) throw missing();
  if (!(await content.has(manifest.config.digest))) throw missing();
  const configBytes = await content.readBytes(manifest.config.digest);
  const runConfig = parseImageConfig(configBytes, digest);
  const config = JSON.parse(configBytes.toString('utf8')) as Record<string, unknown> & { rootfs?: { diff_ids?: string[] }; history?: unknown[] };
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== manifest.layers.length) {
    throw new HangarError('unsupported_image', `the base image ${digest} lists ${diffIds.length} diff_ids for ${manifest.layers.length} layers`, {
      hint: 'rebuild the base image with a standard tool, recreate the machine from it, then commit',
      details: { digest },
    });
  }
  return { layers: manifest.layers, config, runConfig, diffIds, history: Array.isArray(config.history) ? config.history : [] };
}
