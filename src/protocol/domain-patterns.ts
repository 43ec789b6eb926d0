// The names an app with egress `domains` may resolve: `registry.npmjs.org` is that name only,
// `*.github.com` any name below github.com (api.github.com, a.b.github.com) but not github.com
// itself, as in TLS certificates but at any depth. Matching is case-insensitive and ignores a
// trailing dot, as DNS does.

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** Why `text` is not a name or `*.name` pattern, with what to write instead; undefined when it is one. */
export function domainPatternProblem(text: string): string | undefined {
  const name = normalizeDomainPattern(text);
  if (/^[\d.]+(\/\d+)?$/.test(name) || name.includes(':')) return 'is an address, not a name; list addresses with {"policy": "cidrs"}';
  if (name === '*') return 'would allow every name; use {"policy": "allow"} for that';
  const wildcard = name.startsWith('*.');
  const base = wildcard ? name.slice(2) : name;
  if (base.includes('*')) return 'has a * that is not a whole first label; write *.example.com for every name below example.com';
  if (base.length === 0 || base.length > 253) return 'is not a domain name such as registry.npmjs.org or *.github.com';
  const labels = base.split('.');
  const bad = labels.find((l) => !LABEL.test(l));
  if (bad !== undefined) return `has the label ${JSON.stringify(bad)}; labels are 1 to 63 letters, digits, - or _, not starting or ending with -`;
  if (wildcard && labels.length < 2) return `would allow a whole top-level domain; name one below it, such as *.example.${base}`;
  if (base === 'internal' || base.endsWith('.internal')) return 'is an .internal name; those always resolve and need no listing';
  return undefined;
}

/** The canonical spelling of a valid pattern (lower case, no trailing dot). */
export function normalizeDomainPattern(text: string): string {
  return text.toLowerCase().replace(/\.$/, '');
}

/** Whether `name` (any case, trailing dot or not) is allowed by one of the (valid) patterns. */
export function domainAllowed(patterns: readonly string[], name: string): boolean {
  const n = normalizeDomainPattern(name);
  return patterns.some((p) => (p.startsWith('*.') ? n.endsWith(p.slice(1)) : n === p));
}
