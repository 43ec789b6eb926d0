import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

// A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on a random
// loopback port with its own temp storage. Always stop() it (in an `after` hook): the process is
// killed by PID and its storage removed.

const run = promisify(execFile);

export type TestRegistry = {
  /** `127.0.0.1:PORT` */
  host: string;
  /** Registry storage root (blobs live under docker/registry/v2/blobs/sha256/xx/HEX/data). */
  storageDir: string;
  stop(): Promise<void>;
};

export type TokenAuthConfig = {
  realm: string;
  service: string;
  issuer: string;
  /** PEM file with the certificate whose key signs the tokens. */
  rootCertBundle: string;
};

export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  server.close();
  await once(server, 'close');
  return port;
}

export async function startRegistry(options: { tokenAuth?: TokenAuthConfig } = {}): Promise<TestRegistry> {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-registry-'));
  const storageDir = join(dir, 'storage');
  const port = await freePort();
  const auth = options.tokenAuth
    ? `auth:\n  token:\n    realm: ${options.tokenAuth.realm}\n    service: ${options.tokenAuth.service}\n    issuer: ${options.tokenAuth.issuer}\n    rootcertbundle: ${options.tokenAuth.rootCertBundle}\n`
    : '';
  const config = `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${storageDir}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${port}
${auth}`;
  const configPath = join(dir, 'config.yml');
  await writeFile(configPath, config);
  const child = spawn('docker-registry', ['serve', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  const exited = once(child, 'exit');
  const host = `127.0.0.1:${port}`;

  const stop = async () => {
    if (child.exitCode === null && child.pid !== undefined) {
      process.kill(child.pid, 'SIGKILL');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`docker-registry exited: ${stderr}`);
      const res = await fetch(`http://${host}/v2/`).catch(() => undefined);
      // 401 is an answer too: the token-auth registry is up.
      if (res && (res.ok || res.status === 401)) break;
      if (Date.now() > deadline) throw new Error(`docker-registry did not start on ${host}: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { host, storageDir, stop };
}

/** Pushes an OCI layout (`DIR:TAG`) to `docker://REF`; `--all` keeps image indexes intact. */
export async function pushLayout(
  layoutDir: string,
  ref: string,
  options: { tag?: string; creds?: { username: string; password: string } } = {},
): Promise<void> {
  const args = ['copy', '--all', '--quiet', '--dest-tls-verify=false', '--preserve-digests'];
  if (options.creds) args.push('--dest-creds', `${options.creds.username}:${options.creds.password}`);
  args.push(`oci:${layoutDir}:${options.tag ?? 'latest'}`, `docker://${ref}`);
  await run('skopeo', args);
}

/** Path of a blob in the registry's storage, for tests that corrupt what the registry serves. */
export function registryBlobPath(registry: TestRegistry, digest: string): string {
  const hex = digest.replace(/^sha256:/, '');
  return join(registry.storageDir, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
}
