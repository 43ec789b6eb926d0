import type { CommitProgress } from '../protocol/commit.ts';

// The contract between images/ and the rest of Hangar. machines/ asks for an image by reference
// and gets back the unpacked layer directories to stack under a machine's overlay.

import type { PullProgress } from '../protocol/pull-progress.ts';

export type { PullProgress };

/** Fly's ImageRef, as carried on a Machine object. */
export type ImageRef = {
  registry: string;
  repository: string;
  tag: string;
  digest: string;
  labels: Record<string, string>;
};

/** The runtime part of an OCI image config (`config` in the image config JSON). */
export type ImageRunConfig = {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Env?: string[] | null;
  WorkingDir?: string;
  User?: string;
  Labels?: Record<string, string> | null;
  StopSignal?: string;
  ExposedPorts?: Record<string, object> | null;
};

export type ResolvedImage = {
  /** Canonical name, e.g. `127.0.0.1:5000/tests/web:1` or `hangar/busybox:latest`. */
  name: string;
  ref: ImageRef;
  manifestDigest: string;
  config: ImageRunConfig;
  /** Absolute paths of unpacked layer directories, lowest layer first. */
  layerDirs: string[];
  sizeBytes: number;
};

export type ImageSummary = {
  name: string;
  manifestDigest: string;
  sizeBytes: number;
  layers: number;
  createdAt: string;
};

export type PullOptions = {
  onProgress?: (progress: PullProgress) => void;
  signal?: AbortSignal;
};

/** A new image to store: a stored image plus one layer on top, with its own run config. */
export type CommitInput = {
  /** Manifest digest of the stored image it builds on. */
  baseDigest: string;
  /** The new layer as an uncompressed tar stream; compressed and hashed as it is read. */
  layer: AsyncIterable<Buffer> | NodeJS.ReadableStream;
  /** The new image's run config, from the base image's. */
  runConfig: (base: ImageRunConfig) => ImageRunConfig;
  /** The history entry's created_by. */
  createdBy: string;
};

export type CommittedImage = ResolvedImage & {
  layer: { digest: string; size: number; diffId: string };
};

export type PushOptions = {
  onProgress?: (progress: Extract<CommitProgress, { phase: 'push' | 'manifest' }>) => void;
  signal?: AbortSignal;
};

/** Making images here and sending them out; an ability a store may have beside ImageService. */
export interface ImageWriter {
  /** Stores `input` under `ref` (a registry name with a tag); replaces what `ref` named before. */
  commit(ref: string, input: CommitInput, options?: { signal?: AbortSignal }): Promise<CommittedImage>;
  /** Sends the stored image `ref` to its registry, with the credentials configured for it. */
  push(ref: string, options?: PushOptions): Promise<void>;
}

export interface ImageService {
  /** Local lookup only; undefined when the image is not in the store. */
  get(ref: string): Promise<ResolvedImage | undefined>;
  /** Local if present, else built (`hangar/*` base images) or pulled. */
  ensure(ref: string, options?: PullOptions): Promise<ResolvedImage>;
  /** Always asks the registry (or rebuilds a base image), then stores. */
  pull(ref: string, options?: PullOptions): Promise<ResolvedImage>;
  list(): Promise<ImageSummary[]>;
  inspect(ref: string): Promise<ResolvedImage & { createdAt: string }>;
  /** Removes the reference; layers no image uses any more are deleted. */
  remove(ref: string): Promise<void>;
}
