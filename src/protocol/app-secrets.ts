import { z } from 'zod';

// App secrets, Hangar's transparent mode of the tokenizer (beyond Fly): the value is given once
// and never shown again. Each machine of the app sees a placeholder in its env (and in files that
// name the secret); the egress proxy on the app's gateway swaps the placeholder for the value in
// requests to the secret's hosts only.

/** What every placeholder starts with, so a reader of a machine's env knows what it holds. */
export const PLACEHOLDER_PREFIX = 'hangar-sealed-';

/** Variables that name a CA bundle (OpenSSL, Node, Python's requests, curl, git): in machines of apps with secrets they point at the bundle with the egress CA (secrets/machine-trust.ts). */
export const CA_BUNDLE_ENV: readonly string[] = ['SSL_CERT_FILE', 'NODE_EXTRA_CA_CERTS', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE', 'GIT_SSL_CAINFO'];

/** Variables Hangar sets itself in machines (their identity, the egress CA bundle's path). */
const RESERVED_NAMES = new RegExp(`^(FLY_.*|HANGAR_.*|PATH|${CA_BUNDLE_ENV.join('|')})$`);

export const SecretNameSchema = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'an environment variable name: letters, digits and _, not starting with a digit')
  .refine((name) => !RESERVED_NAMES.test(name), 'a name Hangar sets in machines itself (FLY_*, HANGAR_*, PATH, or a CA bundle variable)')
  .meta({ description: 'The env var the placeholder is in, e.g. GH_TOKEN' });

// A DNS name, lowercase letters, digits, hyphens and dots; no port (the proxy serves 443 and 80),
// no wildcard (each name is answered by the app's DNS one by one).
export const SecretHostSchema = z.string().toLowerCase().regex(/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$/, 'a DNS name such as api.github.com (no port, no wildcard, not an address)')
  .meta({ description: 'A host the value may be sent to, e.g. api.github.com' });

export const SecretInjectSchema = z.strictObject({
  header: z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'an HTTP header name').default('Authorization').meta({ description: 'Header to set; default Authorization' }),
  format: z.string().refine((f) => f.split('%s').length === 2 && !/[\r\n]/.test(f), 'a format with exactly one %s, e.g. "Bearer %s"').default('Bearer %s')
    .meta({ description: 'The header value, with %s for the secret; default "Bearer %s"' }),
}).meta({ description: 'Also set this header to the formatted value on requests to the hosts that carry no such header (as Fly\'s inject_processor does). Without it, only placeholders the machine sends are replaced' });

export const AppSecretRequestSchema = z.strictObject({
  name: SecretNameSchema,
  // The message names no part of the value: validation errors are echoed back.
  value: z.string().min(1, 'the value is empty').max(65536, 'the value is longer than 64 KiB')
    .refine((v) => !/[\u0000-\u001f\u007f]/.test(v), 'the value has a control character (a newline?), which cannot go into an HTTP header')
    .meta({ description: 'The credential; stored sealed, never shown again' }),
  hosts: z.array(SecretHostSchema).min(1).max(64).meta({ description: 'Where the value may be sent (HTTPS to port 443; plain http:// requests are sent on over HTTPS too)' }),
  inject: SecretInjectSchema.optional(),
}).meta({ description: 'An app secret: machines of the app see only a placeholder; requests to `hosts` carry the value' });

export type AppSecretRequest = z.output<typeof AppSecretRequestSchema>;
/** What a client sends (inject's fields may be left out). */
export type AppSecretInput = z.input<typeof AppSecretRequestSchema>;

export const AppSecretSchema = z.object({
  name: z.string(),
  hosts: z.array(z.string()),
  inject: z.object({ header: z.string(), format: z.string() }).optional(),
  placeholder: z.string().meta({ description: 'What machines see instead of the value (env var `name`, files with secret_name)' }),
  created_at: z.string(),
  updated_at: z.string(),
}).meta({ description: 'An app secret as the API shows it: never its value' });

export type AppSecret = z.infer<typeof AppSecretSchema>;

export const AppSecretListSchema = z.object({ secrets: z.array(AppSecretSchema) });

export const SecretParams = z.object({ app_name: z.string().min(1), secret_name: z.string().min(1) });
