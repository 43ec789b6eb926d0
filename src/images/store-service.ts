import { HangarError } from '../protocol/errors.ts';
import { busyboxTar, BUSYBOX_CONFIG } from './base-busybox.ts';
import { baseImageNames, DEBIAN_CONFIG, debianSuite, debianTar } from './base-debian.ts';
import { ContentStore } from './content-store.ts';
import { parseImageRef, parseTargetRef, type ParsedRef } from './image-ref.ts';
import { ImageRefs } from './image-refs.ts';
import type { CommitInput, CommittedImage, ImageService, ImageSummary, ImageWriter, PullOptions, PushOptions, ResolvedImage } from './image-service.ts';
import { storeLayeredImage } from './layered-image.ts';
import { pushImage } from './pusher.ts';
import { LayerStore } from './layer-store.ts';
import { storeOneLayerImage } from './local-image.ts';
import { parseImageConfig, parseManifest, type ImageManifest } from './manifest.ts';
import { pullImage } from './puller.ts';
import { RegistryClient, type RegistryOptions } from './registry-client.ts';

const MAX_CACHED_IMAGES = 1000;

// The ImageService over a directory: blobs/ (content by digest), layers/ (unpacked once, shared),
// ingest/ (partial downloads), refs.json (names). Pulls and builds pin the digests they touch so a
// concurrent remove's garbage collection cannot take them away mid-way.

export type BuildBaseOptions = PullOptions;

export class StoreImageService implements ImageService, ImageWriter {
  readonly #content: ContentStore;
  readonly #layers: LayerStore;
  readonly #refs: ImageRefs;
  readonly #registry: RegistryClient;
  readonly #root: string;
  readonly #ready: Promise<void>;
  readonly #pins = new Map<string, number>();
  readonly #downloads = new Map<string, Promise<void>>();
  /** One pull or build per name at a time; later callers join the running one. */
  readonly #fetching = new Map<string, Promise<ResolvedImage>>();
  /** Manifests and configs by `name@digest`: content-addressed, so read and parsed once (every create resolves its image). */
  readonly #blobs = new Map<string, { manifest: ImageManifest; config: ReturnType<typeof parseImageConfig> }>();

  constructor(root: string, registry: RegistryOptions) {
    this.#root = root;
    this.#content = new ContentStore(root);
    this.#layers = new LayerStore(root);
    this.#refs = new ImageRefs(root);
    this.#registry = new RegistryClient(registry);
    this.#ready = Promise.all([this.#content.init(), this.#layers.init()]).then(() => {});
  }

  async get(ref: string): Promise<ResolvedImage | undefined> {
    await this.#ready;
    const parsed = parseImageRef(ref);
    const record = await this.#refs.get(parsed.name);
    if (!record) return undefined;
    return this.#resolve(parsed, record.manifestDigest);
  }

  async ensure(ref: string, options: PullOptions = {}): Promise<ResolvedImage> {
    return (await this.get(ref)) ?? this.pull(ref, options);
  }

