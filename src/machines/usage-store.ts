import type { DatabaseSync } from 'node:sqlite';
import type { MachineState } from '../protocol/states.ts';

// The usage ledger: what each machine and app held, and for how long, written in the same
// transaction as the change that caused it, so it is exact across a kill -9 of the daemon.
//  - spans: one row per stretch of a machine in one state at one size; the open one (to_ms NULL)
//    runs until now, which is right after a crash too: a started machine kept running meanwhile.
//  - runs: what a run used by its end (CPU time from its cgroup, bytes its veth sent).
//  - storage: checkpoints and volumes while they exist, at their size.

export type SizedMachine = { id: string; app: string; state: MachineState; memoryMb: number; cpus: number; diskGb: number };
export type StorageKind = 'checkpoint' | 'volume';

export type Span = { machineId: string; app: string; state: MachineState; fromMs: number; toMs: number | null; memoryMb: number; cpus: number; diskGb: number };
export type RunEnd = { machineId: string; app: string; atMs: number; cpuSeconds: number; egressBytes: number };
export type StorageSpan = { kind: StorageKind; id: string; app: string; machineId: string | null; gb: number; fromMs: number; toMs: number | null };

const SCHEMA = `
CREATE TABLE IF NOT EXISTS usage_spans (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, machine_id TEXT NOT NULL, app TEXT NOT NULL, state TEXT NOT NULL,
  from_ms INTEGER NOT NULL, to_ms INTEGER, memory_mb INTEGER NOT NULL, cpus REAL NOT NULL, disk_gb REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_spans_open ON usage_spans(machine_id) WHERE to_ms IS NULL;
CREATE INDEX IF NOT EXISTS usage_spans_app ON usage_spans(app, machine_id);
CREATE TABLE IF NOT EXISTS usage_runs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, machine_id TEXT NOT NULL, app TEXT NOT NULL, at_ms INTEGER NOT NULL,
  cpu_seconds REAL NOT NULL, egress_bytes INTEGER NOT NULL, tx_reading INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_runs_app ON usage_runs(app, at_ms);
CREATE INDEX IF NOT EXISTS usage_runs_machine ON usage_runs(machine_id, seq);
CREATE TABLE IF NOT EXISTS usage_storage (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, id TEXT NOT NULL, app TEXT NOT NULL, machine_id TEXT,
  gb REAL NOT NULL, from_ms INTEGER NOT NULL, to_ms INTEGER
);
CREATE INDEX IF NOT EXISTS usage_storage_open ON usage_storage(kind, id) WHERE to_ms IS NULL;
CREATE INDEX IF NOT EXISTS usage_storage_app ON usage_storage(app);
`;

type Row = Record<string, string | number | null>;

export class UsageStore {
  readonly #db: DatabaseSync;

  constructor(db: DatabaseSync) {
    this.#db = db;
    this.#db.exec(SCHEMA);
  }

  /** The machine is now as `m` says: closes its open span and opens one for the new state or size (none once destroyed). */
  enter(m: SizedMachine, atMs: number): void {
    const open = this.#db.prepare('SELECT seq, state, from_ms, memory_mb, cpus, disk_gb FROM usage_spans WHERE machine_id = ? AND to_ms IS NULL').get(m.id) as Row | undefined;
    if (open && open.state === m.state && Number(open.memory_mb) === m.memoryMb && Number(open.cpus) === m.cpus && Number(open.disk_gb) === m.diskGb) return;
    // A change dated in the past never reaches back before the span it ends.
    if (open) atMs = Math.max(atMs, Number(open.from_ms));
    if (open) this.#db.prepare('UPDATE usage_spans SET to_ms = ? WHERE seq = ?').run(atMs, open.seq);
    if (m.state === 'destroyed') return;
    this.#db
      .prepare('INSERT INTO usage_spans (machine_id, app, state, from_ms, memory_mb, cpus, disk_gb) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(m.id, m.app, m.state, atMs, m.memoryMb, m.cpus, m.diskGb);
  }

  /**
   * A run ended having used `cpuSeconds` (its cgroup's total) with its veth's sent counter at
   * `txBytes`. The veth outlives runs, so egress is what it sent since the last reading; a
   * smaller reading means a new veth (after a reboot), which counts from zero.
   */
  runEnded(machineId: string, app: string, atMs: number, cpuSeconds: number, txBytes: number | undefined): void {
    const reading = txBytes ?? this.#lastReading(machineId);
    const egress = this.sentSinceLastRun(machineId, reading);
    this.#db
      .prepare('INSERT INTO usage_runs (machine_id, app, at_ms, cpu_seconds, egress_bytes, tx_reading) VALUES (?, ?, ?, ?, ?, ?)')
      .run(machineId, app, atMs, cpuSeconds, egress, reading);
  }

  /** What the machine's veth sent since the last run's end, given its counter now. */
  sentSinceLastRun(machineId: string, txBytes: number): number {
    const before = this.#lastReading(machineId);
    return txBytes >= before ? txBytes - before : txBytes;
  }

  #lastReading(machineId: string): number {
    const last = this.#db.prepare('SELECT tx_reading FROM usage_runs WHERE machine_id = ? ORDER BY seq DESC LIMIT 1').get(machineId) as Row | undefined;
    return last ? Number(last.tx_reading) : 0;
  }

