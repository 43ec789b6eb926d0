// What a pull (or a base image build) reports as it goes: on the wire as NDJSON from
// POST /v1/images/pull, and to the SDK's onProgress.

export type PullProgress =
  | { phase: 'resolve'; ref: string }
  /** totalBytes is this layer's size; layers and pullBytes are the whole pull's. */
  | { phase: 'download'; digest: string; doneBytes: number; totalBytes: number; layers: number; pullBytes: number }
  | { phase: 'unpack'; digest: string }
  | { phase: 'build'; message: string }
  | { phase: 'done'; name: string; manifestDigest: string };
