import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from './api/server.ts';
import { HangarError } from './protocol/errors.ts';
import { DEFAULT_APP_SETTINGS } from './protocol/app-settings.ts';
import { DEFAULT_LIMITS, effectiveLimits, LimitsSchema, type LimitsOverride } from './protocol/limits.ts';
import { LimitGuard } from './machines/limits.ts';
import type { ApiServices } from './api/services.ts';
import type { DaemonAddresses } from './protocol/daemon-addresses.ts';
import { createImageService } from './images/index.ts';
import { Activity } from './machines/activity.ts';
import { AppService } from './machines/app-service.ts';
import { MachineAdmin } from './machines/machine-admin.ts';
import { MachineMetrics } from './machines/machine-metrics.ts';
import { UsageMeter } from './machines/usage-meter.ts';
import { FileWatches } from './machines/file-watches.ts';
import { openStoragePool } from './storage/storage-pool.ts';
import { MachineDisks } from './storage/machine-disk.ts';
import { ImageTemplates } from './storage/disk-image.ts';
import { VolumeDisks } from './storage/volume-disk.ts';
import { VolumeService } from './machines/volume-service.ts';
import { CheckpointService } from './machines/checkpoint-service.ts';
import { CommitService } from './machines/commit-service.ts';
import { MachinePaths } from './machines/machine-paths.ts';
import { MachineRunner } from './machines/machine-runner.ts';
import { MachineService } from './machines/machine-service.ts';
import { Lifetimes } from './machines/lifetimes.ts';
import { SessionService } from './machines/session-service.ts';
import { reconcile, type ReconcileReport } from './machines/reconcile.ts';
import { StateWaiters } from './machines/state-waiters.ts';
import { Store } from './machines/store.ts';
import { TokenAuthority } from './tokens/token-authority.ts';
import { DEFAULT_MACHINE_CIDR, rangeCidr } from './network/addresses.ts';
import { ConnectionBudget } from './network/connection-budget.ts';
import { GATEWAY_MAX_CONNECTIONS, GATEWAY_MAX_CONNECTIONS_PER_MACHINE, GatewayApi } from './network/gateway-api.ts';
import { InternalDns, TOKENIZER_NAME } from './network/internal-dns.ts';
import { watchEgress } from './network/egress-watch.ts';
import { networkTag } from './network/names.ts';
import { EgressLog } from './machines/egress-log.ts';
import { TOKENIZER_PORT } from './network/firewall.ts';
import { SealingKeys } from './secrets/sealed-box.ts';
import { DestinationPolicy, upstreamLookup } from './secrets/destinations.ts';
import { EgressProxy } from './secrets/egress-proxy.ts';
import { GatewayEgress } from './network/gateway-egress.ts';
import { LeafIssuer } from './proxy/tls/leaf-issuer.ts';
import { TokenizerProxy } from './secrets/tokenizer-proxy.ts';
import { TokenizerService } from './secrets/tokenizer-service.ts';
import { AppSecrets } from './secrets/app-secrets.ts';
import { loadOrCreateEgressCa } from './secrets/egress-ca.ts';
import { upstreamResolver } from './network/resolv-conf.ts';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { CHECK_INTERVAL_MS, DEFAULT_MAX_CONNECTIONS, DEFAULT_PROXY_DOMAIN } from './proxy/edge-proxy.ts';
import { createEdge } from './proxy/edge.ts';
import { ProxyTls } from './proxy/tls/proxy-tls.ts';
import { MachineNetwork } from './network/machine-network.ts';
import { canonicalDataDir } from './network/names.ts';
import { tryLockDataDir, type DataDirLock } from './data-dir-lock.ts';
import { createDriver } from './runtime/drivers.ts';
import { resolveUser } from './runtime/resolve-user.ts';
import { machineNofileLimit } from './runtime/host-limits.ts';

// Wires every part of Hangar into one process (DESIGN.md, "Processes and ports").