  /** Apps with any usage recorded, deleted ones included (their counters must not go back). */
  apps(): string[] {
    const rows = this.#db.prepare('SELECT app FROM usage_spans UNION SELECT app FROM usage_storage WHERE app != \'\'').all() as Row[];
    return rows.map((r) => String(r.app));
  }

  /** A checkpoint or volume now holds `gb` (0 when it is gone): closes its open span and opens one at the new size. */
  storage(kind: StorageKind, id: string, app: string, machineId: string | null, gb: number, atMs: number): void {
    this.#db.prepare('UPDATE usage_storage SET to_ms = ? WHERE kind = ? AND id = ? AND to_ms IS NULL').run(atMs, kind, id);
    if (gb <= 0) return;
    this.#db.prepare('INSERT INTO usage_storage (kind, id, app, machine_id, gb, from_ms) VALUES (?, ?, ?, ?, ?, ?)').run(kind, id, app, machineId, gb, atMs);
  }

  /** Closes the open storage spans of a machine's checkpoints (all gone with it). */
  machineCheckpointsGone(machineId: string, atMs: number): void {
    this.#db.prepare("UPDATE usage_storage SET to_ms = ? WHERE kind = 'checkpoint' AND machine_id = ? AND to_ms IS NULL").run(atMs, machineId);
  }

  /** Spans of the app (or every app) that overlap [fromMs, toMs). */
  spans(filter: { app?: string; machineId?: string }, fromMs: number, toMs: number): Span[] {
    const { where, args } = whereOf(filter);
    const rows = this.#db
      .prepare(`SELECT * FROM usage_spans WHERE ${where} from_ms < ? AND (to_ms IS NULL OR to_ms > ?)`)
      .all(...args, toMs, fromMs) as Row[];
    return rows.map((r) => ({
      machineId: String(r.machine_id), app: String(r.app), state: r.state as MachineState, fromMs: Number(r.from_ms),
      toMs: r.to_ms === null ? null : Number(r.to_ms), memoryMb: Number(r.memory_mb), cpus: Number(r.cpus), diskGb: Number(r.disk_gb),
    }));
  }

  runs(filter: { app?: string; machineId?: string }, fromMs: number, toMs: number): RunEnd[] {
    const { where, args } = whereOf(filter);
    const rows = this.#db.prepare(`SELECT * FROM usage_runs WHERE ${where} at_ms >= ? AND at_ms < ?`).all(...args, fromMs, toMs) as Row[];
    return rows.map((r) => ({ machineId: String(r.machine_id), app: String(r.app), atMs: Number(r.at_ms), cpuSeconds: Number(r.cpu_seconds), egressBytes: Number(r.egress_bytes) }));
  }

  storageSpans(filter: { app?: string; machineId?: string }, fromMs: number, toMs: number): StorageSpan[] {
    const { where, args } = whereOf(filter);
    const rows = this.#db
      .prepare(`SELECT * FROM usage_storage WHERE ${where} from_ms < ? AND (to_ms IS NULL OR to_ms > ?)`)
      .all(...args, toMs, fromMs) as Row[];
    return rows.map((r) => ({
      kind: r.kind as StorageKind, id: String(r.id), app: String(r.app), machineId: r.machine_id === null ? null : String(r.machine_id),
      gb: Number(r.gb), fromMs: Number(r.from_ms), toMs: r.to_ms === null ? null : Number(r.to_ms),
    }));
  }
}

function whereOf(filter: { app?: string; machineId?: string }): { where: string; args: string[] } {
  const parts: string[] = [];
  const args: string[] = [];
  if (filter.app !== undefined) {
    parts.push('app = ? AND');
    args.push(filter.app);
  }
  if (filter.machineId !== undefined) {
    parts.push('machine_id = ? AND');
    args.push(filter.machineId);
  }
  return { where: parts.join(' '), args };
}
