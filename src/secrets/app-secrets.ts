import { randomBytes } from 'node:crypto';
import { HangarError } from '../protocol/errors.ts';
import { PLACEHOLDER_PREFIX, type AppSecret, type AppSecretRequest } from '../protocol/app-secrets.ts';
import type { AppSecretStore, SecretRecord } from './app-secret-store.ts';
import type { SealingKeys } from './sealed-box.ts';

// App secrets for the API, the machines' env and the egress proxy. Nothing here returns a value
// except usableFor(), which only the egress proxy calls, for a request already bound for one of
// the secret's hosts from a machine of the secret's app.

/** A secret opened for one request: where its placeholder is swapped for the value. */
export type UsableSecret = { name: string; placeholder: string; value: string; inject?: { header: string; format: string } };

export class AppSecrets {
  readonly #store: AppSecretStore;
  readonly #keys: SealingKeys;
  readonly #assertApp: (app: string) => void;

  constructor(store: AppSecretStore, keys: SealingKeys, assertApp: (app: string) => void) {
    this.#store = store;
    this.#keys = keys;
    this.#assertApp = assertApp;
  }

  /**
   * Creates or replaces a secret. A replaced one keeps its placeholder, so running machines use
   * the new value at their next request, with no restart.
   */
  set(app: string, req: AppSecretRequest): AppSecret {
    this.#assertApp(app);
    const now = new Date().toISOString();
    const existing = this.#store.get(app, req.name);
    const record: SecretRecord = {
      app,
      name: req.name,
      hosts: [...new Set(req.hosts)],
      ...(req.inject ? { inject: req.inject } : {}),
      placeholder: existing?.placeholder ?? PLACEHOLDER_PREFIX + randomBytes(20).toString('hex'),
      sealed: this.#keys.seal(req.value),
      createdAt: existing?.createdAt ?? now,
      updatedAt: now,
    };
    this.#store.put(record);
    return toWire(record);
  }

  list(app: string): AppSecret[] {
    this.#assertApp(app);
    return this.#store.list(app).map(toWire);
  }

  get(app: string, name: string): AppSecret {
    this.#assertApp(app);
    const s = this.#store.get(app, name);
    if (!s) throw notFound(app, name);
    return toWire(s);
  }

  delete(app: string, name: string): void {
    this.#assertApp(app);
    if (!this.#store.delete(app, name)) throw notFound(app, name);
  }

  /** With the app itself. */
  deleteAll(app: string): void {
    this.#store.deleteAll(app);
  }

  /** Env var name to placeholder, for each of the app's secrets. */
  placeholders(app: string): Record<string, string> {
    return Object.fromEntries(this.#store.list(app).map((s) => [s.name, s.placeholder]));
  }

  /** Whether some secret of `app` may be sent to `hostname` (its DNS then answers the gateway). */
  allowsHost(app: string, hostname: string): boolean {
    const name = hostname.toLowerCase().replace(/\.$/, '');
    return this.#store.list(app).some((s) => s.hosts.includes(name));
  }

  /** The app's secrets that may go to `hostname`, opened. Only for the egress proxy. */
  usableFor(app: string, hostname: string): UsableSecret[] {
    const name = hostname.toLowerCase().replace(/\.$/, '');
    return this.#store.list(app).filter((s) => s.hosts.includes(name)).flatMap((s) => {
      const opened = this.#keys.open(s.sealed);
      if (!opened) return [];
      const value = Buffer.from(opened).toString('utf8');
      opened.fill(0);
      return [{ name: s.name, placeholder: s.placeholder, value, ...(s.inject ? { inject: s.inject } : {}) }];
    });
  }
}

function toWire(s: SecretRecord): AppSecret {
  return { name: s.name, hosts: s.hosts, ...(s.inject ? { inject: s.inject } : {}), placeholder: s.placeholder, created_at: s.createdAt, updated_at: s.updatedAt };
}

function notFound(app: string, name: string): HangarError {
  return new HangarError('secret_not_found', `app ${app} has no secret named ${name}`, {
    hint: `list them with GET /v1/apps/${app}/secrets; set it with POST /v1/apps/${app}/secrets {"name": "${name}", "value": …, "hosts": […]}`,
  });
}