export type DaemonOptions = {
  dataDir: string;
  apiHost: string;
  apiPort: number;
  /** The admin token; read from or generated into <dataDir>/token when absent. */
  token?: string;
  insecureRegistries?: string[];
  /** Where the edge proxy listens; no proxy when absent. */
  proxyHost?: string;
  proxyPort?: number;
  /** Where the proxy also serves HTTPS (certificates by SNI from Hangar's CA, or uploaded); needs proxyPort. */
  proxyTlsHost?: string;
  proxyTlsPort?: number;
  /** Slow-client limits of the proxy's listeners. */
  proxyHeaderTimeoutMs?: number;
  proxyIdleTimeoutMs?: number;
  /** Connection caps of the proxy: in total and per client address. */
  proxyMaxConnections?: number;
  proxyMaxConnectionsPerClient?: number;
  /** Memory for request bodies the proxy keeps for fly-replay, over all requests. */
  proxyReplayBufferBytes?: number;
  /** Connection caps of the gateways' services (_api.internal, DNS over TCP): in total and per machine address. */
  gatewayMaxConnections?: number;
  gatewayMaxConnectionsPerMachine?: number;
  /** Where the tokenizer proxy also listens on the host (it always serves _tokenizer.internal:4281 in each app's network). */
  tokenizerHost?: string;
  tokenizerPort?: number;
  /** Private ranges the tokenizer may send secrets to after all (tests: their loopback upstream). */
  tokenizerAllowCidrs?: string[];
  /** PEM files of CAs the tokenizer trusts for upstreams besides the system's (tests: their own CA). */
  tokenizerUpstreamCaFiles?: string[];
  /** The range machines' private addresses come from; one /24 per app. */
  machineCidr?: string;
  logger?: boolean | object;
};

export type Daemon = {
  url: string;
  /** The edge proxy's address, when it runs. */
  proxyUrl?: string;
  /** The proxy's HTTPS address, when it serves one. */
  proxyTlsUrl?: string;
  /** The tokenizer proxy's host listener, when it has one. */
  tokenizerUrl?: string;
  token: string;
  services: ApiServices;
  reconciled: ReconcileReport;
  server: FastifyInstance;
  /** Stops serving; machines keep running and are adopted by the next daemon. */
  close(): Promise<void>;
};

type FileConfig = {
  insecure_registries?: string[];
  registry_credentials?: Record<string, { username: string; password: string }>;
  machine_cidr?: string;
  /** Where machines' names outside .internal are looked up ("ADDRESS[:PORT]"); the host's resolver when absent. */
  dns_upstream?: string;
  /** Every app's limits unless it sets its own (protocol/limits.ts); fields left out keep Hangar's defaults. */
  limits?: LimitsOverride;
};

export async function startDaemon(startOpts: DaemonOptions): Promise<Daemon> {
  await mkdir(startOpts.dataDir, { recursive: true, mode: 0o700 });
  // Searchable, not readable, by others: a machine's root (an unprivileged host id) must traverse
  // it to reach its own root filesystem. What is secret in it (token, keys) is mode 600 itself.
  await chmod(startOpts.dataDir, 0o711);
  // One spelling of the data dir (`DIR/`, a symlink) for everything named after it.
  const opts = { ...startOpts, dataDir: canonicalDataDir(startOpts.dataDir) };
  const lock = await claimDataDir(opts.dataDir);
  try {
    return await serveDataDir(opts, lock);
  } catch (err) {
    lock.release();
    throw err;
  }
}

