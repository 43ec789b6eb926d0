import { join } from 'node:path';
import { guardProcess } from '../process-guard.ts';
import { DEFAULT_MACHINE_CIDR } from '../network/addresses.ts';
import { GATEWAY_MAX_CONNECTIONS, GATEWAY_MAX_CONNECTIONS_PER_MACHINE } from '../network/gateway-api.ts';
import { DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_CLIENT } from '../proxy/edge-proxy.ts';
import { DEFAULT_REPLAY_BUFFER_BYTES } from '../proxy/replay.ts';
import { parseDurationMs } from '../protocol/duration.ts';
import { CliError, DEFAULT_API_LISTEN, DEFAULT_DATA_DIR, DEFAULT_PROXY_LISTEN, DEFAULT_PROXY_TLS_LISTEN } from './connect.ts';
import { parseFlags } from './args.ts';

export const serveUsage = `hangar serve [--data-dir DIR] [--api-listen HOST:PORT] [--insecure-registry HOST:PORT]...
             [--machine-cidr CIDR] [--proxy-listen HOST:PORT] [--proxy-tls-listen HOST:PORT]
             [--proxy-header-timeout DURATION] [--proxy-idle-timeout DURATION]
             [--proxy-max-connections N] [--proxy-max-connections-per-client N] [--proxy-replay-buffer-mb N]
             [--gateway-max-connections N] [--gateway-max-connections-per-machine N]
             [--tokenizer-listen HOST:PORT] [--tokenizer-allow-cidr CIDR]... [--tokenizer-upstream-ca FILE]...
  Runs the Hangar daemon in the foreground. SIGTERM stops it; machines keep running and are
  adopted when it starts again. Machines get private addresses from --machine-cidr (default
  ${DEFAULT_MACHINE_CIDR}), one /24 per app. The edge proxy (--proxy-listen, default
  ${DEFAULT_PROXY_LISTEN}) sends http://<app>.localhost:PORT/ to the app's machines, waking one if needed;
  --proxy-tls-listen (default ${DEFAULT_PROXY_TLS_LISTEN}) does the same over HTTPS, with certificates from
  Hangar's own CA (\`hangar tls ca\` prints it for clients to trust) or uploaded per app.
  A proxy client must send its request head within --proxy-header-timeout (default 10s); a
  connection quiet both ways for --proxy-idle-timeout (default 60s) is closed. WebSockets are
  exempt; an SSE stream stays open as long as it sends something (a comment line) within it.
  The proxy holds at most --proxy-max-connections client connections (default ${DEFAULT_MAX_CONNECTIONS}, fewer
  if the daemon's descriptor limit is low), --proxy-max-connections-per-client from one address
  (default ${DEFAULT_MAX_CONNECTIONS_PER_CLIENT}); more get 503 too_many_connections. Request bodies kept for fly-replay
  share --proxy-replay-buffer-mb (default ${DEFAULT_REPLAY_BUFFER_BYTES / 2 ** 20}). A machine may hold
  --gateway-max-connections-per-machine connections to its gateway's _api.internal and DNS
  (default ${GATEWAY_MAX_CONNECTIONS_PER_MACHINE}), all machines together --gateway-max-connections (default ${GATEWAY_MAX_CONNECTIONS}).
  The tokenizer proxy (Fly's tokenizer protocol) serves machines at http://_tokenizer.internal:4281;
  --tokenizer-listen serves it on the host as well. It sends secrets only to public addresses:
  --tokenizer-allow-cidr exempts a private range, --tokenizer-upstream-ca trusts another CA upstream
  (both for testing against local servers).`;

