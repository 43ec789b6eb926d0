import { z } from 'zod';

// The secret a client seals to the tokenizer, in Fly's tokenizer wire format (its secret.go,
// processor.go, authorizer.go): one processor, one auth rule, and the hosts it may be sent to.
// Byte fields are base64, as Go's encoding/json writes []byte. Hangar implements the processors
// that put a credential into a header (inject, inject_hmac) and the auth rules bearer_auth and
// no_auth, plus one of its own: hangar_src_auth (only from these apps or machines, told by the
// request's source address on the app's network). A secret naming another is refused where it is
// used, with the reason.

const HeaderFormat = {
  fmt: z.string().optional().meta({ description: 'printf-style format with one %s (inject) or %x/%X (hmac); default "Bearer %s" / "Bearer %x"' }),
  allowed_fmt: z.array(z.string()).optional().meta({ description: 'Formats the client may pick per request (the `fmt` param); the first is the default' }),
  dst: z.string().optional().meta({ description: 'Header to set; default Authorization' }),
  allowed_dst: z.array(z.string()).optional().meta({ description: 'Headers the client may pick per request (the `dst` param); the first is the default' }),
};

const Base64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64');

const InjectProcessorSchema = z.object({
  token: z.string().min(1).meta({ description: 'The credential, injected verbatim (formatted by fmt)' }),
  ...HeaderFormat,
});

const InjectHmacProcessorSchema = z.object({
  key: Base64.min(1).meta({ description: 'The HMAC key, base64' }),
  hash: z.enum(['sha256', '']).optional().meta({ description: 'Only sha256' }),
  ...HeaderFormat,
});

const BearerAuthSchema = z.object({
  digest: Base64.meta({ description: "base64 of SHA-256 of the password the client sends as Proxy-Authorization: Bearer <password>" }),
});

const HangarSrcAuthSchema = z.object({
  allowed_apps: z.array(z.string().min(1)).optional().meta({ description: "Only requests from these apps' machines (their private addresses) may use it" }),
  allowed_machines: z.array(z.string().min(1)).optional().meta({ description: 'Only requests from these machines (ids) may use it' }),
});

/** What the tokenizer opens: unknown fields are ignored (as Go does) and checked by the proxy. */
export const SealedSecretSchema = z.object({
  inject_processor: InjectProcessorSchema.optional(),
  inject_hmac_processor: InjectHmacProcessorSchema.optional(),
  bearer_auth: BearerAuthSchema.optional(),
  no_auth: z.object({}).optional(),
  hangar_src_auth: HangarSrcAuthSchema.optional(),
  allowed_hosts: z.array(z.string()).optional(),
  allowed_host_pattern: z.string().optional(),
}).loose();

export type SealedSecret = z.infer<typeof SealedSecretSchema>;

/** The processors and auth rules of Fly's format that Hangar does not implement. */
export const UNSUPPORTED_PROCESSORS = ['inject_body_processor', 'oauth2_processor', 'oauth2_body_processor', 'sigv4_processor', 'jwt_processor', 'client_credentials_processor', 'github_app_processor', 'multi_processor'];
export const UNSUPPORTED_AUTH = ['macaroon_auth', 'flyio_macaroon_auth', 'fly_src_auth'];

/**
 * POST /v1/tokenizer/seal: the secret in Fly's format, except that bearer_auth may name the
 * password itself (the daemon stores only its digest in the sealed box) and that at least one
 * allowed host is required: a secret usable against any host can be echoed back in clear.
 */
export const SealRequestSchema = z.strictObject({
  inject_processor: InjectProcessorSchema.optional(),
  inject_hmac_processor: InjectHmacProcessorSchema.optional(),
  bearer_auth: z.union([
    BearerAuthSchema.strict(),
    z.strictObject({ password: z.string().min(1).meta({ description: 'The Proxy-Authorization bearer the client will send; only its SHA-256 is sealed' }) }),
  ]).optional(),
  no_auth: z.strictObject({}).optional().meta({ description: 'Anyone who can reach the tokenizer may use the secret (its allowed hosts still apply)' }),
  hangar_src_auth: HangarSrcAuthSchema.strict().optional().meta({ description: "Hangar's own rule (beyond Fly): only requests from the named apps' or machines' private addresses, through their gateway, may use it" }),
  allowed_hosts: z.array(z.string().min(1)).optional().meta({ description: 'Hosts (host[:port], as in the request URL) the secret may be sent to' }),
  allowed_host_pattern: z.string().min(1).optional().meta({ description: 'A regular expression the host must match, instead of or as well as allowed_hosts' }),
}).meta({ description: "A secret in Fly tokenizer's format: exactly one processor, exactly one auth rule, and allowed hosts" });

export type SealRequest = z.infer<typeof SealRequestSchema>;

export const SealResponseSchema = z.object({
  sealed: z.string().meta({ description: 'base64 sealed box: send it as the Proxy-Tokenizer header (optionally followed by "; {json params}")' }),
  seal_key: z.string().meta({ description: "The tokenizer's public key (hex) it was sealed to" }),
  secret: z.record(z.string(), z.unknown()).meta({ description: 'What was sealed, with the credential, key and digest replaced by REDACTED' }),
  proxy: z.string().meta({ description: 'Where machines reach the tokenizer proxy (http://_tokenizer.internal:PORT)' }),
});

export type SealResponse = z.infer<typeof SealResponseSchema>;

export const PublicKeyResponseSchema = z.object({
  seal_key: z.string().meta({ description: 'X25519 public key, hex: seal secrets to it with a NaCl anonymous sealed box (libsodium crypto_box_seal)' }),
  proxy: z.string(),
});

export type PublicKeyResponse = z.infer<typeof PublicKeyResponseSchema>;
