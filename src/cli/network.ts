import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tryLockDataDir } from '../data-dir-lock.ts';
import { findLeftovers, namespacesInUse, removeLeftovers } from '../network/leftovers.ts';
import { canonicalDataDir, networkTag } from '../network/names.ts';
import { CliError, DEFAULT_DATA_DIR } from './connect.ts';
import { printJson } from './output.ts';
import { parseFlags } from './args.ts';

export const networkUsage = `hangar network prune [--data-dir DIR] [--force] [--json]
  Removes what a Hangar daemon made on the host for DIR's machines (their network namespaces,
  the app bridges, its nftables tables) when no daemon serves DIR: after a kill -9, or when DIR
  is gone. \`hangar serve\` does it itself on SIGTERM when no machine runs. Refused while a daemon
  serves DIR, and while machines still run in those namespaces (--force takes their network away).`;

export async function network(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const { values } = parseFlags('network', {
    args: rest,
    options: {
      'data-dir': { type: 'string', default: process.env.HANGAR_DATA_DIR || DEFAULT_DATA_DIR },
      force: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  });
  if (verb !== 'prune') throw new CliError(`unknown command: network ${verb ?? ''}`.trim(), networkUsage);
  const dataDir = canonicalDataDir(values['data-dir']);
  // Held while pruning, so no daemon starts on DIR halfway through.
  const lock = existsSync(dataDir) ? await tryLockDataDir(dataDir) : { release: () => {} };
  if (!lock) {
    const pid = Number.parseInt(await readFile(join(dataDir, 'daemon.pid'), 'utf8').catch(() => ''), 10);
    throw new CliError(`a Hangar daemon${pid > 0 ? ` (pid ${pid})` : ''} serves ${dataDir}; its network is in use`, `stop it first${pid > 0 ? ` (kill -TERM ${pid})` : ''}: on SIGTERM it removes its network itself when no machine runs`);
  }
  try {
    const tag = networkTag(dataDir);
    const found = await findLeftovers(tag);
    const busy = await namespacesInUse(found.namespaces);
    if (busy.length > 0 && !values.force) {
      throw new CliError(
        `${busy.length} machine${busy.length === 1 ? '' : 's'} of ${dataDir} still run${busy.length === 1 ? 's' : ''} in ${busy.join(', ')}`,
        `start the daemon again (hangar serve --data-dir ${dataDir}) and stop them, or pass --force to take their network away`,
      );
    }
    await removeLeftovers(found);
    if (values.json) {
      printJson({ data_dir: dataDir, network_tag: tag, removed: found });
    } else if (found.namespaces.length + found.bridges.length + found.tables.length === 0) {
      process.stdout.write(`nothing to remove for ${dataDir} (network tag ${tag})\n`);
    } else {
      process.stdout.write(
        `removed the network of ${dataDir} (network tag ${tag}):\n` +
          (found.namespaces.length ? `  namespaces: ${found.namespaces.join(' ')}\n` : '') +
          (found.bridges.length ? `  bridges: ${found.bridges.join(' ')}\n` : '') +
          (found.tables.length ? `  nftables tables: ${found.tables.join(', ')}\n` : ''),
      );
    }
    return 0;
  } finally {
    lock.release();
  }
}
