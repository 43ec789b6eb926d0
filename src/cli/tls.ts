import { readFile } from 'node:fs/promises';
import type { Certificate } from '../protocol/certificates.ts';
import { CliError, connect } from './connect.ts';
import { printJson, printTable } from './output.ts';
import { parseFlags } from './args.ts';

export const tlsUsage = `hangar tls <command> [--json]
  ca                                          print Hangar's CA certificate (PEM) for clients to trust, e.g.
                                              hangar tls ca > hangar-ca.pem; curl --cacert hangar-ca.pem https://myapp.localhost:4443/
                                              Debian/Ubuntu, system-wide: hangar tls ca > /usr/local/share/ca-certificates/hangar.crt
                                              && update-ca-certificates
  certs add APP --cert FILE --key FILE        serve your own certificate (PEM chain, key) for the hostnames it names,
                                              and send their requests to APP
  certs list APP | certs remove APP HOSTNAME`;

export async function tls(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const { values, positionals } = parseFlags('tls', {
    args: rest,
    allowPositionals: true,
    options: {
      json: { type: 'boolean', default: false },
      'data-dir': { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
    },
  });
  const client = connect(values['data-dir']);
  if (verb === 'ca') {
    const res = await client.raw('GET', '/v1/tls/ca.pem', undefined, { accept: 'application/x-pem-file' });
    process.stdout.write(await res.text());
    return 0;
  }
  if (verb !== 'certs') fail(`unknown command: tls ${verb ?? ''}`.trim(), tlsUsage);
  const [action, app, hostname] = positionals;
  if (!app) fail('tls certs needs an APP', tlsUsage);
  const path = `/v1/apps/${encodeURIComponent(app)}/certificates`;
  const show = (certs: Certificate[]) => {
    if (values.json) printJson(certs);
    else printTable(certs.map((c) => ({ hostname: c.hostname, issuer: c.issuer, 'not-after': c.not_after, fingerprint: c.fingerprint_sha256 })), ['hostname', 'issuer', 'not-after', 'fingerprint']);
  };
  switch (action) {
    case 'add': {
      if (!values.cert || !values.key) fail('tls certs add needs --cert FILE and --key FILE', tlsUsage);
      const body = { certificate: await readFile(values.cert, 'utf8'), private_key: await readFile(values.key, 'utf8') };
      show(((await (await client.raw('POST', path, body)).json()) as { certificates: Certificate[] }).certificates);
      return 0;
    }
    case 'list':
      show(((await (await client.raw('GET', path)).json()) as { certificates: Certificate[] }).certificates);
      return 0;
    case 'remove':
      if (!hostname) fail('tls certs remove needs APP HOSTNAME', tlsUsage);
      await client.raw('DELETE', `${path}/${encodeURIComponent(hostname)}`);
      if (!values.json) process.stdout.write(`removed the certificate for ${hostname} from ${app}\n`);
      return 0;
    default:
      fail(`unknown command: tls certs ${action ?? ''}`.trim(), tlsUsage);
  }
}

function fail(message: string, hint?: string): never {
  throw new CliError(message, hint);
}
