import { readFileSync } from 'node:fs';
import { HangarApiError } from '../sdk/index.ts';
import { nearest } from './args.ts';
import { cliHint } from './next-action.ts';
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
import { secrets, secretsUsage } from './secrets.ts';
import { sessions, sessionsUsage } from './sessions.ts';
import { tls, tlsUsage } from './tls.ts';
import { tokens, tokensUsage } from './tokens.ts';
import { volumes, volumesUsage } from './volumes.ts';
import { usage as usageCommand, usageUsage } from './usage.ts';

const usage = `hangar: machines for robots, shaped like Fly Machines

${serveUsage}

${appsUsage}

${machinesUsage}

${checkpointsUsage}

${volumesUsage}

${usageUsage}

${consoleUsage}

${sessionsUsage}

${filesUsage}

${imagesUsage}

${tlsUsage}

${tokensUsage}

${secretsUsage}

${networkUsage}

${mcpUsage}

\`hangar COMMAND --help\` shows one command's usage; \`hangar --version\` the version.
The CLI finds the API through HANGAR_API_URL and HANGAR_TOKEN, else through the files
\`hangar serve\` writes into its data dir (--data-dir, $HANGAR_DATA_DIR, default /var/lib/hangar).
`;

const USAGE_OF: Record<string, string> = {
  serve: serveUsage,
  apps: appsUsage,
  machines: machinesUsage,
  checkpoints: checkpointsUsage,
  console: consoleUsage,
  files: filesUsage,
  images: imagesUsage,
  tls: tlsUsage,
  tokens: tokensUsage,
  secrets: secretsUsage,
  network: networkUsage,
  mcp: mcpUsage,
  usage: usageUsage,
};
const ALIASES: Record<string, string> = { token: 'tokens', machine: 'machines', m: 'machines', checkpoint: 'checkpoints', secret: 'secrets' };
/** Groups that take a subcommand; alone, they print their usage. */
const WITH_SUBCOMMANDS = new Set(['apps', 'machines', 'checkpoints', 'files', 'images', 'tls', 'tokens', 'secrets', 'network']);

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  const group = first === undefined ? undefined : (ALIASES[first] ?? first);
  const flags = rest.includes('--') ? rest.slice(0, rest.indexOf('--')) : rest;
  if (group !== undefined && USAGE_OF[group] && (flags.includes('--help') || flags.includes('-h') || flags[0] === 'help' || (WITH_SUBCOMMANDS.has(group) && rest.length === 0))) {
    process.stdout.write(USAGE_OF[group] + '\n');
    return rest.length === 0 ? 2 : 0;
  }
  switch (group) {
    case 'serve':
      await serve(rest);
      return 0;
    case 'apps':
      return apps(rest);
    case 'machines':
      return machines(rest);
    case 'checkpoints':
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
    case 'usage':
      return usageCommand(rest);
    case 'tls':
      return tls(rest);
    case 'tokens':
      return tokens(rest);
    case 'secrets':
      return secrets(rest);
    case 'network':
      return network(rest);
    case '--version':
    case 'version':
      process.stdout.write(`hangar ${version()}\n`);
      return 0;
    case 'help':
      if (rest[0] && USAGE_OF[ALIASES[rest[0]] ?? rest[0]]) {
        process.stdout.write(USAGE_OF[ALIASES[rest[0]] ?? rest[0]]! + '\n');
        return 0;
      }
      process.stdout.write(usage);
      return 0;
    case undefined:
    case '--help':
    case '-h':
      process.stdout.write(usage);
      return group === undefined ? 2 : 0;
    default: {
      const guess = nearest(group, [...Object.keys(USAGE_OF), 'help', 'version']);
      throw new CliError(`unknown command ${group}`, `${guess ? `did you mean hangar ${guess}? ` : ''}run \`hangar help\` for the commands`);
    }
  }
}

function version(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof HangarApiError || err instanceof CliError || err instanceof HangarError) {
      process.stderr.write(`error: ${err.message}\n`);
      const hint = err instanceof HangarApiError ? cliHint(err) : err.hint;
      if (hint) process.stderr.write(`hint: ${hint}\n`);
      if ((err instanceof HangarApiError || err instanceof HangarError) && err.code !== 'internal') process.stderr.write(`code: ${err.code}\n`);
    } else {
      process.stderr.write(`error: ${(err as Error).stack ?? String(err)}\n`);
    }
    process.exit(1);
  },
);
