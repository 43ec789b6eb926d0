// Facts about the host that bound what a machine may be given.
import { readFileSync } from 'node:fs';

const WANTED_NOFILE = 1_048_576;

/**
 * The open-files limit machines get: 1048576 like Docker, unless the daemon's own hard limit is
 * lower (a daemon without CAP_SYS_RESOURCE cannot raise it, and crun would fail to start).
 */
export function machineNofileLimit(): number {
  const line = readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const hard = line?.trim().split(/\s+/)[4];
  if (hard === undefined || hard === 'unlimited') return WANTED_NOFILE;
  const n = Number.parseInt(hard, 10);
  return Number.isFinite(n) ? Math.min(n, WANTED_NOFILE) : WANTED_NOFILE;
}
