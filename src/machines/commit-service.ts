import type { ImageService, ImageWriter } from '../images/image-service.ts';
import { parseTargetRef } from '../images/image-ref.ts';
import type { CommitProgress, CommitRequest, CommitResult } from '../protocol/commit.ts';
import { HangarError } from '../protocol/errors.ts';
import { packUpperLayer, type UpperLayerSummary } from '../storage/upper-layer-tar.ts';
import type { CheckpointService } from './checkpoint-service.ts';
import type { MachineRunner } from './machine-runner.ts';
import type { MachineService } from './machine-service.ts';
import { committedRunConfig } from './process-spec.ts';
import { assertLegal } from './transitions.ts';

// A machine committed as an image: its image's layers plus one more, made from its writable
// layer as it is now (captured frozen, the machine running on undisturbed) or as a checkpoint
// holds it, with the machine's command and env as the image's. Stored here under the name given,
// and pushed to that name's registry when asked. A machine created from it, here or on another
// host, starts with the same files.
//
//   const made = await commits.commit('app', id, { image: '127.0.0.1:5000/team/app:v2', push: true });
//   await machines.create('app', { config: { image: made.image } });

const PROGRESS_EVERY_MS = 250;

export type CommitOptions = { signal?: AbortSignal; onProgress?: (p: CommitProgress) => void };

export class CommitService {
  readonly #machines: MachineService;
  readonly #checkpoints: CheckpointService;
  readonly #runner: MachineRunner;
  readonly #images: ImageService & ImageWriter;

  constructor(deps: { machines: MachineService; checkpoints: CheckpointService; runner: MachineRunner; images: ImageService & ImageWriter }) {
    this.#machines = deps.machines;
    this.#checkpoints = deps.checkpoints;
    this.#runner = deps.runner;
    this.#images = deps.images;
  }

  async commit(app: string, machineId: string, req: CommitRequest, opts: CommitOptions = {}): Promise<CommitResult> {
    const { signal, onProgress } = opts;
    const target = parseTargetRef(req.image);
    const m = this.#machines.get(app, machineId);
    if (m.diskGb === 0) {
      throw new HangarError('checkpoints_unsupported', `machine ${m.id} was made before machines had disks of their own; it cannot be committed`, {
        hint: 'create a new machine from the same image and config; its disk supports commits',
      });
    }
    const checkpoint = req.checkpoint === undefined ? undefined : this.#checkpoints.get(app, m.id, req.checkpoint);
    const source = checkpoint?.id ?? 'live';
    onProgress?.({ phase: 'capture', source });
    const capture = await this.#checkpoints.exclusive(m.id, async () => {
      assertLegal('commit', this.#machines.get(app, m.id).state, m.id);
      return this.#runner.mountCapture(m, checkpoint?.id);
    });
    let summary: UpperLayerSummary;
    let image;
    try {
      let last = 0;
      const layer = packUpperLayer(capture.upperDir, this.#runner.ids(m), {
        ...(signal ? { signal } : {}),
        onEntry: (s) => {
          if (Date.now() - last < PROGRESS_EVERY_MS) return;
          last = Date.now();
          onProgress?.({ phase: 'layer', entries: s.entries, bytes: s.bytes });
        },
      });
      const stored = this.#images.commit(target.name, {
        baseDigest: m.imageRef.digest,
        layer: layer.tar,
        runConfig: (base) => committedRunConfig(m.config, base),
        createdBy: `hangar commit ${app}/${m.id}${checkpoint ? ` (checkpoint ${checkpoint.name})` : ''}`,
      }, { ...(signal ? { signal } : {}) });
      // Whichever side fails first ends the other: a store that stops reading must not leave the walk waiting.
      stored.catch((err: unknown) => layer.tar.destroy(err as Error));
      [image, summary] = await Promise.all([stored, layer.done]);
    } finally {
      await capture.release();
    }
    onProgress?.({ phase: 'layer', entries: summary.entries, bytes: summary.bytes });
    onProgress?.({ phase: 'store', digest: image.manifestDigest });
    if (req.push) await this.#images.push(image.name, { ...(signal ? { signal } : {}), ...(onProgress ? { onProgress } : {}) });
    onProgress?.({ phase: 'done', image: image.name, digest: image.manifestDigest });
    return {
      image: image.name,
      digest: image.manifestDigest,
      layer: { digest: image.layer.digest, diff_id: image.layer.diffId, size_bytes: image.layer.size, entries: summary.entries },
      layers: image.layerDirs.length,
      size_bytes: image.sizeBytes,
      source,
      pushed: req.push === true,
      skipped: summary.skipped,
    };
  }
}
