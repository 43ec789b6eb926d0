import { DatabaseSync } from 'node:sqlite';
import type { MachineConfig } from '../protocol/machine-config.ts';
import type { MachineState } from '../protocol/states.ts';
import type { EventSource } from '../protocol/event-sources.ts';
import type { ImageRef } from '../images/image-service.ts';
import { DEFAULT_APP_SETTINGS, type AppSettings } from '../protocol/app-settings.ts';
import { VolumeStore } from './volume-store.ts';
import { BudgetStore, RUNS_OF_BUDGET } from './budget-store.ts';
import { AddressIndex } from './address-index.ts';
import { SessionStore } from './session-store.ts';
import { RevocationStore } from '../tokens/revocation-store.ts';
import { AppSecretStore } from '../secrets/app-secret-store.ts';
import { UsageStore, type SizedMachine } from './usage-store.ts';

// The durable record of apps, machines, their events and transition intents. Every transition
// writes its intent before acting and its result after, so a restarted daemon knows what was
// under way (machines/reconcile.ts).

export type AppRecord = { id: string; name: string; network: string; createdAt: string; settings: AppSettings };

export type LeaseRecord = { nonce: string; expiresAt: number; owner: string; description: string; version: string };

export type MachineRecord = {
  id: string;
  app: string;
  name: string;
  state: MachineState;
  instanceId: string;
  config: MachineConfig;
  imageRef: ImageRef;
  /** Unpacked layer dirs the overlay stacks, lowest first; fixed at create/update. */
  layerDirs: string[];
  privateIp: string;
  createdAt: string;
  updatedAt: string;
  /** Automatic restarts since the last user start (for restart.max_retries). */
  restartCount: number;
  lease: LeaseRecord | null;
  cordoned: boolean;
  /** First host uid/gid of the machine's user namespace (its root); 0 for a machine made before machines had one. */
  uidBase: number;
  /** Size of the machine's own disk, which holds its writable layer; 0 for a machine made before machines had one. */
  diskGb: number;
};

export type EventRecord = {
  id: string;
  type: string;
  status: string;
  source: EventSource;
  timestamp: number;
  request?: Record<string, unknown>;
};

export type CheckpointRecord = {
  id: string;
  machineId: string;
  name: string;
  comment: string;
  createdAt: string;
  sizeBytes: number;
  parentId: string | null;
  /** The volumes captured with the disk (those the machine had then). */
  volumes: string[];
};

export type IntentRecord = { seq: number; machineId: string; action: string; fromState: string; startedAt: string };

const SCHEMA = `
CREATE TABLE IF NOT EXISTS apps (
  name TEXT PRIMARY KEY, id TEXT NOT NULL, network TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS machines (
  id TEXT PRIMARY KEY, app TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL,
  instance_id TEXT NOT NULL, config TEXT NOT NULL, image_ref TEXT NOT NULL, layer_dirs TEXT NOT NULL,
  private_ip TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
  restart_count INTEGER NOT NULL DEFAULT 0, lease TEXT, cordoned INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS machines_app ON machines(app, state);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, machine_id TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL,
  status TEXT NOT NULL, source TEXT NOT NULL, timestamp INTEGER NOT NULL, request TEXT
);
CREATE INDEX IF NOT EXISTS events_machine ON events(machine_id, seq);
CREATE TABLE IF NOT EXISTS intents (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, machine_id TEXT NOT NULL, action TEXT NOT NULL,
  from_state TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT, result TEXT
);
CREATE INDEX IF NOT EXISTS intents_open ON intents(machine_id) WHERE finished_at IS NULL;
CREATE TABLE IF NOT EXISTS app_subnets (app TEXT PRIMARY KEY, subnet_index INTEGER NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS checkpoints (
  id TEXT PRIMARY KEY, machine_id TEXT NOT NULL, name TEXT NOT NULL, comment TEXT NOT NULL,
  created_at TEXT NOT NULL, size_bytes INTEGER NOT NULL, parent_id TEXT,
  UNIQUE (machine_id, name)
);
CREATE INDEX IF NOT EXISTS checkpoints_machine ON checkpoints(machine_id, created_at);
`;

