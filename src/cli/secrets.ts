import { text } from 'node:stream/consumers';
import type { SealResponse } from '../protocol/sealed-secret.ts';
import { CliError, connect } from './connect.ts';
import { ago, printJson, printTable } from './output.ts';
import { parseFlags } from './args.ts';

// Sealed secrets for the tokenizer proxy, and app secrets (transparent mode). A credential is read
// from stdin, never from the command line, where every user of the host can read it (ps, /proc,
// shell history).

export const secretsUsage = `hangar secrets <command> [--json]
  seal --host HOST... (--password PASSWORD | --from-app APP... | --no-auth) [--header NAME] [--format FMT]
                                              read a credential from stdin and seal it for the tokenizer proxy; prints
                                              the sealed value (Fly tokenizer format). A machine then sends
                                              http://HOST/... through http://_tokenizer.internal:4281 with
                                              Proxy-Tokenizer: <sealed> and Proxy-Authorization: Bearer <PASSWORD>
                                              (--from-app: no password, only that app's machines may use it);
                                              the proxy adds Authorization: Bearer <credential> (or --header NAME,
                                              formatted by --format, e.g. "token %s") and goes on over HTTPS, to
                                              HOST only. e.g. printf %s "$GH_TOKEN" | hangar secrets seal --host api.github.com --password p
  public-key                                  the seal key (hex), for sealing with any NaCl sealed-box library
  set APP NAME --host HOST... [--header NAME [--format FMT]]
                                              read a value from stdin and make it an app secret (transparent mode):
                                              the app's machines see only a placeholder in env var NAME (at their next
                                              start), and requests they send to HOST (https:// or http://) carry the
                                              value in its place; --header also sets that header (FMT default
                                              "Bearer %s") where a request has none.
                                              e.g. printf %s "$GH_TOKEN" | hangar secrets set my-app GH_TOKEN --host api.github.com
  list APP                                    the app's secrets: names, hosts and placeholders, never values
  unset APP NAME                              remove a secret (its placeholder is replaced no more)`;

export async function secrets(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const { values, positionals } = parseFlags('secrets', {
    args: rest,
    allowPositionals: true,
    options: {
      json: { type: 'boolean', default: false },
      'data-dir': { type: 'string' },
      host: { type: 'string', multiple: true, default: [] },
      password: { type: 'string' },
      'from-app': { type: 'string', multiple: true, default: [] },
      'no-auth': { type: 'boolean', default: false },
      header: { type: 'string' },
      format: { type: 'string' },
    },
  });
  const client = connect(values['data-dir']);
  switch (verb) {
    case 'public-key': {
      const key = await client.tokenizer.publicKey();
      if (values.json) printJson(key);
      else process.stdout.write(`${key.seal_key}\n`);
      return 0;
    }
    case 'seal': {
      if (values.host.length === 0) fail('secrets seal needs --host HOST (where the credential may be sent)');
      const fromApps = values['from-app'];
      if ([!!values.password, fromApps.length > 0, values['no-auth']].filter(Boolean).length !== 1) {
        fail('secrets seal needs one of --password PASSWORD (what machines send as Proxy-Authorization: Bearer), --from-app APP or --no-auth');
      }
      if (process.stdin.isTTY) fail('secrets seal reads the credential from stdin', 'pipe it in: printf %s "$TOKEN" | hangar secrets seal --host ...');
      const token = (await text(process.stdin)).replace(/\r?\n$/, '');
      if (!token) fail('stdin was empty: there is no credential to seal');
      const sealed: SealResponse = await client.tokenizer.seal({
        inject_processor: { token, ...(values.header ? { dst: values.header } : {}), ...(values.format ? { fmt: values.format } : {}) },
        ...(values.password ? { bearer_auth: { password: values.password } } : fromApps.length ? { hangar_src_auth: { allowed_apps: fromApps } } : { no_auth: {} }),
        allowed_hosts: values.host,
      });
      if (values.json) printJson(sealed);
      else process.stdout.write(`${sealed.sealed}\n`);
      return 0;
    }
    case 'set': {
      const [app, name] = positionals;
      if (!app || !name) fail('secrets set needs APP and NAME (the env var machines see the placeholder in)');
      if (values.host.length === 0) fail('secrets set needs --host HOST (where the value may be sent)');
      if (values.format && !values.header) fail('--format needs --header NAME');
      if (process.stdin.isTTY) fail('secrets set reads the value from stdin', 'pipe it in: printf %s "$TOKEN" | hangar secrets set APP NAME --host ...');
      const value = (await text(process.stdin)).replace(/\r?\n$/, '');
      if (!value) fail('stdin was empty: there is no value to set');
      const secret = await client.secrets.set(app, {
        name, value, hosts: values.host,
        ...(values.header ? { inject: { header: values.header, ...(values.format ? { format: values.format } : {}) } } : {}),
      });
      if (values.json) printJson(secret);
      else process.stdout.write(`${secret.name} set for ${secret.hosts.join(', ')}; machines see ${secret.placeholder} (at their next start)\n`);
      return 0;
    }
    case 'list': {
      const app = positionals[0] ?? fail('secrets list needs APP');
      const list = await client.secrets.list(app);
      if (values.json) printJson(list);
      else printTable(list.map((s) => ({ NAME: s.name, HOSTS: s.hosts.join(','), INJECT: s.inject ? `${s.inject.header}: ${s.inject.format}` : '', PLACEHOLDER: s.placeholder, UPDATED: ago(s.updated_at) })), ['NAME', 'HOSTS', 'INJECT', 'PLACEHOLDER', 'UPDATED']);
      return 0;
    }
    case 'unset': {
      const [app, name] = positionals;
      if (!app || !name) fail('secrets unset needs APP and NAME');
      await client.secrets.unset(app, name);
      if (!values.json) process.stdout.write(`${name} removed from ${app}\n`);
      return 0;
    }
    default:
      fail(`unknown command: secrets ${verb ?? ''}`.trim());
  }
}

function fail(message: string, hint = '`hangar secrets --help` shows the usage'): never {
  throw new CliError(message, hint);
}
