import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { HangarError } from '../protocol/errors.ts';
import { CaveatSchema, MAX_CAVEATS } from '../protocol/token-caveats.ts';
import {
  chainStart, chainStep, decodeToken, encodeToken, fromBase64Url, isMacaroonToken, toBase64Url, type Caveat,
} from '../protocol/token-format.ts';
import type { TokenBudget } from '../protocol/limits.ts';
import type { RevocationStore } from './revocation-store.ts';

// Who a request's token says it is. The admin token (the data dir's `token`) is the root and may
// do anything; every other token is a chain keyed by the root key in the data dir's `token-key`
// (protocol/token-format.ts), and may do what all of its caveats allow (api/access.ts decides).

/** `budgets`: one per limits caveat, in the token's order (protocol/limits.ts TokenBudget). */
export type Grant =
  | { kind: 'admin' }
  | { kind: 'token'; id: string; caveats: Caveat[]; budgets: TokenBudget[] };

const MAX_TOKEN_CHARS = 16_384;
const CaveatsSchema = z.array(CaveatSchema).max(MAX_CAVEATS);
const digest = (b: Uint8Array | string) => createHash('sha256').update(b).digest();

const AUTH_HINT = 'send Authorization: Bearer <token> (or FlyV1 <token>); the admin token is in HANGAR_TOKEN or the data dir file `token`';

/** The token of an Authorization header: `Bearer TOKEN`, or Fly's `FlyV1 TOKEN`. */
export function credentialOf(header: string | undefined): string {
  const m = /^(Bearer|FlyV1)\s+(.+)$/i.exec(header ?? '');
  if (!m) return '';
  const value = m[2]!.trim();
  // Fly sends a macaroon with its discharge tokens, comma-separated; Hangar has no third-party caveats.
  if (m[1]!.toLowerCase() === 'flyv1' && value.includes(',')) {
    throw new HangarError('unauthorized', 'FlyV1 with several tokens (discharges) is not supported', { hint: 'send one token: FlyV1 <token>' });
  }
  return value;
}

export class TokenAuthority {
  readonly #adminDigest: Buffer;
  readonly #rootKey: Uint8Array;
  readonly #revocations: RevocationStore;

  constructor(opts: { adminToken: string; rootKey: Uint8Array; revocations: RevocationStore }) {
    this.#adminDigest = digest(opts.adminToken);
    this.#rootKey = opts.rootKey;
    this.#revocations = opts.revocations;
  }

  /** Reads the root key from <dataDir>/token-key, making it (mode 600) the first time. */
  static async open(dataDir: string, adminToken: string, revocations: RevocationStore): Promise<TokenAuthority> {
    const path = join(dataDir, 'token-key');
    let text = await readFile(path, 'utf8').then((t) => t.trim(), () => '');
    if (!text) {
      text = randomBytes(32).toString('base64url');
      await writeFile(path, text + '\n', { mode: 0o600, flag: 'wx' }).catch(async (err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
        text = (await readFile(path, 'utf8')).trim();
      });
      await chmod(path, 0o600);
    }
    return new TokenAuthority({ adminToken, rootKey: Buffer.from(text, 'base64url'), revocations });
  }

  /** A new token family: only the admin may start one. */
  async mint(caveats: Caveat[]): Promise<{ token: string; id: string }> {
    const id = 'tok_' + randomBytes(12).toString('base64url');
    let key = await chainStart(this.#rootKey, id);
    for (const c of caveats) key = await chainStep(key, c);
    return { token: encodeToken({ v: 1, id, caveats, sig: toBase64Url(key) }), id };
  }

  async authenticate(token: string): Promise<Grant> {
    if (!token) throw new HangarError('unauthorized', 'missing bearer token', { hint: AUTH_HINT });
    if (!isMacaroonToken(token)) {
      if (timingSafeEqual(digest(token), this.#adminDigest)) return { kind: 'admin' };
      throw new HangarError('unauthorized', 'the bearer token is not valid', { hint: AUTH_HINT });
    }
    const { id, caveats, keys } = await this.#verify(token);
    if (keys.some((k) => this.#revocations.has(digest(k).toString('hex')))) {
      throw new HangarError('unauthorized', `the token was revoked (family ${id})`, { hint: 'ask whoever gave it to you for a new token' });
    }
    return { kind: 'token', id, caveats, budgets: budgetsOf(caveats, keys) };
  }

  /** Revokes `token` and every token attenuated from it; its ancestors keep working. */
  async revoke(token: string): Promise<{ id: string }> {
    const { id, keys } = await this.#verify(token);
    this.#revocations.add(digest(keys.at(-1)!).toString('hex'));
    return { id };
  }

  /** Revokes every token of the family `id`. */
  async revokeFamily(id: string): Promise<void> {
    this.#revocations.add(digest(await chainStart(this.#rootKey, id)).toString('hex'));
  }

  /** Checks the chain; returns every key of it (the first is the family's, the last the signature). */
  async #verify(token: string): Promise<{ id: string; caveats: Caveat[]; keys: Uint8Array[] }> {
    const invalid = (why: string) => new HangarError('unauthorized', `the bearer token is not valid: ${why}`, { hint: AUTH_HINT });
    if (token.length > MAX_TOKEN_CHARS) throw invalid(`longer than ${MAX_TOKEN_CHARS} characters`);
    let body;
    try {
      body = decodeToken(token);
    } catch (err) {
      throw invalid((err as Error).message);
    }
    const parsed = CaveatsSchema.safeParse(body.caveats);
    if (!parsed.success) throw invalid('it carries a caveat this daemon does not know, so it cannot enforce it');
    const keys = [await chainStart(this.#rootKey, body.id)];
    for (const c of body.caveats) keys.push(await chainStep(keys.at(-1)!, c));
    let sig: Uint8Array;
    try {
      sig = fromBase64Url(body.sig);
    } catch {
      throw invalid('bad signature encoding');
    }
    const last = keys.at(-1)!;
    if (sig.length !== last.length || !timingSafeEqual(sig, last)) throw invalid('its signature does not match (caveats cannot be removed or changed)');
    // The chain MACs the caveats as the token carries them; checking uses that same parse.
    return { id: body.id, caveats: body.caveats, keys };
  }
}

/**
 * A limits caveat's budget is named by the chain's key just after it: every token narrowed from
 * the one carrying it passes through that key, and no one without it can make a token that does.
 * Its digest (with a label of its own, so it is never a revocation digest) names it.
 */
function budgetsOf(caveats: Caveat[], keys: Uint8Array[]): TokenBudget[] {
  return caveats.flatMap((c, i) => c.type === 'limits'
    ? [{ id: 'tb_' + createHash('sha256').update('hangar-token-budget/v1\n').update(keys[i + 1]!).digest('base64url').slice(0, 22), limits: c.limits, caveatIndex: i }]
    : []);
}
