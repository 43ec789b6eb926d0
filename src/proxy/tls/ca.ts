import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { randomBytes, type webcrypto } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { GeneralName, GeneralSubtree, GeneralSubtrees, NameConstraints, id_ce_nameConstraints } from '@peculiar/asn1-x509';
import { HangarError } from '../../protocol/errors.ts';
import * as x509 from './x509.ts';

// Hangar's own certificate authority, made at first start. Clients trust it to reach apps over
// HTTPS; it is name-constrained to the proxy's domain, so even a leaked key cannot vouch for
// any other site a client trusting it visits.

export const EC_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const CA_VALIDITY_MS = 10 * 365 * 24 * 3600_000;

export type CertificateAuthority = {
  /** The CA certificate, PEM; what clients add to their trust store. */
  certPem: string;
  /** Where certPem is on disk. */
  certPath: string;
  cert: x509.X509Certificate;
  key: webcrypto.CryptoKey;
};

/** Loads `<dir>/ca.pem` and `<dir>/ca-key.pem`, creating both (key 0600) when absent. */
export async function loadOrCreateCa(dir: string, domain: string): Promise<CertificateAuthority> {
  return loadOrCreateCaFiles(dir, {
    label: 'Hangar local CA',
    extensions: [nameConstraints(domain)],
    check: (cert, paths) => {
      const permitted = permittedDomains(cert);
      if (permitted.includes(domain)) return;
      throw new HangarError('host_unsupported', `the CA in ${paths.certPath} only vouches for ${permitted.join(', ')}, not for ${domain}`, {
        hint: `move ${paths.certPath} and ${paths.keyPath} away to have a new CA made, then have clients trust the new one`,
      });
    },
  });
}

/**
 * A CA kept as `<dir>/ca.pem` and `<dir>/ca-key.pem` (key 0600, dir 0700), made when absent:
 * a self-signed P-256 certificate named `label` with `extensions` besides the CA ones. `check`
 * vets one loaded from disk.
 */
export async function loadOrCreateCaFiles(
  dir: string,
  opts: { label: string; extensions: x509.Extension[]; check?: (cert: x509.X509Certificate, paths: { certPath: string; keyPath: string }) => void },
): Promise<CertificateAuthority> {
  const certPath = join(dir, 'ca.pem');
  const keyPath = join(dir, 'ca-key.pem');
  const [certPem, keyPem] = await Promise.all([readOptional(certPath), readOptional(keyPath)]);
  if (certPem && keyPem) {
    const cert = new x509.X509Certificate(certPem);
    opts.check?.(cert, { certPath, keyPath });
    const der = x509.PemConverter.decodeFirst(keyPem);
    const key = await crypto.subtle.importKey('pkcs8', der, EC_ALGORITHM, false, ['sign']);
    return { certPem, certPath, cert, key };
  }

  await mkdir(dir, { recursive: true, mode: 0o700 });
  const keys = await crypto.subtle.generateKey(EC_ALGORITHM, true, ['sign', 'verify']);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: [{ CN: [`${opts.label} (${hostname()}, ${randomBytes(4).toString('hex')})`] }, { O: ['Hangar'] }],
    notBefore: new Date(now - 3600_000),
    notAfter: new Date(now + CA_VALIDITY_MS),
    signingAlgorithm: EC_ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      ...opts.extensions,
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', keys.privateKey);
  // The key first, so a crash between the two writes leaves no certificate without its key.
  await writeAtomic(keyPath, x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'), 0o600);
  const pem = cert.toString('pem') + '\n';
  await writeAtomic(certPath, pem, 0o644);
  return { certPem: pem, certPath, cert, key: keys.privateKey };
}

function nameConstraints(domain: string): x509.Extension {
  const value = new NameConstraints({
    permittedSubtrees: new GeneralSubtrees([new GeneralSubtree({ base: new GeneralName({ dNSName: domain }) })]),
  });
  return new x509.Extension(id_ce_nameConstraints, true, AsnConvert.serialize(value));
}

function permittedDomains(cert: x509.X509Certificate): string[] {
  const ext = cert.getExtension(id_ce_nameConstraints);
  if (!ext) return [];
  const value = AsnConvert.parse(ext.value, NameConstraints);
  return (value.permittedSubtrees ?? []).map((s) => s.base.dNSName).filter((d): d is string => !!d);
}

async function readOptional(path: string): Promise<string> {
  return readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return '';
    throw err;
  });
}

export async function writeAtomic(path: string, text: string, mode: number): Promise<void> {
  const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, text, { mode });
  await chmod(tmp, mode);
  await rename(tmp, path);
}
