import { HangarError } from '../protocol/errors.ts';

// JSON request bodies. Size is bounded by the server's body limit; depth is bounded here, before
// parsing, because everything after JSON.parse (schema validation, copies, serialisation) walks
// the value recursively and a body nested thousands deep overflows the stack there.

export const MAX_JSON_DEPTH = 64;

export function parseJsonBody(text: string): unknown {
  if (text.trim() === '') return undefined;
  const depth = nestingDepth(text);
  if (depth > MAX_JSON_DEPTH) {
    throw new HangarError('invalid_json', `the JSON body is nested ${depth} levels deep, more than ${MAX_JSON_DEPTH}`, {
      hint: `send JSON nested at most ${MAX_JSON_DEPTH} levels deep`,
    });
  }
  return JSON.parse(text); // a SyntaxError becomes invalid_json in errors.ts
}

/** The deepest nesting of arrays and objects in `text`, brackets inside strings not counted. */
function nestingDepth(text: string): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > deepest) deepest = depth;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    }
  }
  return deepest;
}
