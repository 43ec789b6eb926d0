import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { HangarError } from '../protocol/errors.ts';
import { SealedSecretSchema, UNSUPPORTED_AUTH, UNSUPPORTED_PROCESSORS, type SealedSecret } from '../protocol/sealed-secret.ts';

// What an opened secret allows, as Fly's tokenizer decides it: who may use it (auth), where it
// may go (allowed hosts) and what it puts into the request (processor). Every error here names
// the rule that failed and never the secret's values.

/** Request-time parameters, the JSON after `;` in a Proxy-Tokenizer header (dst, fmt, msg). */
export type ProcessorParams = Record<string, string>;

/** Sets one header of the outgoing request; `body` is the request body, for processors that sign it. */
export type Injection = { needsBody: boolean; header(body: Buffer | undefined): { name: string; value: string } };

export function parseOpenedSecret(json: Uint8Array): SealedSecret {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(json).toString('utf8'));
  } catch {
    throw invalid('the sealed secret is not JSON');
  }
  const parsed = SealedSecretSchema.safeParse(value);
  if (!parsed.success) throw invalid(`the sealed secret is malformed at ${parsed.error.issues.map((i) => i.path.join('.') || '(top)').join(', ')}`);
  const secret = parsed.data;
  const unsupported = [...UNSUPPORTED_PROCESSORS, ...UNSUPPORTED_AUTH].find((k) => k in secret);
  if (unsupported) throw invalid(`the sealed secret uses ${unsupported}, which Hangar's tokenizer does not implement`, 'seal it with inject_processor or inject_hmac_processor and bearer_auth or no_auth');
  const processors = ['inject_processor', 'inject_hmac_processor'].filter((k) => secret[k as keyof SealedSecret] !== undefined);
  if (processors.length !== 1) throw invalid('the sealed secret must name exactly one processor');
  const auths = ['bearer_auth', 'no_auth', 'hangar_src_auth'].filter((k) => secret[k as keyof SealedSecret] !== undefined);
  if (auths.length !== 1) throw invalid('the sealed secret must name exactly one auth rule');
  return secret;
}

/** The secret with its credential, key and digest replaced, safe to show and log (Fly's StripHazmat). */
export function redactSecret(secret: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...secret };
  const inject = secret.inject_processor as Record<string, unknown> | undefined;
  if (inject) out.inject_processor = { ...inject, token: 'REDACTED' };
  const hmac = secret.inject_hmac_processor as Record<string, unknown> | undefined;
  if (hmac) out.inject_hmac_processor = { ...hmac, key: 'REDACTED' };
  if (secret.bearer_auth) out.bearer_auth = { digest: 'REDACTED' };
  return out;
}

/**
 * Bearer tokens from the Proxy-Authorization headers, as Fly reads them: `Bearer x`, `FlyV1 x`,
 * and the password of `Basic base64(user:password)` (also URL-unescaped).
 */
function proxyAuthorizationTokens(values: string[]): string[] {
  const tokens: string[] = [];
  for (const value of values) {
    const space = value.indexOf(' ');
    if (space < 0) continue;
    const scheme = value.slice(0, space);
    const rest = value.slice(space + 1);
    if (scheme === 'Bearer' || scheme === 'FlyV1') tokens.push(rest);
    else if (scheme === 'Basic') {
      const raw = Buffer.from(rest, 'base64').toString('utf8');
      const colon = raw.indexOf(':');
      if (colon < 0) continue;
      const password = raw.slice(colon + 1);
      tokens.push(password);
      try {
        tokens.push(decodeURIComponent(password.replace(/\+/g, ' ')));
      } catch {
        /* not URL-escaped */
      }
    }
  }
  return tokens;
}

/** The machine a request came from, told by its private address; undefined from the host. */
export type RequestSource = { app: string; machine: string };

export function authorize(secret: SealedSecret, proxyAuthorization: string[], source: RequestSource | undefined): void {
  if (secret.no_auth) return;
  const src = secret.hangar_src_auth;
  if (src) {
    const apps = src.allowed_apps ?? [];
    const machines = src.allowed_machines ?? [];
    if (source && (apps.length > 0 || machines.length > 0) && (apps.length === 0 || apps.includes(source.app)) && (machines.length === 0 || machines.includes(source.machine))) return;
    throw new HangarError('proxy_auth_failed', source
      ? `the secret's hangar_src_auth does not accept requests from machine ${source.machine} of app ${source.app}`
      : "the secret's hangar_src_auth accepts requests only from machines, through their app's gateway", {
      hint: 'send the request from a machine the secret names (allowed_apps, allowed_machines), through http://_tokenizer.internal:4281',
    });
  }
  const digest = Buffer.from(secret.bearer_auth!.digest, 'base64');
  for (const token of proxyAuthorizationTokens(proxyAuthorization)) {
    const mine = createHash('sha256').update(token).digest();
    if (digest.length === mine.length && timingSafeEqual(digest, mine)) return;
  }
  throw new HangarError('proxy_auth_failed', 'the secret\'s bearer_auth does not accept this request\'s Proxy-Authorization', {
    hint: 'send Proxy-Authorization: Bearer <the password whose SHA-256 was sealed as bearer_auth.digest>',
  });
}

