import type { Registry } from 'prom-client';
import type { ImageService } from '../images/image-service.ts';
import type { Activity } from '../machines/activity.ts';
import type { AppService } from '../machines/app-service.ts';
import type { CheckpointService } from '../machines/checkpoint-service.ts';
import type { CommitService } from '../machines/commit-service.ts';
import type { MachineAdmin } from '../machines/machine-admin.ts';
import type { MachineMetrics } from '../machines/machine-metrics.ts';
import type { UsageMeter } from '../machines/usage-meter.ts';
import type { EgressLog } from '../machines/egress-log.ts';
import type { LimitGuard } from '../machines/limits.ts';
import type { FileWatches } from '../machines/file-watches.ts';
import type { MachinePaths } from '../machines/machine-paths.ts';
import type { MachineRunner } from '../machines/machine-runner.ts';
import type { MachineService } from '../machines/machine-service.ts';
import type { VolumeService } from '../machines/volume-service.ts';
import type { SessionService } from '../machines/session-service.ts';
import type { ProxyTls } from '../proxy/tls/proxy-tls.ts';
import type { DaemonAddresses } from '../protocol/daemon-addresses.ts';
import type { TokenAuthority } from '../tokens/token-authority.ts';
import type { TokenizerService } from '../secrets/tokenizer-service.ts';
import type { AppSecrets } from '../secrets/app-secrets.ts';

/** What the API (and later MCP) turns requests into calls on. */
export type ApiServices = {
  apps: AppService;
  machines: MachineService;
  checkpoints: CheckpointService;
  commits: CommitService;
  volumes: VolumeService;
  /** Commands that outlive the connection. */
  sessions: SessionService;
  admin: MachineAdmin;
  runner: MachineRunner;
  images: ImageService;
  paths: MachinePaths;
  /** The edge proxy's CA and the certificates apps upload. */
  tls: ProxyTls;
  /** What counts as each machine being in use (autostop and lifetimes read it). */
  activity: Activity;
  /** Prometheus series of the daemon, the edge proxy and the machines, served at GET /metrics. */
  metrics: Registry;
  /** Each machine's resource use (GET …/metrics). */
  machineMetrics: MachineMetrics;
  /** Usage by the second per machine and app (GET …/usage). */
  usage: UsageMeter;
  /** Each machine's lookups and connections beyond its app (GET …/egress). */
  egressLog: EgressLog;
  /** The limits each app runs under. */
  limits: LimitGuard;
  /** Open watches of machines' files (GET …/files/watch). */
  fileWatches: FileWatches;
  /** Seals secrets for the tokenizer proxy (never opens them). */
  tokenizer: TokenizerService;
  /** App secrets (transparent mode): set, list, remove; values never come back out. */
  secrets: AppSecrets;
  /** Where this daemon serves; filled in as each listener binds (the API's first, the proxy's right after). */
  addresses: DaemonAddresses;
  /** Mints, verifies and revokes tokens (the admin token and narrowed ones). */
  tokens: TokenAuthority;
};
