import type { webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '../../src/proxy/tls/x509.ts';

// Certificates made by a test, the way an outside CA would issue them for an upload.

const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 24 * 3600_000;

export type TestCa = { certPem: string; cert: x509.X509Certificate; keys: webcrypto.CryptoKeyPair };

export async function makeTestCa(name = 'Test CA'): Promise<TestCa> {
  const keys = await crypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=${name}`,
    notBefore: new Date(Date.now() - DAY_MS),
    notAfter: new Date(Date.now() + 30 * DAY_MS),
    signingAlgorithm: EC,
    keys,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  return { certPem: cert.toString('pem') + '\n', cert, keys };
}

/** A server certificate for `hostnames` (IP addresses among them as IP SANs) signed by `ca`, with its key, as PEM. */
export async function makeTestCert(ca: TestCa, hostnames: string[], opts: { notBefore?: Date; notAfter?: Date } = {}): Promise<{ certPem: string; keyPem: string }> {
  const keys = await crypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.create({
    subject: `CN=${hostnames[0] ?? 'no name'}`,
    issuer: ca.cert.subject,
    notBefore: opts.notBefore ?? new Date(Date.now() - DAY_MS),
    notAfter: opts.notAfter ?? new Date(Date.now() + 30 * DAY_MS),
    signingAlgorithm: EC,
    publicKey: keys.publicKey,
    signingKey: ca.keys.privateKey,
    extensions: hostnames.length ? [new x509.SubjectAlternativeNameExtension(hostnames.map((value) => ({ type: isIP(value) ? 'ip' as const : 'dns' as const, value })))] : [],
  });
  const keyPem = x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
  return { certPem: cert.toString('pem') + '\n', keyPem };
}
