import { z } from 'zod';
import { HangarError } from '../protocol/errors.ts';
import type { ImageRunConfig } from './image-service.ts';

// The OCI and Docker schema2 shapes Hangar reads. Only the fields it acts on are checked; the rest
// of each document is kept byte-for-byte in the content store, since digests cover the bytes.

export const MEDIA = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

export const MANIFEST_ACCEPT = [MEDIA.ociIndex, MEDIA.dockerList, MEDIA.ociManifest, MEDIA.dockerManifest].join(', ');

const LAYER_TYPES = new Set([
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
]);

const DescriptorSchema = z.object({
  mediaType: z.string(),
  digest: z.string().regex(/^sha256:[a-f0-9]{64}$/),
  size: z.number().int().nonnegative(),
  platform: z.object({ os: z.string(), architecture: z.string(), variant: z.string().optional() }).optional(),
});
export type Descriptor = z.infer<typeof DescriptorSchema>;

const IndexSchema = z.object({ manifests: z.array(DescriptorSchema) });
const ManifestSchema = z.object({ config: DescriptorSchema, layers: z.array(DescriptorSchema) });
export type ImageManifest = z.infer<typeof ManifestSchema>;

const ConfigSchema = z.object({
  architecture: z.string().optional(),
  os: z.string().optional(),
  config: z.record(z.string(), z.unknown()).nullish(),
  rootfs: z.object({ diff_ids: z.array(z.string()) }).optional(),
});

function unsupported(message: string, ref: string): HangarError {
  return new HangarError('unsupported_image', message, {
    hint: `use an OCI or Docker schema2 linux image; check the reference: ${ref}`,
    details: { ref },
  });
}

function parseJson(bytes: Uint8Array, what: string, ref: string): unknown {
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw unsupported(`the ${what} of ${ref} is not valid JSON`, ref);
  }
}

export type ParsedManifest =
  | { kind: 'index'; manifests: Descriptor[] }
  | { kind: 'manifest'; manifest: ImageManifest };

export function parseManifest(bytes: Uint8Array, contentType: string | null, ref: string): ParsedManifest {
  const doc = parseJson(bytes, 'manifest', ref) as { mediaType?: string; schemaVersion?: number };
  const type = doc.mediaType ?? contentType?.split(';')[0]?.trim() ?? '';
  if (doc.schemaVersion === 1) throw unsupported(`${ref} uses the obsolete Docker schema1 manifest`, ref);
  if (type === MEDIA.ociIndex || type === MEDIA.dockerList || (!doc.mediaType && 'manifests' in doc)) {
    const parsed = IndexSchema.safeParse(doc);
    if (!parsed.success) throw unsupported(`the image index of ${ref} is malformed`, ref);
    return { kind: 'index', manifests: parsed.data.manifests };
  }
  const parsed = ManifestSchema.safeParse(doc);
  if (!parsed.success) throw unsupported(`the manifest of ${ref} is malformed (media type "${type}")`, ref);
  const manifest = parsed.data;
  if (manifest.config.mediaType !== MEDIA.ociConfig && manifest.config.mediaType !== MEDIA.dockerConfig) {
    throw unsupported(`${ref} is not a container image (config type ${manifest.config.mediaType})`, ref);
  }
  for (const layer of manifest.layers) {
    if (!LAYER_TYPES.has(layer.mediaType)) {
      throw unsupported(`${ref} has a layer of unsupported type ${layer.mediaType}`, ref);
    }
  }
  return { kind: 'manifest', manifest };
}

export function hostPlatform(): { os: string; architecture: string } {
  const arch = process.arch === 'x64' ? 'amd64' : process.arch;
  return { os: 'linux', architecture: arch };
}

export function pickPlatform(manifests: Descriptor[], ref: string): Descriptor {
  const want = hostPlatform();
  const matches = manifests.filter(
    (m) => m.platform?.os === want.os && m.platform.architecture === want.architecture,
  );
  const pick = matches.find((m) => !m.platform?.variant) ?? matches[0];
  if (!pick) {
    const have = manifests.map((m) => (m.platform ? `${m.platform.os}/${m.platform.architecture}` : '?')).join(', ');
    throw new HangarError('unsupported_image', `${ref} has no ${want.os}/${want.architecture} image (has: ${have || 'none'})`, {
      hint: `push a ${want.os}/${want.architecture} variant of the image, or reference a single-platform manifest by digest`,
      details: { ref, platforms: have },
    });
  }
  return pick;
}

export function parseImageConfig(bytes: Uint8Array, ref: string): ImageRunConfig {
  const parsed = ConfigSchema.safeParse(parseJson(bytes, 'config', ref));
  if (!parsed.success) throw unsupported(`the image config of ${ref} is malformed`, ref);
  if (parsed.data.os && parsed.data.os !== 'linux') throw unsupported(`${ref} is a ${parsed.data.os} image`, ref);
  return (parsed.data.config ?? {}) as ImageRunConfig;
}
