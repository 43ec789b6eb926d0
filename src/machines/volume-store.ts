import type { DatabaseSync } from 'node:sqlite';
import type { UsageStore } from './usage-store.ts';

// The durable record of volumes, their snapshots and which machine has each. It shares the
// store's connection, so a machine's insert and the attachment of its volumes are one transaction.

export type VolumeRecord = {
  id: string;
  app: string;
  name: string;
  sizeGb: number;
  fstype: string;
  /** The machine that has it mounted (Fly's attached_machine_id); one at most. */
  attachedMachineId: string | null;
  createdAt: string;
  snapshotRetention: number;
  autoBackupEnabled: boolean;
  encrypted: boolean;
};

export type VolumeSnapshotRecord = { id: string; volumeId: string; app: string; createdAt: string; sizeBytes: number; sizeGb: number };

const SCHEMA = `
CREATE TABLE IF NOT EXISTS volumes (
  id TEXT PRIMARY KEY, app TEXT NOT NULL, name TEXT NOT NULL, size_gb INTEGER NOT NULL, fstype TEXT NOT NULL,
  attached_machine_id TEXT, created_at TEXT NOT NULL, snapshot_retention INTEGER NOT NULL,
  auto_backup_enabled INTEGER NOT NULL, encrypted INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS volumes_app ON volumes(app, created_at);
CREATE INDEX IF NOT EXISTS volumes_machine ON volumes(attached_machine_id);
CREATE TABLE IF NOT EXISTS volume_snapshots (
  id TEXT PRIMARY KEY, volume_id TEXT NOT NULL, app TEXT NOT NULL, created_at TEXT NOT NULL,
  size_bytes INTEGER NOT NULL, size_gb INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS volume_snapshots_volume ON volume_snapshots(volume_id, created_at);
`;

type Row = Record<string, string | number | null>;

export class VolumeStore {
  readonly #db: DatabaseSync;
  readonly #usage: UsageStore;

  constructor(db: DatabaseSync, usage: UsageStore) {
    this.#db = db;
    this.#usage = usage;
    this.#db.exec(SCHEMA);
  }

  insert(v: VolumeRecord): void {
    this.#usage.storage('volume', v.id, v.app, null, v.sizeGb, Date.now());
    this.#db
      .prepare(`INSERT INTO volumes (id, app, name, size_gb, fstype, attached_machine_id, created_at, snapshot_retention, auto_backup_enabled, encrypted)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
      .run(v.id, v.app, v.name, v.sizeGb, v.fstype, v.attachedMachineId, v.createdAt, v.snapshotRetention, v.autoBackupEnabled ? 1 : 0, v.encrypted ? 1 : 0);
  }

  update(v: VolumeRecord): void {
    this.#usage.storage('volume', v.id, v.app, null, v.sizeGb, Date.now());
    this.#db
      .prepare('UPDATE volumes SET size_gb = ?, attached_machine_id = ?, snapshot_retention = ?, auto_backup_enabled = ? WHERE id = ?')
      .run(v.sizeGb, v.attachedMachineId, v.snapshotRetention, v.autoBackupEnabled ? 1 : 0, v.id);
  }

  get(id: string): VolumeRecord | undefined {
    const row = this.#db.prepare('SELECT * FROM volumes WHERE id = ?').get(id) as Row | undefined;
    return row && toVolume(row);
  }

  /** How many volumes the app has and their size in all (limits.ts). */
  totals(app: string): { volumes: number; gb: number } {
    const row = this.#db.prepare('SELECT count(*) AS n, coalesce(sum(size_gb), 0) AS gb FROM volumes WHERE app = ?').get(app) as { n: number; gb: number };
    return { volumes: Number(row.n), gb: Number(row.gb) };
  }

  list(app: string): VolumeRecord[] {
    return (this.#db.prepare('SELECT * FROM volumes WHERE app = ? ORDER BY created_at, id').all(app) as Row[]).map(toVolume);
  }

  attachedTo(machineId: string): VolumeRecord[] {
    return (this.#db.prepare('SELECT * FROM volumes WHERE attached_machine_id = ? ORDER BY id').all(machineId) as Row[]).map(toVolume);
  }

  setAttachment(id: string, machineId: string | null): void {
    this.#db.prepare('UPDATE volumes SET attached_machine_id = ? WHERE id = ?').run(machineId, id);
  }

  /** The volume and its snapshots. */
  delete(id: string): void {
    this.#usage.storage('volume', id, '', null, 0, Date.now());
    this.#db.prepare('DELETE FROM volume_snapshots WHERE volume_id = ?').run(id);
    this.#db.prepare('DELETE FROM volumes WHERE id = ?').run(id);
  }

  insertSnapshot(s: VolumeSnapshotRecord): void {
    this.#db
      .prepare('INSERT INTO volume_snapshots (id, volume_id, app, created_at, size_bytes, size_gb) VALUES (?, ?, ?, ?, ?, ?)')
      .run(s.id, s.volumeId, s.app, s.createdAt, s.sizeBytes, s.sizeGb);
  }

  /** A volume's snapshots, newest first. */
  listSnapshots(volumeId: string): VolumeSnapshotRecord[] {
    return (this.#db.prepare('SELECT * FROM volume_snapshots WHERE volume_id = ? ORDER BY created_at DESC, rowid DESC').all(volumeId) as Row[]).map(toSnapshot);
  }

  getSnapshot(id: string): VolumeSnapshotRecord | undefined {
    const row = this.#db.prepare('SELECT * FROM volume_snapshots WHERE id = ?').get(id) as Row | undefined;
    return row && toSnapshot(row);
  }
}

function toVolume(r: Row): VolumeRecord {
  return {
    id: String(r.id),
    app: String(r.app),
    name: String(r.name),
    sizeGb: Number(r.size_gb),
    fstype: String(r.fstype),
    attachedMachineId: r.attached_machine_id === null ? null : String(r.attached_machine_id),
    createdAt: String(r.created_at),
    snapshotRetention: Number(r.snapshot_retention),
    autoBackupEnabled: Number(r.auto_backup_enabled) === 1,
    encrypted: Number(r.encrypted) === 1,
  };
}

function toSnapshot(r: Row): VolumeSnapshotRecord {
  return {
    id: String(r.id),
    volumeId: String(r.volume_id),
    app: String(r.app),
    createdAt: String(r.created_at),
    sizeBytes: Number(r.size_bytes),
    sizeGb: Number(r.size_gb),
  };
}