export async function serve(argv: string[]): Promise<void> {
  const { values } = parseFlags('serve', {
    args: argv,
    options: {
      'data-dir': { type: 'string', default: process.env.HANGAR_DATA_DIR ?? DEFAULT_DATA_DIR },
      'api-listen': { type: 'string', default: DEFAULT_API_LISTEN },
      'insecure-registry': { type: 'string', multiple: true, default: [] },
      'machine-cidr': { type: 'string' },
      'proxy-listen': { type: 'string', default: DEFAULT_PROXY_LISTEN },
      'proxy-tls-listen': { type: 'string', default: DEFAULT_PROXY_TLS_LISTEN },
      'proxy-header-timeout': { type: 'string' },
      'proxy-idle-timeout': { type: 'string' },
      'proxy-max-connections': { type: 'string' },
      'proxy-max-connections-per-client': { type: 'string' },
      'proxy-replay-buffer-mb': { type: 'string' },
      'gateway-max-connections': { type: 'string' },
      'gateway-max-connections-per-machine': { type: 'string' },
      'tokenizer-listen': { type: 'string' },
      'tokenizer-allow-cidr': { type: 'string', multiple: true, default: [] },
      'tokenizer-upstream-ca': { type: 'string', multiple: true, default: [] },
      quiet: { type: 'boolean', default: false },
    },
  });
  const api = hostPort('--api-listen', values['api-listen']);
  guardProcess();
  const proxy = hostPort('--proxy-listen', values['proxy-listen']);
  const proxyTls = hostPort('--proxy-tls-listen', values['proxy-tls-listen']);
  const tokenizer = values['tokenizer-listen'] === undefined ? undefined : hostPort('--tokenizer-listen', values['tokenizer-listen']);
  for (const cidr of values['tokenizer-allow-cidr']) {
    if (!/^[0-9a-f.:]+\/\d{1,3}$/i.test(cidr)) throw new CliError(`--tokenizer-allow-cidr ${cidr} is not a CIDR`, 'for example --tokenizer-allow-cidr 127.0.0.1/32');
  }
  // Loaded here, not with the CLI: the daemon's modules take most of a second to load, which every other command would pay.
  const { startDaemon } = await import('../daemon.ts');
  const daemon = await startDaemon({
    dataDir: values['data-dir'],
    apiHost: api.host,
    apiPort: api.port,
    proxyHost: proxy.host,
    proxyPort: proxy.port,
    proxyTlsHost: proxyTls.host,
    proxyTlsPort: proxyTls.port,
    insecureRegistries: values['insecure-registry'],
    ...(tokenizer ? { tokenizerHost: tokenizer.host, tokenizerPort: tokenizer.port } : {}),
    tokenizerAllowCidrs: values['tokenizer-allow-cidr'],
    tokenizerUpstreamCaFiles: values['tokenizer-upstream-ca'],
    ...(values['proxy-header-timeout'] ? { proxyHeaderTimeoutMs: durationFlag('--proxy-header-timeout', values['proxy-header-timeout']) } : {}),
    ...(values['proxy-idle-timeout'] ? { proxyIdleTimeoutMs: durationFlag('--proxy-idle-timeout', values['proxy-idle-timeout']) } : {}),
    ...(values['machine-cidr'] ? { machineCidr: values['machine-cidr'] } : {}),
    ...countFlag('--proxy-max-connections', values['proxy-max-connections'], 'proxyMaxConnections'),
    ...countFlag('--proxy-max-connections-per-client', values['proxy-max-connections-per-client'], 'proxyMaxConnectionsPerClient'),
    ...countFlag('--gateway-max-connections', values['gateway-max-connections'], 'gatewayMaxConnections'),
    ...countFlag('--gateway-max-connections-per-machine', values['gateway-max-connections-per-machine'], 'gatewayMaxConnectionsPerMachine'),
    ...(values['proxy-replay-buffer-mb'] === undefined
      ? {}
      : { proxyReplayBufferBytes: countFlag('--proxy-replay-buffer-mb', values['proxy-replay-buffer-mb'], 'mb', 0).mb! * 2 ** 20 }),
    logger: values.quiet ? false : { level: 'warn' },
  });
  const r = daemon.reconciled;
  // The token itself stays off the terminal (and out of scrollback and logs): say where it is.
  const token = process.env.HANGAR_TOKEN ? 'from $HANGAR_TOKEN' : `in ${join(values['data-dir'], 'token')} (mode 600)`;
  // The CLI finds this daemon by its data dir; off the default, the commands to try must say which.
  const cli = values['data-dir'] === DEFAULT_DATA_DIR ? './hangar' : `HANGAR_DATA_DIR=${values['data-dir']} ./hangar`;
  process.stdout.write(
    `Hangar is running.\n` +
      `  API:      ${daemon.url}   (OpenAPI at ${daemon.url}/openapi.json)\n` +
      `  proxy:    ${daemon.proxyUrl}   (http://<app>.localhost:<port>/ reaches the app's machines)\n` +
      `  https:    ${daemon.proxyTlsUrl}   (https://<app>.localhost:<port>/; trust the CA ${daemon.services.tls.ca.certPath})\n` +
      (daemon.tokenizerUrl ? `  tokenizer: ${daemon.tokenizerUrl}   (HTTP proxy with Proxy-Tokenizer; machines use http://_tokenizer.internal:4281)\n` : '') +
      `  token:    ${token}\n` +
      `  data dir: ${values['data-dir']}\n` +
      (r.adopted.length + r.exited.length + r.finished.length + r.cleaned.length
        ? `  reconciled: ${r.adopted.length} running adopted, ${r.exited.length} exited while down, ${r.finished.length} finished, ${r.cleaned.length} cleaned up\n`
        : '') +
      r.storage.map((line) => `  storage: ${line}\n`).join('') +
      (r.sessions && r.sessions.running.length + r.sessions.ended.length > 0
        ? `  sessions: ${r.sessions.running.length} still running, ${r.sessions.ended.length} ended while down\n`
        : '') +
      `Try:\n  ${cli} machines run hangar/busybox -- sh -c 'echo hello from a machine; sleep 3600'\n  ${cli} machines list\n`,
  );
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  await daemon.close();
}

/** `{ [key]: n }` for a flag given as a whole number of at least `min`; `{}` when absent. */
function countFlag<K extends string>(flag: string, text: string | undefined, key: K, min = 1): { [P in K]?: number } {
  if (text === undefined) return {};
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new CliError(`${flag} ${text} is not a whole number of at least ${min}`, `for example ${flag} 256`);
  return { [key]: n } as { [P in K]?: number };
}

function durationFlag(flag: string, text: string): number {
  const ms = parseDurationMs(text);
  if (ms === undefined || ms < 100) throw new CliError(`${flag} ${text} is not a duration of at least 100ms`, `for example ${flag} 30s`);
  return ms;
}

function hostPort(flag: string, listen: string): { host: string; port: number } {
  const sep = listen.lastIndexOf(':');
  const port = Number(listen.slice(sep + 1));
  if (sep <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new CliError(`${flag} ${listen} is not HOST:PORT`, `for example ${flag} 127.0.0.1:4280`);
  }
  return { host: listen.slice(0, sep).replace(/^\[|\]$/g, ''), port };
}
