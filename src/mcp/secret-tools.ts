import { z } from 'zod';
import { SecretHostSchema, SecretNameSchema } from '../protocol/app-secrets.ts';
import { appArg, CHANGES, DESTROYS, READ_ONLY, tool } from './tool-def.ts';

// Sealing for the tokenizer proxy, and app secrets (transparent mode). A robot can seal or set a
// credential it holds; nothing here (or anywhere in the API) gives one back. Changing a secret's
// hosts takes its value again, so no one can point a value they do not hold at a host of theirs.

export const secretTools = [
  tool({
    name: 'secret_seal',
    description:
      "Seal a credential for the tokenizer proxy (Fly's tokenizer protocol), so a machine can use it without ever seeing it. " +
      'Give the token, the hosts it may be sent to, and a password or from_apps; put the returned `sealed` value into the machine (env or file). ' +
      'The machine then requests plain http://<host>/... through the proxy (`proxy` in the result, e.g. with http_proxy) with headers ' +
      '`Proxy-Tokenizer: <sealed>` (and `Proxy-Authorization: Bearer <password>`); the proxy adds `Authorization: Bearer <token>` ' +
      '(or `header`/`format`) and connects to the host over HTTPS. Requests to other hosts are refused.',
    input: {
      token: z.string().min(1).meta({ description: 'The credential (an API token); it is never shown again' }),
      allowed_hosts: z.array(z.string().min(1)).min(1).meta({ description: 'Hosts it may be sent to, e.g. ["api.github.com"] (host:port for another port)' }),
      password: z.string().min(1).optional().meta({ description: 'What the machine sends as Proxy-Authorization: Bearer <password>; give this, from_apps, or no_auth' }),
      from_apps: z.array(z.string().min(1)).min(1).optional().meta({ description: "Only these apps' machines may use it (told by their private address; no password needed)" }),
      no_auth: z.boolean().optional().meta({ description: 'Let any machine that has the sealed value use it (still only towards allowed_hosts)' }),
      header: z.string().min(1).optional().meta({ description: 'Header to set instead of Authorization, e.g. X-Api-Key' }),
      format: z.string().min(1).optional().meta({ description: 'printf-style format with one %s, default "Bearer %s"; e.g. "token %s" or "%s"' }),
    },
    annotations: CHANGES,
    run: async ({ token, allowed_hosts, password, from_apps, no_auth, header, format }, { client, signal }) => {
      const sealed = await client.tokenizer.seal({
        inject_processor: { token, ...(header ? { dst: header } : {}), ...(format ? { fmt: format } : {}) },
        // None or several given: the API refuses it, saying to give one.
        ...(password ? { bearer_auth: { password } } : {}),
        ...(from_apps ? { hangar_src_auth: { allowed_apps: from_apps } } : {}),
        ...(no_auth ? { no_auth: {} } : {}),
        allowed_hosts,
      }, { signal });
      return { summary: `sealed a credential for ${allowed_hosts.join(', ')}; machines send it through ${sealed.proxy}`, data: sealed };
    },
  }),
  tool({
    name: 'secret_public_key',
    description: "The tokenizer's seal key (hex), for sealing secrets yourself with a NaCl sealed box (libsodium crypto_box_seal), and the proxy's address for machines.",
    input: {},
    annotations: READ_ONLY,
    run: async (_args, { client, signal }) => {
      const key = await client.tokenizer.publicKey({ signal });
      return { summary: `seal key ${key.seal_key}; proxy ${key.proxy}`, data: key };
    },
  }),
  tool({
    name: 'secret_set',
    description:
      "Set an app secret (transparent mode): the app's machines see only a placeholder in env var `name` (from their next start), and any request " +
      'they send to one of `hosts` (https:// or http://, e.g. with curl, gh, npm, git) has the placeholder replaced by the value on its way out, ' +
      'in any header (Basic credentials too). `header`/`format` also set that header where a request has none. Requests to other hosts carry only ' +
      'the placeholder. The value is never shown again; setting the secret again (value required) replaces it and its hosts, keeping the placeholder.',
    input: {
      app: appArg,
      name: SecretNameSchema,
      value: z.string().min(1).meta({ description: 'The credential; stored sealed, never returned' }),
      hosts: z.array(SecretHostSchema).min(1).meta({ description: 'DNS names it may be sent to, e.g. ["api.github.com"]' }),
      header: z.string().min(1).optional().meta({ description: 'Also set this header, e.g. Authorization, where a request has none' }),
      format: z.string().min(1).optional().meta({ description: 'The header value with one %s for the secret, default "Bearer %s"' }),
    },
    annotations: CHANGES,
    run: async ({ app, name, value, hosts, header, format }, { client, signal }) => {
      const secret = await client.secrets.set(app, { name, value, hosts, ...(header ? { inject: { header, ...(format ? { format } : {}) } } : {}) }, { signal });
      return { summary: `${name} set for ${secret.hosts.join(', ')}; machines of ${app} see ${secret.placeholder} from their next start`, data: secret };
    },
  }),
  tool({
    name: 'secret_list',
    description: "An app's secrets: names, hosts and placeholders (never values).",
    input: { app: appArg },
    annotations: READ_ONLY,
    run: async ({ app }, { client, signal }) => {
      const secrets = await client.secrets.list(app, { signal });
      return { summary: `${secrets.length} secret(s): ${secrets.map((s) => `${s.name} → ${s.hosts.join(',')}`).join('; ') || 'none'}`, data: { secrets } };
    },
  }),
  tool({
    name: 'secret_unset',
    description: "Remove an app secret: its placeholder is no longer replaced (at once) and leaves machines' env at their next start.",
    input: { app: appArg, name: SecretNameSchema },
    annotations: DESTROYS,
    run: async ({ app, name }, { client, signal }) => {
      await client.secrets.unset(app, name, { signal });
      return { summary: `removed ${name} from ${app}`, data: { ok: true } };
    },
  }),
];
