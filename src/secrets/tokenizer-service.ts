import { createHash } from 'node:crypto';
import { HangarError } from '../protocol/errors.ts';
import type { SealRequest, SealResponse } from '../protocol/sealed-secret.ts';
import type { SealingKeys } from './sealed-box.ts';
import { redactSecret } from './secret-rules.ts';

// Sealing for the API, the CLI and MCP. The daemon seals but never opens for anyone: only the
// tokenizer proxy opens a secret, to put it into a request to one of its allowed hosts.

export class TokenizerService {
  readonly #keys: SealingKeys;
  /** Where machines reach the proxy. */
  readonly proxyUrl: string;

  constructor(keys: SealingKeys, proxyUrl: string) {
    this.#keys = keys;
    this.proxyUrl = proxyUrl;
  }

  get sealKey(): string {
    return this.#keys.sealKeyHex;
  }

  seal(request: SealRequest): SealResponse {
    const processors = [request.inject_processor, request.inject_hmac_processor].filter(Boolean).length;
    if (processors !== 1) {
      throw new HangarError('validation_failed', 'a secret names exactly one processor', {
        hint: 'give inject_processor {token} (sent as Authorization: Bearer <token> by default) or inject_hmac_processor {key}',
      });
    }
    if ([request.bearer_auth, request.no_auth, request.hangar_src_auth].filter(Boolean).length !== 1) {
      throw new HangarError('validation_failed', 'a secret names exactly one auth rule', {
        hint: 'give bearer_auth {password} (the client sends Proxy-Authorization: Bearer <password>), hangar_src_auth {allowed_apps} (only from those apps\' machines), or no_auth {}',
      });
    }
    const src = request.hangar_src_auth;
    if (src && !src.allowed_apps?.length && !src.allowed_machines?.length) {
      throw new HangarError('validation_failed', 'hangar_src_auth names no app or machine', { hint: 'give allowed_apps or allowed_machines' });
    }
    if (!request.allowed_hosts?.length && !request.allowed_host_pattern) {
      throw new HangarError('validation_failed', 'a secret names the hosts it may be sent to', {
        hint: 'give allowed_hosts, e.g. ["api.github.com"]: a secret usable anywhere can be sent to a server that echoes it',
      });
    }
    if (request.allowed_host_pattern !== undefined) {
      try {
        new RegExp(request.allowed_host_pattern);
      } catch {
        throw new HangarError('validation_failed', 'allowed_host_pattern is not a regular expression', { hint: 'for example "^api\\\\.example\\\\.com$"' });
      }
    }
    const auth = request.bearer_auth;
    const hmac = request.inject_hmac_processor;
    const secret: Record<string, unknown> = {
      ...request,
      // Fly's tokenizer refuses an hmac secret without its hash named.
      ...(hmac ? { inject_hmac_processor: { ...hmac, hash: 'sha256' } } : {}),
      ...(auth ? { bearer_auth: { digest: 'digest' in auth ? auth.digest : createHash('sha256').update(auth.password).digest('base64') } } : {}),
    };
    return { sealed: this.#keys.seal(JSON.stringify(secret)), seal_key: this.sealKey, secret: redactSecret(secret), proxy: this.proxyUrl };
  }
}
