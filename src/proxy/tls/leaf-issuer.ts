import { createSecureContext, type SecureContext } from 'node:tls';
import { EC_ALGORITHM, type CertificateAuthority } from './ca.ts';
import * as x509 from './x509.ts';

// Certificates for `<app>.<domain>`, made by Hangar's CA when a client first asks for one (SNI)
// and kept in memory: an ECDSA key and signature take milliseconds, so nothing goes to disk.
// They live a short while and are renewed in the background once most of their life is gone.

export const LEAF_VALIDITY_MS = 7 * 24 * 3600_000;
/** Clients' clocks may run a little behind ours. */
const BACKDATE_MS = 5 * 60_000;

export type IssuedCertificate = { certPem: string; keyPem: string; context: SecureContext; notAfter: number; renewAt: number };

export type LeafIssuerOptions = { validityMs?: number };

export class LeafIssuer {
  readonly #ca: CertificateAuthority;
  readonly #validityMs: number;
  readonly #issued = new Map<string, IssuedCertificate>();
  readonly #pending = new Map<string, Promise<IssuedCertificate>>();

  constructor(ca: CertificateAuthority, opts: LeafIssuerOptions = {}) {
    this.#ca = ca;
    this.#validityMs = opts.validityMs ?? LEAF_VALIDITY_MS;
  }

  /**
   * A certificate for `hostname`, which the caller has checked is ours to vouch for. Concurrent
   * handshakes for one hostname share one issuance; one due for renewal is still served while
   * its successor is made.
   */
  async certificateFor(hostname: string): Promise<IssuedCertificate> {
    const current = this.#issued.get(hostname);
    const now = Date.now();
    if (current && now < current.renewAt) return current;
    const next = this.#issueOnce(hostname);
    if (current && now < current.notAfter) {
      next.catch(() => undefined); // the next handshake tries again
      return current;
    }
    return next;
  }

  /** Drops what was issued for a hostname that is no longer served (its app was deleted). */
  forget(hostname: string): void {
    this.#issued.delete(hostname);
  }

  #issueOnce(hostname: string): Promise<IssuedCertificate> {
    let pending = this.#pending.get(hostname);
    if (!pending) {
      pending = this.#issue(hostname)
        .then((issued) => {
          this.#issued.set(hostname, issued);
          return issued;
        })
        .finally(() => this.#pending.delete(hostname));
      this.#pending.set(hostname, pending);
    }
    return pending;
  }

  async #issue(hostname: string): Promise<IssuedCertificate> {
    const keys = await crypto.subtle.generateKey(EC_ALGORITHM, true, ['sign', 'verify']);
    const now = Date.now();
    const notAfter = now + this.#validityMs;
    const cert = await x509.X509CertificateGenerator.create({
      // A CN holds at most 64 characters; the SAN is what clients check anyway.
      subject: hostname.length <= 64 ? [{ CN: [hostname] }] : [{ O: ['Hangar'] }],
      issuer: this.#ca.cert.subject,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(notAfter),
      signingAlgorithm: EC_ALGORITHM,
      publicKey: keys.publicKey,
      signingKey: this.#ca.key,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: hostname }]),
        await x509.AuthorityKeyIdentifierExtension.create(this.#ca.cert.publicKey),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    const certPem = cert.toString('pem') + '\n';
    const keyPem = x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
    return {
      certPem,
      keyPem,
      context: createSecureContext({ cert: certPem, key: keyPem }),
      notAfter,
      // Renewed with a third of its life left, so a daemon that is busy or briefly down never serves an expired one.
      renewAt: notAfter - this.#validityMs / 3,
    };
  }
}