async function serveDataDir(opts: DaemonOptions, lock: DataDirLock): Promise<Daemon> {
  const token = opts.token ?? (await loadOrCreateToken(opts.dataDir));
  const fileConfig = await readFileConfig(opts.dataDir);

  const store = new Store(join(opts.dataDir, 'state.db'));
  const images = createImageService({
    root: join(opts.dataDir, 'images'),
    insecureRegistries: [...(fileConfig.insecure_registries ?? []), ...(opts.insecureRegistries ?? [])],
    credentials: fileConfig.registry_credentials,
  });
  const driver = createDriver('crun', { stateRoot: join(opts.dataDir, 'crun') });
  // Caps by default stay well inside the daemon's descriptors, whatever its limit.
  const descriptorShare = Math.max(64, Math.floor(machineNofileLimit() / 8));
  const gatewayBudget = new ConnectionBudget({
    total: opts.gatewayMaxConnections ?? Math.min(GATEWAY_MAX_CONNECTIONS, descriptorShare),
    perAddress: opts.gatewayMaxConnectionsPerMachine ?? GATEWAY_MAX_CONNECTIONS_PER_MACHINE,
  });
  await driver.checkHost();
  const paths = new MachinePaths(opts.dataDir);
  // The egress log's events, DNS steering and the secret proxies know a machine by its address.
  const sourceOf = (address: string) => store.addresses.holder(address);
  const egressLog = new EgressLog({ fileOf: (id) => paths.egressLog(id), machineAt: (ip) => sourceOf(ip)?.machine });
  // Its answers for `domains` apps are let out through the network, made just below.
  let network: MachineNetwork | undefined;
  const dnsUpstream = await upstreamResolver(fileConfig.dns_upstream);
  const dns = new InternalDns((subnetIndex) => {
    const app = store.appOfSubnet(subnetIndex);
    if (!app) return undefined;
    const machines = store.listMachines({ app }).filter((m) => m.privateIp);
    return {
      app,
      machines: machines.map((m) => ({ id: m.id, ip: m.privateIp, started: m.state === 'started' })),
      egress: store.getApp(app)?.settings.egress ?? { policy: 'deny' },
    };
  }, {
    upstream: dnsUpstream,
    budget: gatewayBudget,
    admit: async (subnetIndex, egress, addresses) => (network ? network.allowResolved(subnetIndex, egress, addresses) : false),
    onLookup: (lookup) => egressLog.lookup(lookup),
    steers: (app, name, asker) => {
      if (!appSecrets.allowsHost(app, name)) return false;
      const m = sourceOf(asker);
      return m !== undefined && runner.trustsEgressCa(m.machine);
    },
  });
  // Connections to a gateway's port 4280 are served by the API server once it exists.
  let apiServer: FastifyInstance | undefined;
  const gatewayApi = new GatewayApi({ target: () => apiServer?.server, budget: gatewayBudget });
  const metrics = new Registry();
  collectDefaultMetrics({ register: metrics, prefix: 'hangar_daemon_' });
  const sealingKeys = await SealingKeys.open(join(opts.dataDir, 'tokenizer.key'));
  const egressCa = await loadOrCreateEgressCa(join(opts.dataDir, 'egress-ca'));
  const upstreamCaPem = await Promise.all((opts.tokenizerUpstreamCaFiles ?? []).map((f) => readFile(f, 'utf8')));
  const tokenizerProxy = new TokenizerProxy({
    keys: sealingKeys,
    destinations: new DestinationPolicy(opts.tokenizerAllowCidrs),
    extraCaPem: upstreamCaPem,
    sourceOf,
    registry: metrics,
  });
  const appSecrets = new AppSecrets(store.secrets, sealingKeys, (app) => void apps.get(app));
  const egressProxy = new EgressProxy({
    secrets: appSecrets,
    issuer: new LeafIssuer(egressCa),
    // The real host is asked of the upstream resolver, never of the steering DNS (nor the host's, which may be it).
    destinations: new DestinationPolicy(opts.tokenizerAllowCidrs, dnsUpstream ? upstreamLookup(dnsUpstream) : undefined),
    extraCaPem: upstreamCaPem,
    sourceOf,
    registry: metrics,
  });
  const gatewayEgress = new GatewayEgress({ tls: (socket) => egressProxy.tls(socket), plain: (socket) => egressProxy.plain(socket) }, gatewayBudget);
  const gatewayTokenizer = new GatewayApi({ target: () => tokenizerProxy.server, budget: gatewayBudget, port: TOKENIZER_PORT, service: TOKENIZER_NAME });
  network = new MachineNetwork({
    dataDir: opts.dataDir,
    machineCidr: opts.machineCidr ?? fileConfig.machine_cidr ?? DEFAULT_MACHINE_CIDR,
    // A subnet no app holds has no machines; nothing may leave it.
    egressOf: (subnetIndex) => store.getApp(store.appOfSubnet(subnetIndex) ?? '')?.settings.egress ?? { policy: 'deny' },
    machines: () => store.listMachines().flatMap((m) => (m.privateIp ? [{ id: m.id, ip: m.privateIp }] : [])),
    // Names and the internal API are conveniences: a gateway port that is taken must not stop machines from running.
    onBridgeUp: async (subnet) => {
      await dns.serve(subnet.index, subnet.gateway).catch((err: Error) => {
        process.stderr.write(`hangar: no .internal names on ${subnet.gateway}: ${err.message}\n`);
      });
      await gatewayApi.serve(subnet.index, subnet.gateway).catch((err: Error) => {
        process.stderr.write(`hangar: no _api.internal on ${subnet.gateway}: ${err.message}\n`);
      });
      await gatewayTokenizer.serve(subnet.index, subnet.gateway).catch((err: Error) => {
        process.stderr.write(`hangar: no ${TOKENIZER_NAME} on ${subnet.gateway}: ${err.message}\n`);
      });
      await gatewayEgress.serve(subnet.index, subnet.gateway).catch((err: Error) => {
        process.stderr.write(`hangar: no egress proxy for app secrets on ${subnet.gateway}: ${err.message}\n`);
      });
    },
    onBridgeDown: (subnetIndex) => {
      dns.stop(subnetIndex);
      gatewayApi.stop(subnetIndex);
      gatewayTokenizer.stop(subnetIndex);
      gatewayEgress.stop(subnetIndex);
    },
  });
  await network.setUp();
  const egressWatch = await watchEgress({
    tag: networkTag(opts.dataDir), machineCidr: rangeCidr(network.range),
    onObservation: (o) => egressLog.observe(o),
    onProblem: (message) => process.stderr.write(`hangar: egress log: ${message}\n`),
  });
  const pool = await openStoragePool(opts.dataDir);
  const templates = new ImageTemplates(pool.root);
  const disks = new MachineDisks(pool, templates, (id) => paths.disk(id));
  const volumeDisks = new VolumeDisks(pool, templates, join(opts.dataDir, 'volumes'));
  const usage = new UsageMeter({ store, traffic: (id) => network.traffic(id) });
  const runner = new MachineRunner(
    driver, paths, resolveUser, network, { disks, volumes: volumeDisks }, (app) => store.getApp(app)?.settings ?? DEFAULT_APP_SETTINGS, (id) => usage.runEnded(id),
    (app) => ({ placeholders: appSecrets.placeholders(app), egressCaPem: egressCa.certPem }),
  );
  const waiters = new StateWaiters();
  const limits = new LimitGuard({ store, defaults: effectiveLimits(DEFAULT_LIMITS, LimitsSchema.parse(fileConfig.limits ?? {})), appLimits: (app) => store.getApp(app)?.settings.limits });
  const machines = new MachineService({ store, images, runner, waiters, machineRange: network.range, limits });
  const machineMetrics = new MachineMetrics({ machines: () => store.listMachines(), disk: (m) => runner.diskUsage(m), traffic: (id) => network.traffic(id) });
  machineMetrics.register(metrics);
  usage.register(metrics);
  const fileWatches = new FileWatches({ machines, runner, onStateChange: (listener) => waiters.onChange(listener) });
  const tls = await ProxyTls.open({ dir: join(opts.dataDir, 'tls'), domain: DEFAULT_PROXY_DOMAIN, appId: (name) => store.getApp(name)?.id });
  // Each asks the other: volumes whether an app exists, apps to delete an app's volumes with it.
  const volumes: VolumeService = new VolumeService({ store, disks: volumeDisks, assertApp: (app) => void apps.get(app), limits });
  const apps = new AppService(store, machines, network, volumes);
  const checkpoints = new CheckpointService({ store, machines, runner, volumes });
  const commits = new CommitService({ machines, checkpoints, runner, images });
  const activity = new Activity({ busyElsewhere: (id) => sessions.runningOn(id) });
  const sessions = new SessionService({ store, machines, driver, paths, onActivity: (id) => activity.touch(id) });
  waiters.onChange((change) => {
    if (change.state === 'destroyed') activity.forget(change.id);
  });
  const addresses: DaemonAddresses = { api_url: '', app_domain: DEFAULT_PROXY_DOMAIN };
  const tokens = await TokenAuthority.open(opts.dataDir, token, store.revocations);
  const services: ApiServices = { apps, machines, checkpoints, commits, volumes, sessions, admin: new MachineAdmin(machines), runner, images, paths, metrics, machineMetrics, usage, egressLog, limits, fileWatches, tls, addresses, activity, tokens,
    tokenizer: new TokenizerService(sealingKeys, `http://${TOKENIZER_NAME}:${TOKENIZER_PORT}`), secrets: appSecrets };

  const reconciled = await reconcile({ store, machines, runner, driver, images, paths });
  // After the machines: a session's end is told apart from its machine's by the machine's state.
  reconciled.sessions = sessions.reconcile();
  const lifetimes = new Lifetimes({ store, machines, activity, waiters });
  lifetimes.start();

  const server = createApiServer({ services, tokens, originOf: (req) => gatewayApi.originOf(req), logger: opts.logger });
  apiServer = server;
  await server.listen({ host: opts.apiHost, port: opts.apiPort });
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : opts.apiPort;
  const url = `http://${opts.apiHost.includes(':') ? `[${opts.apiHost}]` : opts.apiHost}:${port}`;
  addresses.api_url = url;
  await writeFile(join(opts.dataDir, 'api-url'), url + '\n');

  let tokenizerUrl: string | undefined;
  if (opts.tokenizerPort !== undefined) {
    const host = opts.tokenizerHost ?? '127.0.0.1';
    tokenizerUrl = `http://${host.includes(':') ? `[${host}]` : host}:${await tokenizerProxy.listen(host, opts.tokenizerPort)}`;
    await writeFile(join(opts.dataDir, 'tokenizer-url'), tokenizerUrl + '\n');
  }

  const edge = opts.proxyPort === undefined ? undefined : createEdge({
    store, waiters, apps: services.apps, machines, activity, registry: metrics, domain: DEFAULT_PROXY_DOMAIN,
    headerTimeoutMs: opts.proxyHeaderTimeoutMs, idleTimeoutMs: opts.proxyIdleTimeoutMs,
    maxConnections: opts.proxyMaxConnections ?? Math.min(DEFAULT_MAX_CONNECTIONS, descriptorShare),
    maxConnectionsPerClient: opts.proxyMaxConnectionsPerClient, replayBufferBytes: opts.proxyReplayBufferBytes,
    idleMsOf: (app) => services.apps.settings(app).autostopIdleMs,
    appForHostname: (host) => tls.appForHostname(host),
  });
  const proxy = edge?.proxy;
  let proxyUrl: string | undefined;
  let proxyTlsUrl: string | undefined;
  if (proxy) {
    await new Promise<void>((resolve, reject) => proxy.server.once('error', reject).listen(opts.proxyPort, opts.proxyHost, () => resolve()));
    const proxyAddress = proxy.server.address();
    proxyUrl = `http://${opts.proxyHost}:${typeof proxyAddress === 'object' && proxyAddress ? proxyAddress.port : opts.proxyPort}`;
    addresses.proxy_url = proxyUrl;
    if (opts.proxyTlsPort !== undefined) {
      const tlsServer = tls.createServer({ connectionsCheckingInterval: CHECK_INTERVAL_MS });
      proxy.attach(tlsServer);
      await new Promise<void>((resolve, reject) => tlsServer.once('error', reject).listen(opts.proxyTlsPort, opts.proxyTlsHost, () => resolve()));
      const tlsAddress = tlsServer.address();
      proxyTlsUrl = `https://${opts.proxyTlsHost}:${typeof tlsAddress === 'object' && tlsAddress ? tlsAddress.port : opts.proxyTlsPort}`;
      addresses.proxy_tls_url = proxyTlsUrl;
      await writeFile(join(opts.dataDir, 'proxy-tls-url'), proxyTlsUrl + '\n');
    }
    // Written last: tests and scripts take it to mean everything serves.
    await writeFile(join(opts.dataDir, 'proxy-url'), proxyUrl + '\n');
  }

  return {
    url,
    ...(proxyUrl ? { proxyUrl } : {}),
    ...(proxyTlsUrl ? { proxyTlsUrl } : {}),
    ...(tokenizerUrl ? { tokenizerUrl } : {}),
    token,
    services,
    reconciled,
    server,
    close: async () => {
      lifetimes.close();
      machines.close();
      sessions.close();
      dns.close();
      egressWatch.close();
      await egressLog.flush();
      gatewayApi.close();
      gatewayTokenizer.close();
      tokenizerProxy.close();
      gatewayEgress.close();
      egressProxy.close();
      await edge?.close();
      await server.close();
      store.close();
      await disks.close();
      // Nothing of this daemon's network is left behind unless a machine still uses it.
      await network.tearDownIfIdle().catch((err: Error) => process.stderr.write(`hangar: could not remove the machine network: ${err.message}\n`));
      await rm(join(opts.dataDir, 'daemon.pid'), { force: true });
      lock.release();
    },
  };
}

