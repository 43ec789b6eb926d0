import { parseArgs, type ParseArgsConfig } from 'node:util';
import { CliError } from './connect.ts';

// parseArgs with errors a person can act on: a mistyped flag names the nearest real one, and
// every parse error points at the command's --help.

export function parseFlags<T extends ParseArgsConfig>(command: string, config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      const flag = /'(-{1,2}[^'=]+)/.exec((err as Error).message)?.[1] ?? '';
      const known = ['--help', ...Object.entries(config.options ?? {}).flatMap(([name, o]) => [`--${name}`, ...(o.short ? [`-${o.short}`] : [])])];
      const guess = nearest(flag, known);
      throw new CliError(`unknown option ${flag}`, `${guess ? `did you mean ${guess}? ` : ''}\`hangar ${command} --help\` lists the options`);
    }
    if (code?.startsWith('ERR_PARSE_ARGS_')) throw new CliError((err as Error).message, `\`hangar ${command} --help\` shows the usage`);
    throw err;
  }
}

/** The candidate closest to `word` by edit distance, when close enough to be a typo of it. */
export function nearest(word: string, candidates: readonly string[]): string | undefined {
  let best: { candidate: string; distance: number } | undefined;
  for (const candidate of candidates) {
    const distance = editDistance(word, candidate);
    if (!best || distance < best.distance) best = { candidate, distance };
  }
  const allowed = Math.max(1, Math.floor(word.replace(/^-+/, '').length / 3));
  return best && best.distance <= allowed ? best.candidate : undefined;
}

/** Levenshtein distance, counting a swap of two neighbours as one edit. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}
