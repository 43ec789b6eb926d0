// Which fields a machine request may carry. A field Hangar knows is used; a field of Fly's
// schema that Hangar does not implement yet is kept (Fly clients send them) and reported in
// `warnings`; any other field is a mistake (`cmd` for `init.cmd`) and is refused, naming the
// nearest known field, because a config that silently runs the image default instead of the
// command asked for looks like success until much later.

/** Field names at each level: a subtree, or `true` for a value whose inside is not checked. Arrays
 * are transparent (their elements are checked against the same tree); `*` stands for any key of a map. */
export type FieldTree = { [name: string]: FieldTree | true };

type JsonSchema = {
  $ref?: string; type?: string | string[]; properties?: Record<string, JsonSchema>; items?: JsonSchema;
  additionalProperties?: boolean | JsonSchema; anyOf?: JsonSchema[]; oneOf?: JsonSchema[]; allOf?: JsonSchema[];
};

/** The field tree of a JSON Schema; `resolve` follows a `$ref`. */
export function fieldTreeOf(schema: JsonSchema, resolve: (ref: string) => JsonSchema = () => ({})): FieldTree | true {
  if (schema.$ref) return fieldTreeOf(resolve(schema.$ref), resolve);
  const branches = schema.anyOf ?? schema.oneOf ?? schema.allOf;
  if (branches) return merge(branches.map((b) => fieldTreeOf(b, resolve)));
  if (schema.items) return fieldTreeOf(schema.items, resolve);
  if (schema.properties) return Object.fromEntries(Object.entries(schema.properties).map(([k, v]) => [k, fieldTreeOf(v, resolve)]));
  if (typeof schema.additionalProperties === 'object') {
    const values = fieldTreeOf(schema.additionalProperties, resolve);
    return values === true ? true : { '*': values };
  }
  return true;
}

function merge(trees: Array<FieldTree | true>): FieldTree | true {
  const objects = trees.filter((t): t is FieldTree => t !== true);
  if (objects.length === 0) return true;
  const out: FieldTree = {};
  for (const t of objects) for (const [k, v] of Object.entries(t)) out[k] = out[k] && out[k] !== true && v !== true ? merge([out[k], v]) : (out[k] ?? v);
  return out;
}

export type UnknownField = { path: string; suggestion?: string };
export type FieldCheck = { unknown: UnknownField[]; unimplemented: string[] };

/** Walks `value` against Hangar's tree and Fly's: fields in neither are unknown, fields only in Fly's unimplemented. */
export function checkFields(value: unknown, hangar: FieldTree, fly: FieldTree): FieldCheck {
  const out: FieldCheck = { unknown: [], unimplemented: [] };
  const known = knownPaths(hangar, fly);
  const walk = (v: unknown, h: FieldTree, f: FieldTree | undefined, path: string, generic: string): void => {
    if (Array.isArray(v)) return v.forEach((el, i) => walk(el, h, f, `${path}[${i}]`, generic));
    if (v === null || typeof v !== 'object') return;
    for (const [key, child] of Object.entries(v)) {
      const at = path ? `${path}.${key}` : key;
      const genericAt = generic ? `${generic}.${key}` : key;
      const hNode = h[key] ?? h['*'];
      const fNode = f?.[key] ?? f?.['*'];
      if (hNode !== undefined) {
        if (hNode !== true) walk(child, hNode, fNode === true ? undefined : fNode, at, h[key] ? genericAt : generic);
      } else if (fNode !== undefined) {
        out.unimplemented.push(at);
      } else {
        const suggestion = nearest(key, generic, known);
        out.unknown.push({ path: at, ...(suggestion ? { suggestion } : {}) });
      }
    }
  };
  walk(value, hangar, fly, '', '');
  return out;
}

type KnownPath = { parent: string; name: string; hangar: boolean };

/** Every field path of both trees, as `parent.name` with array and map levels left out. */
function knownPaths(hangar: FieldTree, fly: FieldTree): KnownPath[] {
  const out = new Map<string, KnownPath>();
  const add = (tree: FieldTree, parent: string, isHangar: boolean) => {
    for (const [name, child] of Object.entries(tree)) {
      if (name === '*') {
        if (child !== true) add(child, parent, isHangar);
        continue;
      }
      const path = parent ? `${parent}.${name}` : name;
      const seen = out.get(path);
      out.set(path, { parent, name, hangar: isHangar || (seen?.hangar ?? false) });
      if (child !== true) add(child, path, isHangar);
    }
  };
  add(hangar, '', true);
  add(fly, '', false);
  return [...out.values()];
}

/**
 * The known field most likely meant by `key` under `parent`: a sibling spelled alike, or the same
 * name under another parent (`cmd` at the top is `init.cmd`). Hangar's own fields win ties.
 */
function nearest(key: string, parent: string, known: KnownPath[]): string | undefined {
  const limit = Math.max(1, Math.floor(key.length / 3));
  let best: { path: string; score: number } | undefined;
  for (const k of known) {
    const distance = likeness(key.toLowerCase(), k.name.toLowerCase());
    const score = distance + (k.parent === parent ? 0 : 1) + (k.hangar ? 0 : 0.5) + k.parent.split('.').length / 100;
    if (distance <= limit && (!best || score < best.score)) best = { path: k.parent ? `${k.parent}.${k.name}` : k.name, score };
  }
  return best?.path;
}

/** Edit distance, except that a name whose letters appear in order in the other (cmd, command) counts as 1. */
function likeness(a: string, b: string): number {
  if (a === b) return 0;
  const [short, long] = a.length < b.length ? [a, b] : [b, a];
  if (short.length >= 2 && short[0] === long[0] && isSubsequence(short, long)) return 1;
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length]!;
}

function isSubsequence(short: string, long: string): boolean {
  let i = 0;
  for (const c of long) if (c === short[i]) i++;
  return i === short.length;
}