/** Columns added after a table was first made, added to an older state.db when missing. */
const ADDED_COLUMNS: Array<{ table: string; column: string; type: string }> = [
  // An app's settings; NULL (rows from before settings) means the default.
  { table: 'apps', column: 'egress', type: 'TEXT' },
  { table: 'apps', column: 'autostop_idle_ms', type: 'INTEGER' },
  { table: 'apps', column: 'nested_namespaces', type: 'INTEGER NOT NULL DEFAULT 0' },
  // JSON of the app's own limits (those it overrides); NULL means none.
  { table: 'apps', column: 'limits', type: 'TEXT' },
  { table: 'machines', column: 'uid_base', type: 'INTEGER NOT NULL DEFAULT 0' },
  { table: 'machines', column: 'disk_gb', type: 'INTEGER NOT NULL DEFAULT 0' },
  // The checkpoint the machine's disk last came from or was captured as: the parent of its next one.
  { table: 'machines', column: 'checkpoint_head', type: 'TEXT' },
  // JSON array of volume ids captured with the disk; NULL (from before volumes) means none.
  { table: 'checkpoints', column: 'volumes', type: 'TEXT' },
];

type Row = Record<string, string | number | null>;

export class Store {
  readonly #db: DatabaseSync;
  readonly volumes: VolumeStore;
  /** Sessions, in their own table of the same database. */
  readonly sessions: SessionStore;
  /** Revoked tokens (tokens/revocation-store.ts). */
  readonly revocations: RevocationStore;
  /** The usage ledger, written with each change that it records. */
  readonly usage: UsageStore;
  /** What each token budget holds (limits caveats). */
  readonly budgets: BudgetStore;
  /** App secrets, sealed (secrets/app-secret-store.ts). */
  readonly secrets: AppSecretStore;
  /** Which machine holds a private address. */
  readonly addresses: AddressIndex;

