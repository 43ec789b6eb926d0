import { HangarError } from '../protocol/errors.ts';
import { readCapped, sanitize } from './registry-body.ts';

// The registry auth handshake (distribution's token spec): the registry answers 401 with a
// `WWW-Authenticate` challenge; for `Bearer` the client asks the named realm for a token scoped
// to the repository, for `Basic` it sends the credentials directly. Whether the realm may be asked
// at all is the caller's `fetchOrThrow`'s to decide (see registry-target.ts).

const TOKEN_RESPONSE_MAX_BYTES = 1024 * 1024;

export type Credentials = { username: string; password: string };

export type Challenge = { scheme: string; params: Record<string, string> };

export function parseChallenge(header: string): Challenge | undefined {
  const m = /^\s*(\w+)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))/g;
  for (const p of (m[2] ?? '').matchAll(re)) {
    params[(p[1] as string).toLowerCase()] = (p[2] ?? p[3] ?? '').replace(/\\(.)/g, '$1');
  }
  return { scheme: (m[1] as string).toLowerCase(), params };
}

export function basicHeader(creds: Credentials): string {
  return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
}

export function authFailed(registry: string, why: string, hasCreds: boolean): HangarError {
  return new HangarError('registry_auth_failed', `registry ${registry} refused access: ${why}`, {
    hint: hasCreds
      ? `check the credentials configured for ${registry} and that the repository exists`
      : `configure credentials for ${registry} (or check the repository name; some registries answer 401 for unknown repositories)`,
    details: { registry },
  });
}

export async function fetchBearerToken(options: {
  challenge: Challenge;
  registry: string;
  defaultScope: string;
  creds: Credentials | undefined;
  signal: AbortSignal | undefined;
  fetchOrThrow: (url: string, init: RequestInit) => Promise<Response>;
}): Promise<string> {
  const { challenge, registry, creds } = options;
  const realm = challenge.params['realm'];
  if (!realm) throw authFailed(registry, 'the Bearer challenge names no realm', creds !== undefined);
  let url: URL;
  try {
    url = new URL(realm);
  } catch {
    throw authFailed(registry, `the token realm "${sanitize(realm, [], 100)}" is not a URL`, creds !== undefined);
  }
  if (challenge.params['service']) url.searchParams.set('service', challenge.params['service']);
  url.searchParams.set('scope', challenge.params['scope'] ?? options.defaultScope);
  const headers: Record<string, string> = {};
  if (creds) headers['authorization'] = basicHeader(creds);
  const res = await options.fetchOrThrow(url.toString(), { headers, signal: options.signal });
  if (res.status === 401 || res.status === 403) {
    await res.body?.cancel();
    throw authFailed(registry, `the token service answered ${res.status}`, creds !== undefined);
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new HangarError('registry_error', `token service of ${registry} answered ${res.status}`, {
      hint: 'retry later; if it persists the registry is misconfigured',
      details: { registry, status: res.status },
    });
  }
  const bytes = await readCapped(res, TOKEN_RESPONSE_MAX_BYTES);
  if (!bytes) throw authFailed(registry, `the token service sent more than ${TOKEN_RESPONSE_MAX_BYTES} bytes`, creds !== undefined);
  let body: { token?: unknown; access_token?: unknown } = {};
  try {
    body = JSON.parse(bytes.toString('utf8')) as typeof body;
  } catch {
    // no token in it: reported below
  }
  const token = typeof body?.token === 'string' ? body.token : typeof body?.access_token === 'string' ? body.access_token : undefined;
  if (!token) throw authFailed(registry, 'the token service returned no token', creds !== undefined);
  return token;
}
