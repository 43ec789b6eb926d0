import type { PullProgress } from '../protocol/pull-progress.ts';
import { HangarApiError } from '../sdk/index.ts';
import type { ToolContext } from './tool-def.ts';

// Progress for long calls. MCP clients give up on a call after a timeout (60 s by default in the
// TypeScript SDK) unless progress resets it, and a first image pull or a big checkpoint can take
// that long. Every call sends a heartbeat; image pulls also say what they are doing.

export const HEARTBEAT_MS = 5000;

/** Said in the description of every tool that can take long. */
export const SENDS_PROGRESS = `While it runs it sends a progress notification at least every ${HEARTBEAT_MS / 1000} s, so a client that resets its timeout on progress waits for it.`;

const DOWNLOAD_EVERY_MS = 1000;

/** Calls `run`, sending a progress notification every HEARTBEAT_MS until it settles. */
export async function withHeartbeat<T>(name: string, ctx: ToolContext, run: () => Promise<T>): Promise<T> {
  const started = Date.now();
  const beat = setInterval(() => {
    void ctx.progress(`${name}: still working (${Math.round((Date.now() - started) / 1000)} s)`).catch(() => undefined);
  }, HEARTBEAT_MS);
  try {
    return await run();
  } finally {
    clearInterval(beat);
  }
}

/** Gets `image` into the store first when it is not there, reporting the pull or build as progress. */
export async function pullWithProgress(image: string, ctx: ToolContext): Promise<void> {
  try {
    await ctx.client.images.inspect(image, { signal: ctx.signal });
    return;
  } catch (err) {
    // Anything but "not here" (a bad reference, say) is for the create itself to report.
    if (!(err instanceof HangarApiError) || err.code !== 'image_not_found') return;
  }
  await ctx.progress(`getting image ${image} (first use)`);
  let lastDownloadMs = 0;
  await ctx.client.images.pull(image, {
    signal: ctx.signal,
    onProgress: (p) => {
      if (p.phase === 'download' && Date.now() - lastDownloadMs < DOWNLOAD_EVERY_MS && p.doneBytes < p.totalBytes) return;
      if (p.phase === 'download') lastDownloadMs = Date.now();
      void ctx.progress(pullMessage(image, p)).catch(() => undefined);
    },
  });
}

function pullMessage(image: string, p: PullProgress): string {
  switch (p.phase) {
    case 'resolve': return `${image}: resolving ${p.ref}`;
    case 'download': return `${image}: layer ${p.digest.slice(7, 19)} ${mb(p.doneBytes)} of ${mb(p.totalBytes)} (${p.layers} layers, ${mb(p.pullBytes)} in all)`;
    case 'unpack': return `${image}: unpacking layer ${p.digest.slice(7, 19)}`;
    case 'build': return `${image}: ${p.message}`;
    case 'done': return `${image}: ready`;
  }
}

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}
