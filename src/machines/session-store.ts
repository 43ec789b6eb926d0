import type { DatabaseSync } from 'node:sqlite';

// The durable record of sessions (commands that outlive the connection), so a restarted daemon
// lists them and reconciles them with what their shims left on disk (session-service.ts). The
// env a session was started with is never stored: its values are often secrets.

/** Why a session ended: its command exited on its own, was killed through the API, ended with
 * its machine, or vanished with no exit recorded (its shim was killed, or the host rebooted). */
export type SessionEndReason = 'exited' | 'killed' | 'machine_stopped' | 'lost';

export type SessionRecord = {
  id: string;
  machineId: string;
  name: string;
  command: string[];
  tty: boolean;
  stdin: boolean;
  cwd: string | null;
  createdAt: string;
  state: 'running' | 'exited';
  endedAt: string | null;
  exitCode: number | null;
  endReason: SessionEndReason | null;
  /** The signal a kill through the API sent, if any. */
  killedWith: string | null;
  /** The machine's init pid when the session started: a later run of the machine is another pid. */
  machinePid: number | null;
};

const SCHEMA = `
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY, machine_id TEXT NOT NULL, name TEXT NOT NULL, command TEXT NOT NULL,
  tty INTEGER NOT NULL, stdin INTEGER NOT NULL, cwd TEXT, created_at TEXT NOT NULL, state TEXT NOT NULL,
  ended_at TEXT, exit_code INTEGER, end_reason TEXT, killed_with TEXT, machine_pid INTEGER
);
CREATE INDEX IF NOT EXISTS sessions_machine ON sessions(machine_id, created_at);
CREATE INDEX IF NOT EXISTS sessions_running ON sessions(state) WHERE state = 'running';
`;

type Row = Record<string, string | number | null>;

export class SessionStore {
  readonly #db: DatabaseSync;

  constructor(db: DatabaseSync) {
    this.#db = db;
    this.#db.exec(SCHEMA);
  }

  insert(s: SessionRecord): void {
    this.#db
      .prepare(
        `INSERT INTO sessions (id, machine_id, name, command, tty, stdin, cwd, created_at, state, ended_at, exit_code, end_reason, killed_with, machine_pid)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(s.id, s.machineId, s.name, JSON.stringify(s.command), s.tty ? 1 : 0, s.stdin ? 1 : 0, s.cwd, s.createdAt, s.state, s.endedAt, s.exitCode, s.endReason, s.killedWith, s.machinePid);
  }

  markEnded(id: string, end: { endedAt: string; exitCode: number | null; endReason: SessionEndReason }): void {
    this.#db
      .prepare("UPDATE sessions SET state = 'exited', ended_at = ?, exit_code = ?, end_reason = ? WHERE id = ? AND state = 'running'")
      .run(end.endedAt, end.exitCode, end.endReason, id);
  }

  markKilled(id: string, signal: string): void {
    this.#db.prepare("UPDATE sessions SET killed_with = ? WHERE id = ? AND state = 'running'").run(signal, id);
  }

  get(id: string): SessionRecord | undefined {
    const row = this.#db.prepare('SELECT * FROM sessions WHERE id = ?').get(id) as Row | undefined;
    return row && toSession(row);
  }

  /** The newest session of the machine with that name. */
  findByName(machineId: string, name: string): SessionRecord | undefined {
    const row = this.#db.prepare('SELECT * FROM sessions WHERE machine_id = ? AND name = ? ORDER BY created_at DESC, rowid DESC LIMIT 1').get(machineId, name) as Row | undefined;
    return row && toSession(row);
  }

  /** Newest first. */
  list(machineId: string): SessionRecord[] {
    return (this.#db.prepare('SELECT * FROM sessions WHERE machine_id = ? ORDER BY created_at DESC, rowid DESC').all(machineId) as Row[]).map(toSession);
  }

  running(): SessionRecord[] {
    return (this.#db.prepare("SELECT * FROM sessions WHERE state = 'running' ORDER BY created_at").all() as Row[]).map(toSession);
  }

  /** Ended sessions of the machine beyond the newest `keep` of them, oldest first. */
  endedBeyond(machineId: string, keep: number): SessionRecord[] {
    const rows = this.#db
      .prepare("SELECT * FROM sessions WHERE machine_id = ? AND state = 'exited' ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET ?")
      .all(machineId, keep) as Row[];
    return rows.map(toSession).reverse();
  }

  delete(id: string): void {
    this.#db.prepare('DELETE FROM sessions WHERE id = ?').run(id);
  }

  deleteOfMachine(machineId: string): void {
    this.#db.prepare('DELETE FROM sessions WHERE machine_id = ?').run(machineId);
  }
}

function toSession(r: Row): SessionRecord {
  return {
    id: String(r.id),
    machineId: String(r.machine_id),
    name: String(r.name),
    command: JSON.parse(String(r.command)) as string[],
    tty: Number(r.tty) === 1,
    stdin: Number(r.stdin) === 1,
    cwd: r.cwd === null ? null : String(r.cwd),
    createdAt: String(r.created_at),
    state: r.state === 'running' ? 'running' : 'exited',
    endedAt: r.ended_at === null ? null : String(r.ended_at),
    exitCode: r.exit_code === null ? null : Number(r.exit_code),
    endReason: r.end_reason === null ? null : (String(r.end_reason) as SessionEndReason),
    killedWith: r.killed_with === null ? null : String(r.killed_with),
    machinePid: r.machine_pid === null ? null : Number(r.machine_pid),
  };
}
