import { z } from 'zod';

// Fly's Go client sends durations as strings ("10s"), some clients as nanoseconds, and the
// published spec models them as {"time.Duration": n}; all three are accepted.
const UNIT_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export function parseDurationMs(text: string): number | undefined {
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== text) return undefined;
  return parts.reduce((sum, p) => sum + Number(p[1]) * UNIT_MS[p[2]!]!, 0);
}

export const DurationSchema = z
  .union([
    z.string(),
    z.number().nonnegative(),
    z.object({ 'time.Duration': z.number().nonnegative() }),
  ])
  .meta({ description: 'A duration: "10s", "500ms", or nanoseconds as a number' });

export type Duration = z.infer<typeof DurationSchema>;

/** Milliseconds of a validated duration, or undefined when a string does not parse. */
export function durationToMs(value: Duration): number | undefined {
  if (typeof value === 'string') return parseDurationMs(value);
  if (typeof value === 'number') return value / 1e6;
  return value['time.Duration'] / 1e6;
}

/** A duration as parseDurationMs reads it back: "5m", "1h30m", "1.5s", "250ms". */
export function formatDurationMs(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  const s = (ms % 60_000) / 1000;
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${s ? `${s}s` : ''}`;
}
