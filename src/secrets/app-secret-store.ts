import type { DatabaseSync } from 'node:sqlite';

// App secrets in the daemon's state database. The value is kept only as a sealed box to the
// tokenizer's key (tokenizer.key, mode 600 in the data dir), so a copy of state.db alone does not
// give it away; the placeholder is what machines see and is no secret.

const SCHEMA = `
CREATE TABLE IF NOT EXISTS app_secrets (
  app TEXT NOT NULL, name TEXT NOT NULL, hosts TEXT NOT NULL, inject TEXT, placeholder TEXT NOT NULL UNIQUE,
  sealed TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
  PRIMARY KEY (app, name)
);
`;

export type SecretRecord = {
  app: string;
  name: string;
  hosts: string[];
  inject?: { header: string; format: string };
  placeholder: string;
  /** base64 sealed box of the value. */
  sealed: string;
  createdAt: string;
  updatedAt: string;
};

type Row = { app: string; name: string; hosts: string; inject: string | null; placeholder: string; sealed: string; created_at: string; updated_at: string };

export class AppSecretStore {
  readonly #db: DatabaseSync;
  /** Per app, read once and kept: the DNS and the egress proxy ask on every query and request. */
  readonly #byApp = new Map<string, SecretRecord[]>();

  constructor(db: DatabaseSync) {
    this.#db = db;
    this.#db.exec(SCHEMA);
    for (const row of this.#db.prepare('SELECT * FROM app_secrets ORDER BY app, name').all() as Row[]) {
      const list = this.#byApp.get(row.app) ?? [];
      list.push(fromRow(row));
      this.#byApp.set(row.app, list);
    }
  }

  list(app: string): SecretRecord[] {
    return this.#byApp.get(app) ?? [];
  }

  get(app: string, name: string): SecretRecord | undefined {
    return this.list(app).find((s) => s.name === name);
  }

  /** Inserts or replaces the secret `app`/`name`. */
  put(s: SecretRecord): void {
    this.#db.prepare(`INSERT INTO app_secrets (app, name, hosts, inject, placeholder, sealed, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (app, name) DO UPDATE SET hosts = excluded.hosts, inject = excluded.inject, placeholder = excluded.placeholder, sealed = excluded.sealed, updated_at = excluded.updated_at`)
      .run(s.app, s.name, JSON.stringify(s.hosts), s.inject ? JSON.stringify(s.inject) : null, s.placeholder, s.sealed, s.createdAt, s.updatedAt);
    const rest = this.list(s.app).filter((x) => x.name !== s.name);
    this.#byApp.set(s.app, [...rest, s].sort((a, b) => a.name.localeCompare(b.name)));
  }

  delete(app: string, name: string): boolean {
    const changed = this.#db.prepare('DELETE FROM app_secrets WHERE app = ? AND name = ?').run(app, name).changes > 0;
    const rest = this.list(app).filter((x) => x.name !== name);
    if (rest.length) this.#byApp.set(app, rest);
    else this.#byApp.delete(app);
    return changed;
  }

  deleteAll(app: string): void {
    this.#db.prepare('DELETE FROM app_secrets WHERE app = ?').run(app);
    this.#byApp.delete(app);
  }
}

function fromRow(row: Row): SecretRecord {
  return {
    app: row.app,
    name: row.name,
    hosts: JSON.parse(row.hosts) as string[],
    ...(row.inject ? { inject: JSON.parse(row.inject) as { header: string; format: string } } : {}),
    placeholder: row.placeholder,
    sealed: row.sealed,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}
