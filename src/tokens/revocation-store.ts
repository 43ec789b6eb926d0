import type { DatabaseSync } from 'node:sqlite';

// Revoked tokens, kept in the daemon's state database so a revocation outlives restarts. What is
// kept is the SHA-256 of a key of the token's HMAC chain, never a usable token: every token
// attenuated from a revoked one passes through that key, so revoking one revokes its descendants.

const SCHEMA = `
CREATE TABLE IF NOT EXISTS revoked_tokens (digest TEXT PRIMARY KEY, revoked_at TEXT NOT NULL);
`;

export class RevocationStore {
  readonly #db: DatabaseSync;
  /** All of the table, read once: every authenticated request asks. */
  readonly #revoked: Set<string>;

  constructor(db: DatabaseSync) {
    this.#db = db;
    this.#db.exec(SCHEMA);
    this.#revoked = new Set((this.#db.prepare('SELECT digest FROM revoked_tokens').all() as Array<{ digest: string }>).map((r) => r.digest));
  }

  add(digest: string): void {
    this.#db.prepare('INSERT OR IGNORE INTO revoked_tokens (digest, revoked_at) VALUES (?, ?)').run(digest, new Date().toISOString());
    this.#revoked.add(digest);
  }

  has(digest: string): boolean {
    return this.#revoked.has(digest);
  }
}
