import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import tar from 'tar-stream';

// Writes OCI image layouts from lists of tar entries, so tests state exactly which bytes a layer
// holds (whiteouts, links, hostile paths) instead of depending on an image from the internet.

export type TarEntry = {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  content?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  linkname?: string;
  mtime?: Date;
  pax?: Record<string, string>;
  devmajor?: number;
  devminor?: number;
};

export type LayerSpec = { entries: TarEntry[]; compression: 'gzip' | 'zstd' | 'none' };

export type ImageSpec = {
  layers: LayerSpec[];
  config?: Record<string, unknown>;
  /** Wrap the manifest in an image index that also lists a linux/arm64 sibling. */
  index?: boolean;
};

export type WrittenImage = { manifestDigest: string; indexDigest?: string; layerDigests: string[]; layerBlobs: Buffer[] };

const MTIME = new Date('2024-01-02T03:04:05Z');

export async function tarBytes(entries: TarEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) {
    const content = e.content === undefined ? undefined : Buffer.from(e.content);
    pack.entry(
      {
        name: e.name,
        type: e.type ?? 'file',
        mode: e.mode ?? (e.type === 'directory' ? 0o755 : 0o644),
        uid: e.uid ?? 0,
        gid: e.gid ?? 0,
        mtime: e.mtime ?? MTIME,
        linkname: e.linkname,
        devmajor: e.devmajor,
        devminor: e.devminor,
        size: content?.length ?? 0,
        ...(e.pax ? { pax: e.pax } : {}),
      },
      content ?? Buffer.alloc(0),
    );
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function putBlob(dir: string, bytes: Buffer): Promise<{ digest: string; size: number }> {
  const digest = digestOf(bytes);
  await writeFile(join(dir, 'blobs', 'sha256', digest.slice(7)), bytes);
  return { digest, size: bytes.length };
}

const LAYER_TYPE = {
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  none: 'application/vnd.oci.image.layer.v1.tar',
} as const;

/** Writes one image into a fresh OCI layout at `dir` under `tag`. */
export async function writeLayout(dir: string, tag: string, spec: ImageSpec): Promise<WrittenImage> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const layers: { mediaType: string; digest: string; size: number }[] = [];
  const diffIds: string[] = [];
  const layerBlobs: Buffer[] = [];
  for (const l of spec.layers) {
    const raw = await tarBytes(l.entries);
    diffIds.push(digestOf(raw));
    const blob = l.compression === 'gzip' ? gzipSync(raw) : l.compression === 'zstd' ? zstdCompressSync(raw) : raw;
    layerBlobs.push(blob);
    layers.push({ mediaType: LAYER_TYPE[l.compression], ...(await putBlob(dir, blob)) });
  }
  const manifestFor = async (architecture: string) => {
    const config = Buffer.from(JSON.stringify({
      architecture,
      os: 'linux',
      config: spec.config ?? { Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
    }));
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...(await putBlob(dir, config)) },
      layers,
    }));
    return { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...(await putBlob(dir, manifest)), platform: { os: 'linux', architecture } };
  };
  const amd64 = await manifestFor('amd64');
  let top: Record<string, unknown> = amd64;
  let indexDigest: string | undefined;
  if (spec.index) {
    const arm64 = await manifestFor('arm64');
    const index = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [arm64, amd64],
    }));
    const put = await putBlob(dir, index);
    indexDigest = put.digest;
    top = { mediaType: 'application/vnd.oci.image.index.v1+json', ...put };
  }
  await writeFile(join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{ ...top, platform: undefined, annotations: { 'org.opencontainers.image.ref.name': tag } }],
  }));
  return { manifestDigest: amd64.digest, indexDigest, layerDigests: layers.map((l) => l.digest), layerBlobs };
}