  async pull(ref: string, options: PullOptions = {}): Promise<ResolvedImage> {
    await this.#ready;
    const parsed = parseImageRef(ref);
    if (parsed.isBase) return this.buildBase(parsed.name, options);
    return this.#once(parsed.name, () =>
      this.#pinned(async (pin) => {
        const digest = await pullImage({ registry: this.#registry, content: this.#content, layers: this.#layers, downloads: this.#downloads }, parsed, options, pin);
        return this.#record(parsed, digest, options);
      }),
    );
  }

  /** Builds (or rebuilds) a `hangar/*` base image on this host and stores it under its name. */
  async buildBase(ref: string, options: BuildBaseOptions = {}): Promise<ResolvedImage> {
    await this.#ready;
    const parsed = parseImageRef(ref);
    if (!parsed.isBase) {
      throw new HangarError('invalid_image_ref', `${ref} is not a Hangar base image`, {
        hint: `base images are ${baseImageNames().join(', ')}; pull anything else`,
      });
    }
    const deps = { content: this.#content, layers: this.#layers };
    return this.#once(parsed.name, () =>
      this.#pinned(async (pin) => {
        const say = (message: string) => options.onProgress?.({ phase: 'build', message });
        let digest: string;
        if (parsed.repository === 'hangar/busybox' && parsed.tag === 'latest') {
          say('packing /bin/busybox and its applet links');
          const { tar, mtime } = await busyboxTar();
          digest = await storeOneLayerImage(deps, tar, BUSYBOX_CONFIG, mtime, 'hangar build hangar/busybox', pin, options.signal);
        } else if (parsed.repository === 'hangar/debian' && parsed.tag) {
          const suite = debianSuite(parsed.tag);
          const built = await debianTar(suite, this.#root, say, options.signal);
          try {
            say('packing the root filesystem');
            digest = await storeOneLayerImage(deps, built.tar, DEBIAN_CONFIG, new Date(), `debootstrap --variant=minbase ${suite}`, pin, options.signal);
            await built.finished;
          } finally {
            await built.cleanup();
          }
        } else {
          throw new HangarError('image_not_found', `${parsed.name} is not a base image Hangar can build`, {
            hint: `base images are ${baseImageNames().join(', ')}`,
          });
        }
        return this.#record(parsed, digest, options);
      }),
    );
  }

  async commit(ref: string, input: CommitInput, options: { signal?: AbortSignal } = {}): Promise<CommittedImage> {
    await this.#ready;
    const parsed = parseTargetRef(ref);
    let layer: CommittedImage['layer'] | undefined;
    const image = await this.#once(parsed.name, () =>
      this.#pinned(async (pin) => {
        const made = await storeLayeredImage({ content: this.#content, layers: this.#layers }, { ...input, name: parsed.name }, pin, options.signal);
        layer = made.layer;
        return this.#record(parsed, made.manifestDigest, {});
      }),
    );
    // A commit that joined another one under the same name has no layer of its own to report.
    if (!layer) {
      throw new HangarError('image_in_use', `${parsed.name} is being written by another commit or pull`, {
        hint: 'wait for it to finish, or commit under another tag',
        details: { ref: parsed.name },
      });
    }
    return { ...image, layer };
  }

  async push(ref: string, options: PushOptions = {}): Promise<void> {
    await this.#ready;
    const parsed = parseTargetRef(ref);
    const record = await this.#refs.get(parsed.name);
    if (!record) throw notLocal(parsed);
    await this.#pinned(async (pin) => {
      pin(record.manifestDigest);
      const manifest = await this.#manifest(parsed.name, record.manifestDigest);
      for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) pin(d);
      await pushImage({ registry: this.#registry, content: this.#content }, parsed, record.manifestDigest, options);
    });
  }

  async list(): Promise<ImageSummary[]> {
    await this.#ready;
    const out: ImageSummary[] = [];
    for (const [name, record] of Object.entries(await this.#refs.all())) {
      const manifest = await this.#manifest(name, record.manifestDigest).catch(() => undefined);
      if (!manifest) continue;
      out.push({
        name,
        manifestDigest: record.manifestDigest,
        sizeBytes: sizeOf(manifest),
        layers: manifest.layers.length,
        createdAt: record.createdAt,
      });
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  async inspect(ref: string): Promise<ResolvedImage & { createdAt: string }> {
    await this.#ready;
    const parsed = parseImageRef(ref);
    const record = await this.#refs.get(parsed.name);
    const image = record && (await this.#resolve(parsed, record.manifestDigest));
    if (!record || !image) throw notLocal(parsed);
    return { ...image, createdAt: record.createdAt };
  }

  async remove(ref: string): Promise<void> {
    await this.#ready;
    const parsed = parseImageRef(ref);
    if (!(await this.#refs.delete(parsed.name))) throw notLocal(parsed);
    await this.#collectGarbage();
  }

  /** Deletes blobs and unpacked layers that no stored name and no running pull refers to. */
  async #collectGarbage(): Promise<void> {
    const keep = new Set(this.#pins.keys());
    for (const [name, record] of Object.entries(await this.#refs.all())) {
      keep.add(record.manifestDigest);
      const manifest = await this.#manifest(name, record.manifestDigest).catch(() => undefined);
      if (!manifest) continue;
      keep.add(manifest.config.digest);
      for (const l of manifest.layers) keep.add(l.digest);
    }
    for (const d of await this.#layers.list()) if (!keep.has(d)) await this.#layers.delete(d);
    for (const d of await this.#content.listDigests()) if (!keep.has(d)) await this.#content.delete(d);
  }

  async #record(parsed: ParsedRef, manifestDigest: string, options: PullOptions): Promise<ResolvedImage> {
    await this.#refs.set(parsed.name, { manifestDigest, createdAt: new Date().toISOString() });
    const image = await this.#resolve(parsed, manifestDigest);
    if (!image) throw new HangarError('internal', `${parsed.name} was stored but cannot be read back`, { hint: 'pull it again' });
    options.onProgress?.({ phase: 'done', name: parsed.name, manifestDigest });
    return image;
  }

  async #manifest(name: string, digest: string): Promise<ImageManifest> {
    const parsed = parseManifest(await this.#content.readBytes(digest), null, name);
    if (parsed.kind !== 'manifest') throw new HangarError('internal', `${name} points at an index`, { hint: 'pull it again' });
    return parsed.manifest;
  }

  /** Undefined when a piece is missing on disk, so ensure() repairs the image by pulling again. */
  async #resolve(parsed: ParsedRef, manifestDigest: string): Promise<ResolvedImage | undefined> {
    const key = `${parsed.name}@${manifestDigest}`;
    let blobs = this.#blobs.get(key);
    if (!blobs) {
      const manifest = await this.#manifest(parsed.name, manifestDigest).catch(() => undefined);
      if (!manifest) return undefined;
      blobs = { manifest, config: parseImageConfig(await this.#content.readBytes(manifest.config.digest), parsed.name) };
      if (this.#blobs.size >= MAX_CACHED_IMAGES) this.#blobs.clear();
      this.#blobs.set(key, blobs);
    }
    const { manifest, config } = blobs;
    for (const l of manifest.layers) if (!this.#layers.has(l.digest)) return undefined;
    return {
      name: parsed.name,
      ref: {
        registry: parsed.isBase ? 'hangar' : parsed.apiHost,
        repository: parsed.repository,
        tag: parsed.tag ?? '',
        digest: manifestDigest,
        labels: config.Labels ?? {},
      },
      manifestDigest,
      config,
      layerDirs: manifest.layers.map((l) => this.#layers.path(l.digest)),
      sizeBytes: sizeOf(manifest),
    };
  }

  async #once(name: string, work: () => Promise<ResolvedImage>): Promise<ResolvedImage> {
    const running = this.#fetching.get(name);
    if (running) return running;
    const p = work().finally(() => this.#fetching.delete(name));
    this.#fetching.set(name, p);
    return p;
  }

  async #pinned<T>(work: (pin: (digest: string) => void) => Promise<T>): Promise<T> {
    const mine: string[] = [];
    const pin = (d: string) => {
      mine.push(d);
      this.#pins.set(d, (this.#pins.get(d) ?? 0) + 1);
    };
    try {
      return await work(pin);
    } finally {
      for (const d of mine) {
        const n = (this.#pins.get(d) ?? 1) - 1;
        if (n > 0) this.#pins.set(d, n);
        else this.#pins.delete(d);
      }
    }
  }
}

function sizeOf(manifest: ImageManifest): number {
  return manifest.config.size + manifest.layers.reduce((n, l) => n + l.size, 0);
}

function notLocal(parsed: ParsedRef): HangarError {
  return new HangarError('image_not_found', `${parsed.name} is not in the local image store`, {
    hint: `pull it first: hangar images pull ${parsed.name}`,
    details: { ref: parsed.name },
  });
}
