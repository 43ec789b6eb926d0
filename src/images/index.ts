// The public entry of images/: the factory and the contract types. Adding an export is an API decision.
import type { ImageService, ImageWriter, PullOptions, ResolvedImage } from './image-service.ts';
import type { Credentials } from './registry-auth.ts';
import { StoreImageService } from './store-service.ts';

export type { CommitInput, CommittedImage, ImageRef, ImageRunConfig, ImageService, ImageSummary, ImageWriter, PullOptions, PullProgress, PushOptions, ResolvedImage } from './image-service.ts';
export type { Credentials } from './registry-auth.ts';
export { parseImageRef, parseTargetRef, type ParsedRef } from './image-ref.ts';

export type ImageServiceOptions = {
  /** `<dataDir>/images`. */
  root: string;
  /** `host[:port]` of registries spoken to over plain HTTP. */
  insecureRegistries?: string[];
  /** Basic credentials per registry (`docker.io`, `ghcr.io`, `127.0.0.1:5000`). */
  credentials?: Record<string, Credentials>;
};

export type LocalImageService = ImageService & ImageWriter & {
  /** Builds (or rebuilds) `hangar/busybox` or `hangar/debian:<suite>` on this host. */
  buildBase(ref: string, options?: PullOptions): Promise<ResolvedImage>;
};

export function createImageService(opts: ImageServiceOptions): LocalImageService {
  return new StoreImageService(opts.root, {
    insecureRegistries: opts.insecureRegistries ?? [],
    credentials: opts.credentials ?? {},
  });
}