  constructor(path: string) {
    this.#db = new DatabaseSync(path);
    // WAL keeps every committed transition across a kill -9 of the daemon.
    this.#db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;');
    this.#db.exec(SCHEMA);
    this.#addMissingColumns();
    this.usage = new UsageStore(this.#db);
    this.volumes = new VolumeStore(this.#db, this.usage);
    this.sessions = new SessionStore(this.#db);
    this.revocations = new RevocationStore(this.#db);
    this.budgets = new BudgetStore(this.#db);
    this.secrets = new AppSecretStore(this.#db);
    this.addresses = new AddressIndex(this.#db);
  }

  #addMissingColumns(): void {
    for (const { table, column, type } of ADDED_COLUMNS) {
      const columns = this.#db.prepare(`PRAGMA table_info(${table})`).all() as Array<{ name: string }>;
      if (!columns.some((c) => c.name === column)) this.#db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${type}`);
    }
  }

  close(): void {
    this.#db.close();
  }

  /** Runs fn in one transaction; a call from inside another joins the outer one. */
  transaction<T>(fn: () => T): T {
    if (this.#db.isTransaction) return fn();
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      const result = fn();
      this.#db.exec('COMMIT');
      return result;
    } catch (err) {
      this.#db.exec('ROLLBACK');
      throw err;
    }
  }

  insertApp(app: AppRecord): void {
    this.#db
      .prepare('INSERT INTO apps (name, id, network, created_at, egress, autostop_idle_ms, nested_namespaces, limits) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(app.name, app.id, app.network, app.createdAt, JSON.stringify(app.settings.egress), app.settings.autostopIdleMs, app.settings.nestedNamespaces ? 1 : 0, JSON.stringify(app.settings.limits));
  }

  updateAppSettings(name: string, settings: AppSettings): void {
    this.#db
      .prepare('UPDATE apps SET egress = ?, autostop_idle_ms = ?, nested_namespaces = ?, limits = ? WHERE name = ?')
      .run(JSON.stringify(settings.egress), settings.autostopIdleMs, settings.nestedNamespaces ? 1 : 0, JSON.stringify(settings.limits), name);
  }

  getApp(name: string): AppRecord | undefined {
    const row = this.#db.prepare('SELECT * FROM apps WHERE name = ?').get(name) as Row | undefined;
    return row && toApp(row);
  }

  listApps(): AppRecord[] {
    return (this.#db.prepare('SELECT * FROM apps ORDER BY name').all() as Row[]).map(toApp);
  }

  deleteApp(name: string): void {
    this.#db.prepare('DELETE FROM apps WHERE name = ?').run(name);
    this.secrets.deleteAll(name);
  }

  /** The app's subnet index in the machine range, given one now (the lowest free) if it has none. */
  claimAppSubnet(app: string, subnetCount: number): number | undefined {
    const row = this.#db.prepare('SELECT subnet_index FROM app_subnets WHERE app = ?').get(app) as { subnet_index: number } | undefined;
    if (row) return row.subnet_index;
    const taken = new Set((this.#db.prepare('SELECT subnet_index FROM app_subnets').all() as Array<{ subnet_index: number }>).map((r) => r.subnet_index));
    for (let index = 0; index < subnetCount; index++) {
      if (taken.has(index)) continue;
      this.#db.prepare('INSERT INTO app_subnets (app, subnet_index) VALUES (?, ?)').run(app, index);
      return index;
    }
    return undefined;
  }

  /** The app's subnet index, when it has one (it gets one with its first machine). */
  subnetOfApp(app: string): number | undefined {
    const row = this.#db.prepare('SELECT subnet_index FROM app_subnets WHERE app = ?').get(app) as { subnet_index: number } | undefined;
    return row?.subnet_index;
  }

  appOfSubnet(index: number): string | undefined {
    const row = this.#db.prepare('SELECT app FROM app_subnets WHERE subnet_index = ?').get(index) as { app: string } | undefined;
    return row?.app;
  }

  /** The subnet index the app held, now free for another app. */
  freeAppSubnet(app: string): number | undefined {
    const row = this.#db.prepare('DELETE FROM app_subnets WHERE app = ? RETURNING subnet_index').get(app) as { subnet_index: number } | undefined;
    return row?.subnet_index;
  }

  /** Private addresses held by the app's machines that are not destroyed. */
  usedAddresses(app: string): Set<string> {
    const rows = this.#db.prepare("SELECT private_ip FROM machines WHERE app = ? AND state != 'destroyed' AND private_ip != ''").all(app) as Array<{ private_ip: string }>;
    return new Set(rows.map((r) => r.private_ip));
  }

  /** uid bases held by machines that are not destroyed. */
  usedUidBases(): Set<number> {
    const rows = this.#db.prepare("SELECT uid_base FROM machines WHERE state != 'destroyed' AND uid_base != 0").all() as Array<{ uid_base: number }>;
    return new Set(rows.map((r) => Number(r.uid_base)));
  }

  countLiveMachines(app: string): number {
    const row = this.#db
      .prepare("SELECT count(*) AS n FROM machines WHERE app = ? AND state != 'destroyed'")
      .get(app) as { n: number };
    return row.n;
  }

  /**
   * Machines that run or are about to (limits.ts), and the guest sizes they hold: an app's, or
   * those whose current run a token budget started.
   */
  runningTotals(of: { app: string } | { budget: string }, exceptId = ''): { machines: number; memoryMb: number; cpus: number } {
    const [whose, key] = 'app' in of ? ['app = ?', of.app] : [`id IN (${RUNS_OF_BUDGET})`, of.budget];
    const row = this.#db
      .prepare(
        `SELECT count(*) AS n, coalesce(sum(json_extract(config, '$.guest.memory_mb')), 0) AS mem,
          coalesce(sum(json_extract(config, '$.guest.cpus')), 0) AS cpus
          FROM machines WHERE ${whose} AND id != ? AND state IN ('starting', 'started', 'restarting')`,
      )
      .get(key, exceptId) as { n: number; mem: number; cpus: number };
    return { machines: Number(row.n), memoryMb: Number(row.mem), cpus: Number(row.cpus) };
  }

  insertMachine(m: MachineRecord): void {
    this.transaction(() => {
      this.#insertMachine(m);
      this.usage.enter(sized(m), Date.now());
    });
  }

  #insertMachine(m: MachineRecord): void {
    this.#db
      .prepare(
        `INSERT INTO machines (id, app, name, state, instance_id, config, image_ref, layer_dirs, private_ip,
          created_at, updated_at, restart_count, lease, cordoned, uid_base, disk_gb) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(...machineValues(m));
    this.addresses.changed();
  }

  /**
   * Also the usage ledger's record of a state (or size) change, in one transaction. `atMs`: when
   * the change happened, if earlier than now (an exit seen only after a daemon restart).
   */
  updateMachine(m: MachineRecord, atMs = Date.now()): void {
    this.transaction(() => {
      this.#updateMachine(m);
      this.usage.enter(sized(m), atMs);
    });
  }

  #updateMachine(m: MachineRecord): void {
    const [id, ...rest] = machineValues(m);
    this.#db
      .prepare(
        `UPDATE machines SET app = ?, name = ?, state = ?, instance_id = ?, config = ?, image_ref = ?, layer_dirs = ?,
          private_ip = ?, created_at = ?, updated_at = ?, restart_count = ?, lease = ?, cordoned = ?, uid_base = ?, disk_gb = ? WHERE id = ?`,
      )
      .run(...rest, id);
    this.addresses.changed();
  }

  getMachine(id: string): MachineRecord | undefined {
    const row = this.#db.prepare('SELECT * FROM machines WHERE id = ?').get(id) as Row | undefined;
    return row && toMachine(row);
  }

  listMachines(filter: { app?: string; includeDestroyed?: boolean } = {}): MachineRecord[] {
    const where: string[] = [];
    const args: string[] = [];
    if (filter.app !== undefined) {
      where.push('app = ?');
      args.push(filter.app);
    }
    if (!filter.includeDestroyed) where.push("state != 'destroyed'");
    const sql = `SELECT * FROM machines ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY created_at, id`;
    return (this.#db.prepare(sql).all(...args) as Row[]).map(toMachine);
  }

  findMachineByName(app: string, name: string): MachineRecord | undefined {
    const row = this.#db
      .prepare("SELECT * FROM machines WHERE app = ? AND name = ? AND state != 'destroyed'")
      .get(app, name) as Row | undefined;
    return row && toMachine(row);
  }

  addEvent(machineId: string, event: EventRecord): void {
    this.#db
      .prepare('INSERT INTO events (machine_id, id, type, status, source, timestamp, request) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(machineId, event.id, event.type, event.status, event.source, event.timestamp,
        event.request ? JSON.stringify(event.request) : null);
  }

  /** Newest first, as Fly lists them. */
  listEvents(machineId: string, limit = 100): EventRecord[] {
    const rows = this.#db
      .prepare('SELECT * FROM events WHERE machine_id = ? ORDER BY seq DESC LIMIT ?')
      .all(machineId, limit) as Row[];
    return rows.map((r) => ({
      id: String(r.id),
      type: String(r.type),
      status: String(r.status),
      source: r.source as EventSource,
      timestamp: Number(r.timestamp),
      ...(r.request ? { request: JSON.parse(String(r.request)) as Record<string, unknown> } : {}),
    }));
  }

  insertCheckpoint(c: CheckpointRecord): void {
    this.transaction(() => {
      this.#db
        .prepare('INSERT INTO checkpoints (id, machine_id, name, comment, created_at, size_bytes, parent_id, volumes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
        .run(c.id, c.machineId, c.name, c.comment, c.createdAt, c.sizeBytes, c.parentId, JSON.stringify(c.volumes));
      this.setCheckpointHead(c.machineId, c.id);
      this.usage.storage('checkpoint', c.id, this.getMachine(c.machineId)?.app ?? '', c.machineId, c.sizeBytes / 2 ** 30, Date.now());
    });
  }

  /** A machine's checkpoints, newest first. */
  listCheckpoints(machineId: string): CheckpointRecord[] {
    const rows = this.#db.prepare('SELECT * FROM checkpoints WHERE machine_id = ? ORDER BY created_at DESC, rowid DESC').all(machineId) as Row[];
    return rows.map(toCheckpoint);
  }

  /** By id or by name. */
  findCheckpoint(machineId: string, idOrName: string): CheckpointRecord | undefined {
    const row = this.#db.prepare('SELECT * FROM checkpoints WHERE machine_id = ? AND (id = ? OR name = ?)').get(machineId, idOrName, idOrName) as Row | undefined;
    return row && toCheckpoint(row);
  }

  /** Its children take its parent as theirs, so a parent_id always names a checkpoint that exists (or null). */
  deleteCheckpoint(c: CheckpointRecord): void {
    this.transaction(() => {
      this.#db.prepare('UPDATE checkpoints SET parent_id = ? WHERE parent_id = ?').run(c.parentId, c.id);
      this.#db.prepare('DELETE FROM checkpoints WHERE id = ?').run(c.id);
      this.usage.storage('checkpoint', c.id, '', c.machineId, 0, Date.now());
    });
  }

  deleteCheckpointsOf(machineId: string): void {
    this.#db.prepare('DELETE FROM checkpoints WHERE machine_id = ?').run(machineId);
    this.usage.machineCheckpointsGone(machineId, Date.now());
  }

  checkpointHead(machineId: string): string | null {
    const row = this.#db.prepare('SELECT checkpoint_head FROM machines WHERE id = ?').get(machineId) as Row | undefined;
    return row?.checkpoint_head ? String(row.checkpoint_head) : null;
  }

  setCheckpointHead(machineId: string, checkpointId: string | null): void {
    this.#db.prepare('UPDATE machines SET checkpoint_head = ? WHERE id = ?').run(checkpointId, machineId);
  }

  openIntent(machineId: string, action: string, fromState: string): number {
    const res = this.#db
      .prepare('INSERT INTO intents (machine_id, action, from_state, started_at) VALUES (?, ?, ?, ?)')
      .run(machineId, action, fromState, new Date().toISOString());
    return Number(res.lastInsertRowid);
  }

  closeIntent(seq: number, result: string): void {
    this.#db
      .prepare('UPDATE intents SET finished_at = ?, result = ? WHERE seq = ?')
      .run(new Date().toISOString(), result, seq);
  }

  openIntents(): IntentRecord[] {
    const rows = this.#db.prepare('SELECT * FROM intents WHERE finished_at IS NULL ORDER BY seq').all() as Row[];
    return rows.map((r) => ({
      seq: Number(r.seq),
      machineId: String(r.machine_id),
      action: String(r.action),
      fromState: String(r.from_state),
      startedAt: String(r.started_at),
    }));
  }
}

function sized(m: MachineRecord): SizedMachine {
  return { id: m.id, app: m.app, state: m.state, memoryMb: m.config.guest?.memory_mb ?? 0, cpus: m.config.guest?.cpus ?? 0, diskGb: m.diskGb };
}

function machineValues(m: MachineRecord) {
  return [
    m.id, m.app, m.name, m.state, m.instanceId, JSON.stringify(m.config), JSON.stringify(m.imageRef),
    JSON.stringify(m.layerDirs), m.privateIp, m.createdAt, m.updatedAt, m.restartCount,
    m.lease ? JSON.stringify(m.lease) : null, m.cordoned ? 1 : 0, m.uidBase, m.diskGb,
  ] as const;
}

function toApp(r: Row): AppRecord {
  return {
    name: String(r.name),
    id: String(r.id),
    network: String(r.network),
    createdAt: String(r.created_at),
    settings: {
      egress: r.egress === null ? DEFAULT_APP_SETTINGS.egress : (JSON.parse(String(r.egress)) as AppSettings['egress']),
      autostopIdleMs: r.autostop_idle_ms === null ? DEFAULT_APP_SETTINGS.autostopIdleMs : Number(r.autostop_idle_ms),
      nestedNamespaces: r.nested_namespaces === 1,
      limits: r.limits === null || r.limits === undefined ? {} : (JSON.parse(String(r.limits)) as AppSettings['limits']),
    },
  };
}

function toCheckpoint(r: Row): CheckpointRecord {
  return {
    id: String(r.id),
    machineId: String(r.machine_id),
    name: String(r.name),
    comment: String(r.comment),
    createdAt: String(r.created_at),
    sizeBytes: Number(r.size_bytes),
    parentId: r.parent_id === null ? null : String(r.parent_id),
    volumes: r.volumes ? (JSON.parse(String(r.volumes)) as string[]) : [],
  };
}

function toMachine(r: Row): MachineRecord {
  return {
    id: String(r.id),
    app: String(r.app),
    name: String(r.name),
    state: r.state as MachineState,
    instanceId: String(r.instance_id),
    config: JSON.parse(String(r.config)) as MachineConfig,
    imageRef: JSON.parse(String(r.image_ref)) as ImageRef,
    layerDirs: JSON.parse(String(r.layer_dirs)) as string[],
    privateIp: String(r.private_ip),
    createdAt: String(r.created_at),
    updatedAt: String(r.updated_at),
    restartCount: Number(r.restart_count),
    lease: r.lease ? (JSON.parse(String(r.lease)) as LeaseRecord) : null,
    cordoned: Number(r.cordoned) === 1,
    uidBase: Number(r.uid_base ?? 0),
    diskGb: Number(r.disk_gb ?? 0),
  };
}
