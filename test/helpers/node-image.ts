import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat, mkdtemp, readdir, readFile, readlink, realpath, rename, rm, stat, utimes } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { promisify } from 'node:util';
import type { MachineConfig } from '../../src/protocol/machine-config.ts';
import { REPO, withDaemon, type TestDaemon } from './daemon.ts';
import { writeLayout, type TarEntry } from './oci-layout.ts';
import { pushLayout, startRegistry } from './registry.ts';

// A test image that runs real Node servers: the project's own Node binary (.tools/node) with the
// shared libraries it links against, static busybox (so `sh` and friends exist), the fixture
// servers of test/fixtures/servers under /app, and in /app/node_modules only the packages they
// import (`ws`, and the dependency closure of @modelcontextprotocol/sdk from package-lock.json).
//
// It reaches a daemon the way any user's image does: pushed to a real registry on loopback and
// pulled by the daemon, which must list that registry as insecure. The usual story:
//
//   let d: NodeDaemon;
//   before(async () => { d = await withNodeDaemon(); await d.client.apps.create('app'); });
//   after(async () => { await d?.close(); });           // daemon, data dir and registry
//
//   const m = await d.client.machines.create('app', { config: nodeServerConfig(d.nodeImage, 'sse') });
//   await waitForPort(m.private_ip, FIXTURE_PORT);       // node takes ~100 ms to listen
//   fetch(`http://${m.private_ip}:${FIXTURE_PORT}/events?every_ms=50&count=3`)   // directly, or through
//   the proxy: node:http's request() to d.proxyUrl with `host: app.localhost` (fetch drops Host)
//
// With a daemon of your own: `const src = await serveNodeImage()`, then
// `withDaemon([...src.daemonArgs, ...yours])`, machines from `src.image`, and `src.stop()` last.
//
// The built layout is kept in $TMPDIR/hangar-test-node-image-<digest of its inputs> for the next
// test file to push as is (scripts/test.sh removes it when the run ends); a build for other inputs
// replaces it once it is an hour old.
//
// The fixtures (each listens on argv[2], else $PORT, else 8080; see each file's header):
//   http     100-byte body on every path, keep-alive; GET /headers → the request headers as JSON
//   sse      GET /events?every_ms=N&count=M → a `headers` event, then `tick` events every N ms
//   ws-echo  WebSocket echo on any path; first message is a JSON hello with the forwarded headers
//   mcp      MCP over Streamable HTTP at /mcp, with sessions; tools `echo` and `count`

export const FIXTURE_SERVERS = ['http', 'sse', 'ws-echo', 'mcp'] as const;
export type FixtureServer = (typeof FIXTURE_SERVERS)[number];
/** The port fixtures listen on unless told otherwise. */
export const FIXTURE_PORT = 8080;

const run = promisify(execFile);
const NODE = join(REPO, '.tools/node/bin/node');
const FIXTURES = join(REPO, 'test/fixtures/servers');
const ROOTS = ['node_modules/ws', 'node_modules/@modelcontextprotocol/sdk'];
const TAG = '1';
const MTIME = new Date('2024-01-02T03:04:05Z');

type LockPackage = { dependencies?: Record<string, string>; optionalDependencies?: Record<string, string>; peerDependencies?: Record<string, string> };

/** Package dirs (`node_modules/…` paths as package-lock.json names them) that `roots` need at run time. */
export async function dependencyClosure(roots: string[]): Promise<string[]> {
  const lock = JSON.parse(await readFile(join(REPO, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockPackage> };
  // Node's lookup: the nearest node_modules/<name> walking up from the requiring package.
  const resolve = (from: string, name: string): string | undefined => {
    for (let base = from; ; ) {
      const candidate = `${base ? `${base}/` : ''}node_modules/${name}`;
      if (lock.packages[candidate]) return candidate;
      if (!base) return undefined;
      const up = base.lastIndexOf('/node_modules/');
      base = up < 0 ? '' : base.slice(0, up);
    }
  };
  const seen = new Set<string>();
  const todo = [...roots];
  while (todo.length > 0) {
    const path = todo.pop()!;
    if (seen.has(path)) continue;
    const pkg = lock.packages[path];
    if (!pkg) throw new Error(`${path} is not in package-lock.json; run npm ci`);
    seen.add(path);
    // Optional and peer dependencies that were not installed are not needed either.
    for (const name of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies, ...pkg.peerDependencies })) {
      const found = resolve(path, name);
      if (found) todo.push(found);
      else if (pkg.dependencies?.[name]) throw new Error(`${path} depends on ${name}, which package-lock.json does not have`);
    }
  }
  return [...seen].sort();
}

