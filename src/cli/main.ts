import { HangarApiError } from '../sdk/index.ts';
import { apps, appsUsage } from './apps.ts';
import { CliError } from './connect.ts';
import { HangarError } from '../protocol/errors.ts';
import { files, filesUsage } from './files.ts';
import { checkpoints, checkpointsUsage } from './checkpoints.ts';
import { consoleCommand, consoleUsage } from './console.ts';
import { images, imagesUsage } from './images.ts';
import { machines, machinesUsage } from './machines.ts';
import { mcp, mcpUsage } from './mcp.ts';
import { network, networkUsage } from './network.ts';
import { serve, serveUsage } from './serve.ts';
import { sessions, sessionsUsage } from './sessions.ts';
import { tls, tlsUsage } from './tls.ts';
import { volumes, volumesUsage } from './volumes.ts';

const usage = `hangar: machines for robots, shaped like Fly Machines

${serveUsage}

${appsUsage}

${machinesUsage}

${checkpointsUsage}

${volumesUsage}

${consoleUsage}

${sessionsUsage}

${filesUsage}

${imagesUsage}

${tlsUsage}

${networkUsage}

${mcpUsage}

The CLI finds the API through HANGAR_API_URL and HANGAR_TOKEN, else through the files
\`hangar serve\` writes into its data dir (--data-dir, $HANGAR_DATA_DIR, default /var/lib/hangar).
`;

async function main(argv: string[]): Promise<number> {
  const [group, ...rest] = argv;
  switch (group) {
    case 'serve':
      await serve(rest);
      return 0;
    case 'apps':
      return apps(rest);
    case 'machines':
    case 'machine':
    case 'm':
      return machines(rest);
    case 'checkpoints':
    case 'checkpoint':
      return checkpoints(rest);
    case 'volumes':
    case 'volume':
    case 'vol':
      return volumes(rest);
    case 'console':
      return consoleCommand(rest);
    case 'sessions':
    case 'session':
      return sessions(rest);
    case 'files':
      return files(rest);
    case 'images':
      return images(rest);
    case 'mcp':
      return mcp(rest);
    case 'tls':
      return tls(rest);
    case 'network':
      return network(rest);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(usage);
      return group === undefined ? 2 : 0;
    default:
      throw new CliError(`unknown command ${group}`, 'run `hangar help` for the commands');
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof HangarApiError || err instanceof CliError || err instanceof HangarError) {
      process.stderr.write(`error: ${err.message}\n`);
      if (err.hint) process.stderr.write(`hint: ${err.hint}\n`);
      if ((err instanceof HangarApiError || err instanceof HangarError) && err.code !== 'internal') process.stderr.write(`code: ${err.code}\n`);
    } else if ((err as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || (err as { code?: string }).code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      process.stderr.write(`error: ${(err as Error).message}\nhint: run \`hangar help\`\n`);
    } else {
      process.stderr.write(`error: ${(err as Error).stack ?? String(err)}\n`);
    }
    process.exit(1);
  },
);