/**
 * Hangar requires a host rule: without one Fly sends a secret anywhere, including to a server
 * that echoes it back. `host` is the request URL's host[:port], compared as Fly does (exactly,
 * here case-insensitively; a pattern is an unanchored regular expression).
 */
export function checkHost(secret: SealedSecret, host: string): void {
  const hosts = secret.allowed_hosts;
  const pattern = secret.allowed_host_pattern;
  if (!hosts?.length && !pattern) {
    throw new HangarError('host_not_allowed', 'the sealed secret names no allowed hosts, so it is sent nowhere', {
      hint: 'seal it again with allowed_hosts (or allowed_host_pattern) naming the API it is for',
    });
  }
  const lower = host.toLowerCase();
  if (hosts?.some((h) => h.toLowerCase() === lower)) return;
  if (pattern && safeRegExp(pattern)?.test(host)) return;
  throw new HangarError('host_not_allowed', `the sealed secret may not be sent to ${host}`, {
    hint: 'send it only to a host named in its allowed_hosts (or matching allowed_host_pattern)',
  });
}

function safeRegExp(pattern: string): RegExp | undefined {
  try {
    return new RegExp(pattern);
  } catch {
    return undefined;
  }
}

export function injection(secret: SealedSecret, params: ProcessorParams): Injection {
  const inject = secret.inject_processor;
  if (inject) {
    const value = applyFormat(inject, params, false, inject.token);
    const name = destination(inject, params);
    return { needsBody: false, header: () => ({ name, value }) };
  }
  const hmac = secret.inject_hmac_processor!;
  const key = Buffer.from(hmac.key, 'base64');
  if (key.length === 0) throw invalid('the sealed hmac key is empty');
  const name = destination(hmac, params);
  // Fails before any upstream work if the format is not allowed.
  applyFormat(hmac, params, true, Buffer.alloc(0));
  const message = params.msg;
  return {
    needsBody: message === undefined,
    header: (body) => {
      const mac = createHmac('sha256', key).update(message ?? body ?? Buffer.alloc(0)).digest();
      return { name, value: applyFormat(hmac, params, true, mac) };
    },
  };
}

type Formats = { fmt?: string; allowed_fmt?: string[]; dst?: string; allowed_dst?: string[] };

/** Fly's FmtProcessor.ApplyFmt: one %s (text) or %x/%X (bytes), from the secret or an allowed param. */
function applyFormat(rule: Formats, params: ProcessorParams, isBinary: boolean, arg: string | Buffer): string {
  const format = params.fmt ?? (rule.fmt || rule.allowed_fmt?.[0] || (isBinary ? 'Bearer %x' : 'Bearer %s'));
  if (rule.fmt !== undefined && rule.fmt !== '' && format !== rule.fmt) throw badParam('fmt');
  if (rule.allowed_fmt && !rule.allowed_fmt.includes(format)) throw badParam('fmt');
  const i = format.indexOf('%');
  if (i < 0 || i === format.length - 1) throw badParam('fmt');
  const verb = format[i + 1];
  if (format.indexOf('%', i + 2) >= 0) throw badParam('fmt');
  let text: string;
  if (verb === 's' && !isBinary) text = arg as string;
  else if ((verb === 'x' || verb === 'X') && isBinary) text = (arg as Buffer).toString('hex');
  else throw badParam('fmt');
  if (verb === 'X') text = text.toUpperCase();
  return format.slice(0, i) + text + format.slice(i + 2);
}

/** Fly's DstProcessor.ApplyDst: the header, from the secret or an allowed param; Authorization by default. */
function destination(rule: Formats, params: ProcessorParams): string {
  const dst = (params.dst ?? (rule.dst || rule.allowed_dst?.[0] || 'Authorization')).toLowerCase();
  if (rule.dst && dst !== rule.dst.toLowerCase()) throw badParam('dst');
  if (rule.allowed_dst && !rule.allowed_dst.some((a) => a.toLowerCase() === dst)) throw badParam('dst');
  if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(dst)) throw badParam('dst');
  return dst;
}

function badParam(name: 'fmt' | 'dst'): HangarError {
  return invalid(`the ${name} asked for is not one the sealed secret allows`, `leave out the ${name} parameter, or use one listed in the secret's ${name}/allowed_${name}`);
}

function invalid(message: string, hint = 'seal the secret again with POST /v1/tokenizer/seal (or `hangar secrets seal`)'): HangarError {
  return new HangarError('secret_invalid', message, { hint });
}