// Type declarations and source maps are never loaded at run time, and they are a third of the
// files the daemon would unpack.
const TYPES_OR_MAPS = /\.(d\.[cm]?ts|map)$/;

/** Files of a package as tar entries under `dest`; nested node_modules are left out (the closure lists those it needs). */
async function treeEntries(src: string, dest: string, out: TarEntry[]): Promise<void> {
  for (const name of (await readdir(src)).sort()) {
    if (name === 'node_modules' || TYPES_OR_MAPS.test(name)) continue;
    const from = join(src, name);
    const to = posix.join(dest, name);
    const st = await lstat(from);
    if (st.isDirectory()) {
      out.push({ name: `${to}/`, type: 'directory', mode: 0o755, mtime: MTIME });
      await treeEntries(from, to, out);
    } else if (st.isSymbolicLink()) {
      out.push({ name: to, type: 'symlink', linkname: await readlink(from), mtime: MTIME });
    } else if (st.isFile()) {
      out.push({ name: to, content: await readFile(from), mode: st.mode & 0o111 ? 0o755 : 0o644, mtime: MTIME });
    }
  }
}

/** The shared libraries `ldd` says the binary loads, as [path in the image, file on the host]. */
async function sharedLibraries(binary: string): Promise<Array<[string, string]>> {
  const { stdout } = await run('ldd', [binary]);
  const libs: Array<[string, string]> = [];
  for (const line of stdout.split('\n')) {
    const path = /=>\s*(\/\S+)/.exec(line)?.[1] ?? /^\s*(\/\S+)\s+\(/.exec(line)?.[1];
    if (path) libs.push([path.slice(1), await realpath(path)]);
  }
  return libs;
}

async function busyboxEntries(): Promise<TarEntry[]> {
  const { stdout } = await run('/bin/busybox', ['--list-full']);
  const applets = stdout.split('\n').map((l) => l.trim()).filter((l) => l && l !== 'bin/busybox');
  return [
    { name: 'bin/busybox', content: await readFile('/bin/busybox'), mode: 0o755, mtime: MTIME },
    ...applets.map((a): TarEntry => ({ name: a, type: 'symlink', linkname: '/bin/busybox', mtime: MTIME })),
  ];
}

/** Every parent directory of `entries` that is not itself an entry, so the tar creates each with a known mode. */
function parentDirs(entries: TarEntry[]): TarEntry[] {
  const listed = new Set(entries.filter((e) => e.type === 'directory').map((e) => e.name.replace(/\/$/, '')));
  const needed = new Set<string>(['proc', 'sys', 'dev', 'etc', 'root', 'var']);
  for (const e of entries) {
    const parts = e.name.replace(/\/$/, '').split('/');
    for (let i = 1; i < parts.length; i++) needed.add(parts.slice(0, i).join('/'));
  }
  return [...needed].filter((d) => !listed.has(d)).sort().map((d): TarEntry => ({ name: `${d}/`, type: 'directory', mode: d === 'root' ? 0o700 : 0o755, mtime: MTIME }));
}

/** Writes the image as an OCI layout at `dir`, tagged `1`. */
export async function writeNodeImageLayout(dir: string): Promise<void> {
  const files: TarEntry[] = [
    ...(await busyboxEntries()),
    { name: 'usr/local/bin/node', content: await readFile(NODE), mode: 0o755, mtime: MTIME },
    { name: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n', mtime: MTIME },
    { name: 'etc/group', content: 'root:x:0:\nnogroup:x:65534:\n', mtime: MTIME },
    { name: 'tmp/', type: 'directory', mode: 0o1777, mtime: MTIME },
  ];
  for (const [inImage, onHost] of await sharedLibraries(NODE)) files.push({ name: inImage, content: await readFile(onHost), mode: 0o755, mtime: MTIME });
  for (const name of (await readdir(FIXTURES)).filter((n) => n.endsWith('.mjs'))) {
    files.push({ name: `app/${name}`, content: await readFile(join(FIXTURES, name)), mtime: MTIME });
  }
  const modules: TarEntry[] = [];
  for (const pkg of await dependencyClosure(ROOTS)) {
    modules.push({ name: `app/${pkg}/`, type: 'directory', mode: 0o755, mtime: MTIME });
    await treeEntries(join(REPO, pkg), `app/${pkg}`, modules);
  }
  const all = [...files, ...modules];
  await writeLayout(dir, TAG, {
    layers: [{ entries: [...parentDirs(all), ...all], compression: 'zstd' }],
    config: {
      Cmd: ['node', `/app/http.mjs`],
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', `PORT=${FIXTURE_PORT}`],
      WorkingDir: '/app',
    },
  });
}

export type NodeImageSource = {
  /** `127.0.0.1:PORT/tests/node:1` */
  image: string;
  /** Arguments for `hangar serve` so the daemon may pull from this registry over plain HTTP. */
  daemonArgs: string[];
  /** Stops the registry (the daemon keeps images it already pulled). */
  stop(): Promise<void>;
};

// Building the layout takes seconds (reading and compressing 170 MB), so one build serves every
// test file while its inputs stay the same: a dir named by a digest of those inputs, made under
// a temp name and renamed into place whole. Builds for other inputs are removed once an hour old
// (younger ones may belong to a run going on in another checkout).
const CACHE_PREFIX = 'hangar-test-node-image-';
const STALE_MS = 60 * 60_000;

async function inputsDigest(): Promise<string> {
  const hash = createHash('sha256').update(await readFile(import.meta.filename)).update(await readFile(join(REPO, 'package-lock.json')));
  for (const path of [NODE, '/bin/busybox', ...(await sharedLibraries(NODE)).map(([, onHost]) => onHost)]) {
    const st = await stat(path);
    hash.update(`${path} ${st.size} ${st.mtimeMs}\n`);
  }
  for (const name of (await readdir(FIXTURES)).sort()) hash.update(name).update(await readFile(join(FIXTURES, name)));
  return hash.digest('hex').slice(0, 16);
}

/** The image's OCI layout dir, built now unless a build of the same inputs exists. */
export async function nodeImageLayout(): Promise<string> {
  const key = await inputsDigest();
  const dir = join(tmpdir(), `${CACHE_PREFIX}${key}`);
  for (const name of await readdir(tmpdir())) {
    if (!name.startsWith(CACHE_PREFIX) || name === `${CACHE_PREFIX}${key}`) continue;
    const other = join(tmpdir(), name);
    const st = await stat(other).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > STALE_MS) await rm(other, { recursive: true, force: true });
  }
  if (await stat(join(dir, 'index.json')).catch(() => undefined)) {
    const now = new Date();
    await utimes(dir, now, now); // in use: not stale for another run's pruning
    return dir;
  }
  const building = await mkdtemp(join(tmpdir(), `${CACHE_PREFIX}${key}.tmp-`));
  try {
    await writeNodeImageLayout(building);
    await rename(building, dir).catch((err: NodeJS.ErrnoException) => {
      // Another test process finished the same build first; its layout is as good as ours.
      if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err;
    });
  } finally {
    await rm(building, { recursive: true, force: true });
  }
  return dir;
}

/** Serves the image from a fresh loopback registry. */
export async function serveNodeImage(): Promise<NodeImageSource> {
  const layout = await nodeImageLayout();
  const registry = await startRegistry();
  try {
    const image = `${registry.host}/tests/node:${TAG}`;
    await pushLayout(layout, image, { tag: TAG });
    return { image, daemonArgs: ['--insecure-registry', registry.host], stop: () => registry.stop() };
  } catch (err) {
    await registry.stop();
    throw err;
  }
}

export type NodeDaemon = TestDaemon & {
  nodeImage: string;
  /** Kills the daemon, removes everything it made, and stops the registry. */
  close(): Promise<void>;
};

/** A test daemon that already holds the node image (pulled once here, so no machine create waits on it). */
export async function withNodeDaemon(extraArgs: string[] = []): Promise<NodeDaemon> {
  const src = await serveNodeImage();
  let d: (TestDaemon & { close(): Promise<void> }) | undefined;
  try {
    d = await withDaemon([...src.daemonArgs, ...extraArgs]);
    await d.client.images.pull(src.image);
  } catch (err) {
    await d?.close();
    await src.stop();
    throw err;
  }
  const daemon = d;
  return {
    ...daemon,
    nodeImage: src.image,
    close: async () => {
      await daemon.close();
      await src.stop();
    },
  };
}

/**
 * A machine config that runs one fixture server on `port`, with a service so the edge proxy
 * routes `<app>.localhost` to it. Limits are raised past the proxy's defaults so a benchmark's
 * 32 connections are never queued.
 */
export function nodeServerConfig(image: string, server: FixtureServer, options: { port?: number; env?: Record<string, string> } = {}): MachineConfig {
  const port = options.port ?? FIXTURE_PORT;
  return {
    image,
    init: { cmd: ['node', `/app/${server}.mjs`, String(port)] },
    ...(options.env ? { env: options.env } : {}),
    services: [{
      internal_port: port,
      ports: [{ port: 80, handlers: ['http'] }],
      concurrency: { type: 'connections', soft_limit: 1000, hard_limit: 1000 },
    }],
  };
}

/** Resolves once `host:port` accepts TCP connections. */
export async function waitForPort(host: string, port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect({ host, port }, () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
