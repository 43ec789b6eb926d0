import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { HangarClient } from '../sdk/index.ts';

export const DEFAULT_DATA_DIR = '/var/lib/hangar';
export const DEFAULT_API_LISTEN = '127.0.0.1:4280';
export const DEFAULT_PROXY_LISTEN = '127.0.0.1:4380';
export const DEFAULT_PROXY_TLS_LISTEN = '127.0.0.1:4443';

function reader(dataDir: string | undefined): (name: string) => string | undefined {
  const dir = dataDir ?? process.env.HANGAR_DATA_DIR ?? DEFAULT_DATA_DIR;
  return (name) => {
    try {
      return readFileSync(join(dir, name), 'utf8').trim();
    } catch {
      return undefined;
    }
  };
}

/** Finds the API the way `serve` left it: HANGAR_API_URL/HANGAR_TOKEN, else the data dir's files. */
export function connect(dataDir?: string): HangarClient {
  const dir = dataDir ?? process.env.HANGAR_DATA_DIR ?? DEFAULT_DATA_DIR;
  const read = reader(dataDir);
  const baseUrl = process.env.HANGAR_API_URL ?? read('api-url') ?? `http://${DEFAULT_API_LISTEN}`;
  const token = process.env.HANGAR_TOKEN ?? read('token');
  if (!token) {
    throw new CliError(`no API token found (looked at HANGAR_TOKEN and ${join(dir, 'token')})`,
      'start the daemon with `hangar serve`, or set HANGAR_API_URL and HANGAR_TOKEN');
  }
  return new HangarClient({ baseUrl, token });
}

/** Where the edge proxy serves `app`, as the running daemon left its listeners in the data dir. */
export function proxyUrls(dataDir: string | undefined, app: string): string[] {
  const read = reader(dataDir);
  return [read('proxy-url'), read('proxy-tls-url')]
    .filter((url): url is string => Boolean(url))
    .map((url) => {
      const u = new URL(url);
      u.hostname = `${app}.localhost`;
      return u.toString();
    });
}

export class CliError extends Error {
  readonly hint: string | undefined;
  constructor(message: string, hint?: string) {
    super(message);
    this.hint = hint;
  }
}
