import { parseArgs } from 'node:util';
import { startDaemon } from '../daemon.ts';
import { DEFAULT_MACHINE_CIDR } from '../network/addresses.ts';
import { CliError, DEFAULT_API_LISTEN, DEFAULT_DATA_DIR } from './connect.ts';

export const serveUsage = `hangar serve [--data-dir DIR] [--api-listen HOST:PORT] [--insecure-registry HOST:PORT]...
             [--machine-cidr CIDR]
  Runs the Hangar daemon in the foreground. SIGTERM stops it; machines keep running and are
  adopted when it starts again. Machines get private addresses from --machine-cidr (default
  ${DEFAULT_MACHINE_CIDR}), one /24 per app.`;

export async function serve(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      'data-dir': { type: 'string', default: process.env.HANGAR_DATA_DIR ?? DEFAULT_DATA_DIR },
      'api-listen': { type: 'string', default: DEFAULT_API_LISTEN },
      'insecure-registry': { type: 'string', multiple: true, default: [] },
      'machine-cidr': { type: 'string' },
      quiet: { type: 'boolean', default: false },
    },
  });
  const listen = values['api-listen'];
  const sep = listen.lastIndexOf(':');
  const port = Number(listen.slice(sep + 1));
  if (sep <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new CliError(`--api-listen ${listen} is not HOST:PORT`, 'for example --api-listen 127.0.0.1:4280');
  }
  const daemon = await startDaemon({
    dataDir: values['data-dir'],
    apiHost: listen.slice(0, sep).replace(/^\[|\]$/g, ''),
    apiPort: port,
    insecureRegistries: values['insecure-registry'],
    ...(values['machine-cidr'] ? { machineCidr: values['machine-cidr'] } : {}),
    logger: values.quiet ? false : { level: 'warn' },
  });
  const r = daemon.reconciled;
  process.stdout.write(
    `Hangar is running.\n` +
      `  API:      ${daemon.url}   (OpenAPI at ${daemon.url}/openapi.json)\n` +
      `  token:    ${daemon.token}\n` +
      `  data dir: ${values['data-dir']}\n` +
      (r.adopted.length + r.exited.length + r.finished.length + r.cleaned.length
        ? `  reconciled: ${r.adopted.length} running adopted, ${r.exited.length} exited while down, ${r.finished.length} finished, ${r.cleaned.length} cleaned up\n`
        : '') +
      `Try:\n  ./hangar machines run hangar/busybox -- sh -c 'echo hello from a machine; sleep 3600'\n  ./hangar machines list\n`,
  );
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  await daemon.close();
}