/**
 * One daemon per data dir: two would adopt, stop and restart each other's machines. The flock
 * decides (data-dir-lock.ts; it goes with the process however it ends); daemon.pid only names
 * the holder for the message.
 */
async function claimDataDir(dataDir: string): Promise<DataDirLock> {
  const pidFile = join(dataDir, 'daemon.pid');
  const lock = await tryLockDataDir(dataDir);
  if (!lock) {
    const pid = Number.parseInt(await readFile(pidFile, 'utf8').catch(() => ''), 10);
    const who = pid > 0 ? `another Hangar daemon (pid ${pid})` : 'another Hangar daemon';
    throw new HangarError('host_unsupported', `${who} serves ${dataDir}`, {
      hint: `stop it first${pid > 0 ? ` (kill -TERM ${pid})` : ''}, or give this one another --data-dir`,
    });
  }
  await writeFile(pidFile, `${process.pid}\n`);
  return lock;
}

async function loadOrCreateToken(dataDir: string): Promise<string> {
  if (process.env.HANGAR_TOKEN) return process.env.HANGAR_TOKEN;
  const path = join(dataDir, 'token');
  const existing = await readFile(path, 'utf8').then((t) => t.trim(), () => '');
  if (existing) return existing;
  const token = 'hgr_' + randomBytes(24).toString('base64url');
  await writeFile(path, token + '\n', { mode: 0o600 });
  await chmod(path, 0o600);
  return token;
}

async function readFileConfig(dataDir: string): Promise<FileConfig> {
  const text = await readFile(join(dataDir, 'config.json'), 'utf8').catch(() => '');
  return text ? (JSON.parse(text) as FileConfig) : {};
}
