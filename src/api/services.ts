import type { Registry } from 'prom-client';
import type { ImageService } from '../images/image-service.ts';
import type { Activity } from '../machines/activity.ts';
import type { AppService } from '../machines/app-service.ts';
import type { CheckpointService } from '../machines/checkpoint-service.ts';
import type { MachineAdmin } from '../machines/machine-admin.ts';
import type { MachinePaths } from '../machines/machine-paths.ts';
import type { MachineRunner } from '../machines/machine-runner.ts';
import type { MachineService } from '../machines/machine-service.ts';
import type { ProxyTls } from '../proxy/tls/proxy-tls.ts';

/** What the API (and later MCP) turns requests into calls on. */
export type ApiServices = {
  apps: AppService;
  machines: MachineService;
  checkpoints: CheckpointService;
  admin: MachineAdmin;
  runner: MachineRunner;
  images: ImageService;
  paths: MachinePaths;
  /** The edge proxy's CA and the certificates apps upload. */
  tls: ProxyTls;
  /** What counts as each machine being in use (autostop and lifetimes read it). */
  activity: Activity;
  /** Prometheus series of the daemon and the edge proxy, served at GET /metrics. */
  metrics: Registry;
};
