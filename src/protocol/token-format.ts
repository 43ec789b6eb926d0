// Hangar's narrowable bearer tokens: a macaroon-style HMAC-SHA256 chain (Birgisson et al. 2014,
// first-party caveats only). Shared by the daemon, which mints and verifies, and the SDK, which
// attenuates offline; so it uses WebCrypto only and imports nothing.
//
//   key_0 = HMAC(root key, "hangar-token/v1\n" + id)
//   key_i = HMAC(key_{i-1}, JSON.stringify(caveat_i))
//   sig   = key_n
//
// A holder appends a caveat by computing key_{n+1} from the signature it holds; it cannot go
// back, because that would mean inverting HMAC. Removing or editing any caveat breaks the chain.
// The wire form is `hm1_` + base64url(JSON {v, id, caveats, sig}). The caveat bytes MACed are
// JSON.stringify of the caveat as parsed, so what is checked is exactly what was signed.
//
// No library fits: the npm `macaroon` package (libmacaroons/go-macaroon formats) carries sjcl and
// tweetnacl, synchronous pure-JS crypto and third-party caveats Hangar has no use for, and the
// SDK imports no other package.

export const TOKEN_PREFIX = 'hm1_';
const CHAIN_LABEL = 'hangar-token/v1\n';

export const TOKEN_ACTIONS = ['read', 'write', 'exec', 'control', 'delete'] as const;
export type TokenAction = (typeof TOKEN_ACTIONS)[number];

/** One exec command a `commands` caveat allows: argv exactly, or argv followed by anything. */
export type CommandRule = { argv: string[]; prefix?: boolean };

export type Caveat =
  /** Only these apps, each with the actions allowed on it. */
  | { type: 'apps'; apps: Record<string, TokenAction[]> }
  /** Only calls naming one of these machines (by id); calls naming none may only read. */
  | { type: 'machines'; machines: string[] }
  /** Exec only these commands. */
  | { type: 'commands'; commands: CommandRule[] }
  /** Unix seconds; either bound may be absent. */
  | { type: 'validity'; not_before?: number; not_after?: number }
  /** Only requests arriving from this machine's private address (through its _api.internal). */
  | { type: 'from_machine'; machine: string }
  /**
   * Limits on what this token, and every token narrowed from it, may hold and how fast it may
   * ask, together: one budget, on top of the apps' own limits.
   */
  | { type: 'limits'; limits: TokenLimits };

/** The fields of an app's limits (protocol/limits.ts), any of them. */
export type TokenLimits = {
  machines?: number;
  running_machines?: number;
  memory_mb?: number;
  cpus?: number;
  volumes?: number;
  volume_gb?: number;
  creates_per_minute?: number;
  starts_per_second?: number;
  start_burst?: number;
};

export type TokenBody = { v: 1; id: string; caveats: Caveat[]; sig: string };

const encoder = new TextEncoder();

export function isMacaroonToken(token: string): boolean {
  return token.startsWith(TOKEN_PREFIX);
}

/** Reads a token's parts without checking its signature (that needs the daemon's key). */
export function decodeToken(token: string): TokenBody {
  if (!isMacaroonToken(token)) throw new TypeError(`not a Hangar token (it does not start with ${TOKEN_PREFIX})`);
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder().decode(fromBase64Url(token.slice(TOKEN_PREFIX.length))));
  } catch {
    throw new TypeError('not a Hangar token (its body is not base64url JSON)');
  }
  const b = body as Partial<TokenBody>;
  if (b?.v !== 1 || typeof b.id !== 'string' || typeof b.sig !== 'string' || !Array.isArray(b.caveats) ||
      !b.caveats.every((c) => typeof c === 'object' && c !== null && typeof (c as { type?: unknown }).type === 'string')) {
    throw new TypeError('not a Hangar token (unknown version or shape)');
  }
  return b as TokenBody;
}

export function encodeToken(body: TokenBody): string {
  return TOKEN_PREFIX + toBase64Url(encoder.encode(JSON.stringify(body)));
}

/** The first key of a token's chain; only the holder of the root key can compute it. */
export async function chainStart(rootKey: Uint8Array, id: string): Promise<Uint8Array> {
  return hmac(rootKey, CHAIN_LABEL + id);
}

export async function chainStep(key: Uint8Array, caveat: Caveat): Promise<Uint8Array> {
  return hmac(key, JSON.stringify(caveat));
}

/**
 * Appends caveats to a token, with no call to the daemon: the result allows at most what the
 * token allowed, and less by each caveat.
 */
export async function attenuate(token: string, caveats: Caveat[]): Promise<string> {
  const body = decodeToken(token);
  let key = fromBase64Url(body.sig);
  for (const caveat of caveats) key = await chainStep(key, caveat);
  return encodeToken({ ...body, caveats: [...body.caveats, ...caveats], sig: toBase64Url(key) });
}

async function hmac(key: Uint8Array, data: string): Promise<Uint8Array> {
  const k = await crypto.subtle.importKey('raw', key as Uint8Array<ArrayBuffer>, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return new Uint8Array(await crypto.subtle.sign('HMAC', k, encoder.encode(data)));
}

export function toBase64Url(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function fromBase64Url(text: string): Uint8Array {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new TypeError('not base64url');
  const s = atob(text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4));
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}
