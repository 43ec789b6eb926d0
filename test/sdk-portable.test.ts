import { it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

// The SDK's root must run in browsers and edge runtimes: nothing it imports, however deep,
// may be Node-only. Type-only imports are erased and do not count.

it('imports nothing Node-only from hangar/sdk', () => {
  const entry = resolve(import.meta.dirname, '../src/sdk/index.ts');
  const seen = new Set<string>();
  const offenders: string[] = [];
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/^(?:import|export)\s+(?!type\b)[^'"]*?from\s+'([^']+)'/gm)) {
      const spec = m[1]!;
      if (spec.startsWith('.')) visit(resolve(dirname(file), spec));
      else if (spec !== 'zod') offenders.push(`${file}: ${spec}`);
    }
  };
  visit(entry);
  assert.ok(seen.size > 3, 'walked the SDK');
  assert.deepEqual(offenders, []);
});
