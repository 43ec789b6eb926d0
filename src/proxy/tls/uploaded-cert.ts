import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { HangarError } from '../../protocol/errors.ts';
import * as x509 from './x509.ts';

// Checks a certificate chain and key someone uploads for an app, so that a bad one is refused
// with a reason at upload time rather than failing later in a client's handshake.

export type UploadedCertificate = {
  /** DNS names from the leaf's subjectAltName, lowercase; `*.example.com` for a wildcard. */
  hostnames: string[];
  /** The chain as PEM, leaf first. */
  chainPem: string;
  keyPem: string;
  subject: string;
  issuer: string;
  notBefore: string;
  notAfter: string;
  /** SHA-256 of the leaf's DER, colon-separated hex. */
  fingerprint: string;
};

const HOSTNAME = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

export function parseUpload(certificatePem: string, privateKeyPem: string, now = Date.now()): UploadedCertificate {
  const blocks = certificatePem.match(PEM_CERT) ?? [];
  if (blocks.length === 0) {
    throw invalid('certificate holds no PEM certificate (-----BEGIN CERTIFICATE-----)', 'send the certificate chain as PEM, the server certificate first, then its intermediates');
  }
  const chain = blocks.map((pem, i) => {
    try {
      return new X509Certificate(pem);
    } catch (err) {
      throw invalid(`certificate ${i + 1} of the chain does not parse: ${(err as Error).message}`, 'send the PEM exactly as your CA issued it');
    }
  });
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!chain[i]!.checkIssued(chain[i + 1]!) || !chain[i]!.verify(chain[i + 1]!.publicKey)) {
      throw invalid(`certificate ${i + 1} of the chain was not issued by certificate ${i + 2}`, 'order the chain leaf first, then each issuer after the certificate it signed');
    }
  }
  const leaf = chain[0]!;

  let key: KeyObject;
  try {
    key = createPrivateKey(privateKeyPem);
  } catch (err) {
    throw invalid(`private_key does not parse: ${(err as Error).message}`, 'send the unencrypted private key as PEM (-----BEGIN PRIVATE KEY----- or -----BEGIN EC/RSA PRIVATE KEY-----)');
  }
  if (!leaf.checkPrivateKey(key)) {
    throw new HangarError('certificate_key_mismatch', `private_key is not the key of the certificate for ${leaf.subject.replace(/\n/g, ', ')}`, {
      hint: 'send the key the certificate was issued for; the first certificate in the chain must be the server certificate',
    });
  }

  const notBefore = new Date(leaf.validFrom);
  const notAfter = new Date(leaf.validTo);
  if (notAfter.getTime() <= now) {
    throw new HangarError('certificate_expired', `the certificate expired at ${notAfter.toISOString()}`, { hint: 'renew it with its CA and upload the new one', details: { not_after: notAfter.toISOString() } });
  }
  if (notBefore.getTime() > now) {
    throw invalid(`the certificate is not valid before ${notBefore.toISOString()}`, 'check the issuing machine\'s clock, or upload it once it is valid');
  }

  const hostnames = dnsNames(leaf);
  if (hostnames.length === 0) {
    throw invalid('the certificate names no DNS hostname in its subjectAltName', 'issue it with subjectAltName DNS:<hostname>; clients ignore the common name');
  }
  const bad = hostnames.find((h) => !HOSTNAME.test(h));
  if (bad) throw invalid(`${JSON.stringify(bad)} in the certificate's subjectAltName is not a hostname Hangar can serve`, 'use DNS names (a leading *. for a wildcard)');

  const chainPem = chain.map((c) => c.toString().trim()).join('\n') + '\n';
  const keyPem = key.export({ type: 'pkcs8', format: 'pem' }).toString();
  try {
    createSecureContext({ cert: chainPem, key: keyPem });
  } catch (err) {
    throw invalid(`the certificate cannot be served: ${(err as Error).message}`, 'use an RSA (2048 bits or more) or ECDSA P-256/P-384 key');
  }
  return {
    hostnames,
    chainPem,
    keyPem,
    subject: leaf.subject.replace(/\n/g, ', '),
    issuer: leaf.issuer.replace(/\n/g, ', '),
    notBefore: notBefore.toISOString(),
    notAfter: notAfter.toISOString(),
    fingerprint: leaf.fingerprint256,
  };
}

function dnsNames(leaf: X509Certificate): string[] {
  const san = new x509.X509Certificate(leaf.raw).getExtension(x509.SubjectAlternativeNameExtension);
  const names = (san?.names.items ?? []).filter((n) => n.type === 'dns').map((n) => n.value.toLowerCase().replace(/\.$/, ''));
  return [...new Set(names)];
}

function invalid(message: string, hint: string): HangarError {
  return new HangarError('invalid_certificate', message, { hint });
}
