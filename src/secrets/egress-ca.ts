import { mkdir, readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { EC_ALGORITHM, writeAtomic, type CertificateAuthority } from '../proxy/tls/ca.ts';
import * as x509 from '../proxy/tls/x509.ts';

// The CA of the egress proxy, which machines of apps with secrets trust so that their requests to
// a secret's hosts can be opened to swap placeholders for values. It is not the edge proxy's CA
// (which clients outside trust, and which is name-constrained to the apps' domain): this one must
// vouch for any host a secret names, so only machines trust it, and its key (mode 600) never
// leaves the data dir. Its leaves are made per SNI name, only for names the asking machine's app
// has a secret for.

const CA_VALIDITY_MS = 10 * 365 * 24 * 3600_000;

/** Loads `<dir>/ca.pem` and `<dir>/ca-key.pem`, creating both (key 0600, dir 0700) when absent. */
export async function loadOrCreateEgressCa(dir: string): Promise<CertificateAuthority> {
  const certPath = join(dir, 'ca.pem');
  const keyPath = join(dir, 'ca-key.pem');
  const [certPem, keyPem] = await Promise.all([readFile(certPath, 'utf8').catch(() => ''), readFile(keyPath, 'utf8').catch(() => '')]);
  if (certPem && keyPem) {
    const key = await crypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(keyPem), EC_ALGORITHM, false, ['sign']);
    return { certPem, certPath, cert: new x509.X509Certificate(certPem), key };
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const keys = await crypto.subtle.generateKey(EC_ALGORITHM, true, ['sign', 'verify']);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: [{ CN: [`Hangar egress CA (${hostname()}, ${randomBytes(4).toString('hex')})`] }, { O: ['Hangar'] }],
    notBefore: new Date(now - 3600_000),
    notAfter: new Date(now + CA_VALIDITY_MS),
    signingAlgorithm: EC_ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  // The key first, so a crash between the two writes leaves no certificate without its key.
  await writeAtomic(keyPath, x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY'), 0o600);
  const pem = cert.toString('pem') + '\n';
  await writeAtomic(certPath, pem, 0o644);
  return { certPem: pem, certPath, cert, key: keys.privateKey };
}
