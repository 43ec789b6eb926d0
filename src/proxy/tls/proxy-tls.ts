import { createServer, type Server, type ServerOptions } from 'node:https';
import { join } from 'node:path';
import type { SecureContext } from 'node:tls';
import { loadOrCreateCa, type CertificateAuthority } from './ca.ts';
import { CustomCertificates, type AppIdLookup } from './custom-certs.ts';
import { LeafIssuer, type LeafIssuerOptions } from './leaf-issuer.ts';

// HTTPS for the edge proxy. A handshake names a hostname (SNI): an uploaded certificate that
// covers it is served, else one from Hangar's CA for `<app>.<domain>` of an existing app. Any
// other name gets no certificate, so strangers cannot have us sign names without end.

export type ProxyTlsOptions = LeafIssuerOptions & {
  /** Where the CA and uploaded certificates live (<data>/tls). */
  dir: string;
  /** The proxy's domain: apps are `<app>.<domain>`. */
  domain: string;
  appId: AppIdLookup;
};

const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export class ProxyTls {
  readonly ca: CertificateAuthority;
  readonly certificates: CustomCertificates;
  readonly domain: string;
  readonly #issuer: LeafIssuer;
  readonly #appId: AppIdLookup;

  private constructor(ca: CertificateAuthority, certificates: CustomCertificates, opts: ProxyTlsOptions) {
    this.ca = ca;
    this.certificates = certificates;
    this.domain = opts.domain;
    this.#appId = opts.appId;
    this.#issuer = new LeafIssuer(ca, opts);
  }

  /** Loads the CA (made on first start) and the uploaded certificates. */
  static async open(opts: ProxyTlsOptions): Promise<ProxyTls> {
    const ca = await loadOrCreateCa(opts.dir, opts.domain);
    const certificates = await CustomCertificates.load(join(opts.dir, 'certs'), opts.appId);
    return new ProxyTls(ca, certificates, opts);
  }

  /** An HTTPS server (not yet listening) that picks its certificate by SNI; give it to the proxy's attach(). */
  createServer(opts: ServerOptions = {}): Server {
    return createServer({
      ...opts,
      SNICallback: (servername, cb) => this.contextFor(servername).then((ctx) => cb(null, ctx), (err: Error) => cb(err)),
      ALPNProtocols: ['http/1.1'],
      minVersion: 'TLSv1.2',
    });
  }

  /** The certificate to present for a hostname; rejects for one this proxy does not serve. */
  async contextFor(servername: string): Promise<SecureContext> {
    const hostname = servername.toLowerCase().replace(/\.$/, '');
    const uploaded = this.certificates.match(hostname);
    if (uploaded) return uploaded.context;
    const app = this.#ownApp(hostname);
    if (!app) {
      this.#issuer.forget(hostname);
      throw new Error(`no app serves ${hostname}`);
    }
    return (await this.#issuer.certificateFor(hostname)).context;
  }

  /**
   * The app an uploaded certificate routes `host` (a Host header, port allowed) to; undefined
   * when no uploaded certificate names it. `<app>.<domain>` is the proxy's own rule, not this.
   */
  appForHostname(host: string): string | undefined {
    return this.certificates.match(host.replace(/:\d+$/, '').toLowerCase().replace(/\.$/, ''))?.app;
  }

  /** Why a hostname may not be claimed by an upload to `app`, if it may not. */
  reservedFor(app: string): (hostname: string) => string | undefined {
    return (hostname) => {
      if (hostname === this.domain || hostname.endsWith(`.${this.domain}`)) {
        return hostname === `${app}.${this.domain}` ? undefined : `names under ${this.domain} belong to the apps they name (this app is ${app}.${this.domain})`;
      }
      return undefined;
    };
  }

  #ownApp(hostname: string): string | undefined {
    const suffix = `.${this.domain}`;
    if (!hostname.endsWith(suffix)) return undefined;
    const app = hostname.slice(0, -suffix.length);
    return LABEL.test(app) && this.#appId(app) !== undefined ? app : undefined;
  }
}
