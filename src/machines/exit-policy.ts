import type { MachineConfig } from '../protocol/machine-config.ts';

// What happens when a machine's process exits on its own (Fly's restart policies).

export type ExitDecision = { restart: true; delayMs: number } | { restart: false };

const DEFAULT_MAX_RETRIES = 10;

export function decideAfterExit(config: MachineConfig, exitCode: number, restartsSoFar: number): ExitDecision {
  const policy = config.restart?.policy ?? 'on-failure';
  const maxRetries = config.restart?.max_retries ?? DEFAULT_MAX_RETRIES;
  const restart =
    policy === 'always' || (policy === 'on-failure' && exitCode !== 0 && restartsSoFar < maxRetries);
  if (!restart) return { restart: false };
  // Back off so a crash-looping machine costs little: 100 ms, 200 ms, ... up to 10 s.
  return { restart: true, delayMs: Math.min(100 * 2 ** restartsSoFar, 10_000) };
}
