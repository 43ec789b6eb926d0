import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createSecureContext, type SecureContext } from 'node:tls';
import { HangarError } from '../../protocol/errors.ts';
import { writeAtomic } from './ca.ts';
import { parseUpload } from './uploaded-cert.ts';

// Certificates uploaded for an app, one entry per hostname they name: the proxy serves them for
// those hostnames and routes those hostnames to the app. Each is a JSON file (0600: it holds the
// key) under <dir>, read once at start. An entry belongs to one incarnation of its app (by id):
// when the app is deleted, or deleted and made again, its certificates no longer apply.

export type CertificateInfo = {
  hostname: string;
  app: string;
  subject: string;
  issuer: string;
  not_before: string;
  not_after: string;
  fingerprint_sha256: string;
  created_at: string;
};

type Entry = CertificateInfo & { app_id: string; chain_pem: string; key_pem: string };

/** The current id of an app, or undefined when there is no such app. */
export type AppIdLookup = (app: string) => string | undefined;

export class CustomCertificates {
  readonly #dir: string;
  readonly #appId: AppIdLookup;
  readonly #entries = new Map<string, { entry: Entry; context: SecureContext }>();

  private constructor(dir: string, appId: AppIdLookup) {
    this.#dir = dir;
    this.#appId = appId;
  }

  static async load(dir: string, appId: AppIdLookup): Promise<CustomCertificates> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const certs = new CustomCertificates(dir, appId);
    for (const name of await readdir(dir)) {
      if (!name.endsWith('.json')) continue;
      // One damaged file costs its hostname its certificate, not the daemon its start.
      try {
        const entry = JSON.parse(await readFile(join(dir, name), 'utf8')) as Entry;
        certs.#entries.set(entry.hostname, { entry, context: createSecureContext({ cert: entry.chain_pem, key: entry.key_pem }) });
      } catch (err) {
        process.stderr.write(`hangar: skipping the certificate in ${join(dir, name)}: ${(err as Error).message}\n`);
      }
    }
    return certs;
  }

  /**
   * Stores a certificate for `app` under every hostname it names, replacing the app's earlier
   * certificate for those hostnames. `reserved` says why a hostname may not be claimed at all.
   */
  async add(app: string, appId: string, certificatePem: string, privateKeyPem: string, reserved: (hostname: string) => string | undefined): Promise<CertificateInfo[]> {
    const cert = parseUpload(certificatePem, privateKeyPem);
    for (const hostname of cert.hostnames) {
      const why = reserved(hostname);
      if (why) throw new HangarError('hostname_taken', `${hostname} cannot be given a certificate: ${why}`, { hint: 'upload a certificate that names only hostnames you point at this proxy', details: { hostname } });
      const holder = this.#live(hostname);
      if (holder && holder.entry.app !== app) {
        throw new HangarError('hostname_taken', `${hostname} already serves app ${holder.entry.app}`, {
          hint: `remove it there first: DELETE /v1/apps/${holder.entry.app}/certificates/${hostname}`,
          details: { hostname, app: holder.entry.app },
        });
      }
    }
    const createdAt = new Date().toISOString();
    const context = createSecureContext({ cert: cert.chainPem, key: cert.keyPem });
    const added: CertificateInfo[] = [];
    for (const hostname of cert.hostnames) {
      const entry: Entry = {
        hostname, app, app_id: appId, subject: cert.subject, issuer: cert.issuer, not_before: cert.notBefore, not_after: cert.notAfter,
        fingerprint_sha256: cert.fingerprint, created_at: createdAt, chain_pem: cert.chainPem, key_pem: cert.keyPem,
      };
      await writeAtomic(this.#file(hostname), JSON.stringify(entry), 0o600);
      this.#entries.set(hostname, { entry, context });
      added.push(info(entry));
    }
    return added;
  }

  list(app: string): CertificateInfo[] {
    return [...this.#entries.keys()].map((h) => this.#live(h)).filter((e) => e?.entry.app === app).map((e) => info(e!.entry)).sort((a, b) => a.hostname.localeCompare(b.hostname));
  }

  async remove(app: string, hostname: string): Promise<void> {
    const name = hostname.toLowerCase();
    if (this.#live(name)?.entry.app !== app) {
      throw new HangarError('certificate_not_found', `app ${app} has no certificate for ${hostname}`, {
        hint: `list them: GET /v1/apps/${app}/certificates`,
        details: { hostname },
      });
    }
    await this.#drop(name);
  }

  /** The uploaded certificate that covers `hostname` (exactly, else by a wildcard), with its app. */
  match(hostname: string): { app: string; context: SecureContext } | undefined {
    const found = this.#live(hostname) ?? (hostname.includes('.') ? this.#live('*' + hostname.slice(hostname.indexOf('.'))) : undefined);
    return found && { app: found.entry.app, context: found.context };
  }

  /** An entry whose app still exists as the same app; one left by a deleted app is removed. */
  #live(hostname: string) {
    const found = this.#entries.get(hostname);
    if (found && this.#appId(found.entry.app) !== found.entry.app_id) {
      void this.#drop(hostname).catch(() => undefined);
      return undefined;
    }
    return found;
  }

  async #drop(hostname: string): Promise<void> {
    this.#entries.delete(hostname);
    await rm(this.#file(hostname), { force: true });
  }

  /** Hostnames are checked DNS names; `*` (wildcards) is spelt `_`, which no hostname contains. */
  #file(hostname: string): string {
    return join(this.#dir, hostname.replace('*', '_') + '.json');
  }
}

function info(e: Entry): CertificateInfo {
  return {
    hostname: e.hostname, app: e.app, subject: e.subject, issuer: e.issuer, not_before: e.not_before, not_after: e.not_after,
    fingerprint_sha256: e.fingerprint_sha256, created_at: e.created_at,
  };
}
