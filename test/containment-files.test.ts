import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, openSync, readSync, closeSync, readdirSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withDaemon, startDaemon, http, type TestDaemon } from './helpers/daemon.ts';
import { waitFor } from './helpers/wait.ts';
import { startRegistry, pushLayout, type TestRegistry } from './helpers/registry.ts';
import { writeLayout, type TarEntry } from './helpers/oci-layout.ts';

// A hostile machine against the daemon's own file writes (issue 10): device nodes and FIFOs it
// plants (or its image ships) where config.files or the files API will write, and trees deeper
// than the daemon's descriptors or PATH_MAX. Every attack is made from inside a real machine (or
// a real image), then the API is called as a client would; the host must be untouched: a loop
// device of the test's own keeps its bytes, the host's kernel log has no injected line.

const APP = 'contain';
const TAG = `hangar-contain-${randomBytes(4).toString('hex')}`;
const BUSYBOX_APPLETS = ['sh', 'cat', 'echo', 'sleep', 'head', 'mknod', 'mkfifo', 'ls', 'mkdir', 'seq', 'test', 'ln', 'stat'];

let d: TestDaemon & { close(): Promise<void> };
let registry: TestRegistry;
let scratch: string;
let image: string;
/** A loop device of the test's own, standing for a host disk. */
let loop: { dev: string; major: number; minor: number; head: Buffer };

const b64 = (s: string) => Buffer.from(s).toString('base64');
const machineUrl = (id: string) => `/v1/apps/${APP}/machines/${id}`;
const sh = async (id: string, script: string) => d.client.machines.exec(APP, id, ['sh', '-c', script]);
const busyboxConfig = { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } };

function deviceNumbers(rdev: number): { major: number; minor: number } {
  // glibc's gnu_dev_major/minor, for numbers that fit in 32 bits.
  return { major: ((rdev >>> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff), minor: (rdev & 0xff) | ((rdev >>> 12) & ~0xff) };
}

function readHead(path: string): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(64);
    readSync(fd, buf, 0, 64, 0);
    return buf;
  } finally {
    closeSync(fd);
  }
}

/** The host is as it was: the loop device's first bytes, a kernel log without our tag, a daemon that answers. */
async function assertHostUntouched(what: string): Promise<void> {
  assert.deepEqual(readHead(loop.dev), loop.head, `${what}: the host's loop device was not written`);
  assert.ok(!execFileSync('dmesg', { encoding: 'utf8' }).includes(TAG), `${what}: nothing reached the host's kernel log`);
  assert.equal((await http(d, 'GET', '/health')).status, 200, `${what}: the daemon answers`);
}

/** An API call that must not hang (a FIFO would block the daemon forever). */
async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(d.url + path, {
    method,
    headers: { authorization: `Bearer ${d.token}`, ...(body !== undefined && typeof body !== 'string' ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

function assertRefused(r: { status: number; body: any }, code: string, what: string): void {
  assert.equal(r.status >= 400 && r.status < 500, true, `${what}: a 4xx, got ${r.status} ${JSON.stringify(r.body)}`);
  assert.equal(r.body?.code, code, `${what}: ${JSON.stringify(r.body)}`);
  assert.ok(r.body?.hint, `${what}: has a hint`);
}

async function assertDestroyedClean(id: string): Promise<void> {
  const r = await call('DELETE', `${machineUrl(id)}?force=true`);
  assert.equal(r.status, 200, `destroy: ${JSON.stringify(r.body)}`);
  assert.ok(!existsSync(join(d.dataDir, 'machines', id)), "destroy removed the machine's directory");
}

before(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'hangar-contain-'));
  const backing = join(scratch, 'disk.img');
  const disk = Buffer.alloc(1024 * 1024);
  disk.write(`${TAG} original first bytes of the disk`);
  await writeFile(backing, disk);
  const dev = execFileSync('losetup', ['--find', '--show', backing], { encoding: 'utf8' }).trim();
  loop = { dev, ...deviceNumbers(statSync(dev).rdev), head: Buffer.alloc(0) };
  loop.head = readHead(dev);

  registry = await startRegistry();
  const busybox = await readFile('/bin/busybox');
  const entries: TarEntry[] = [
    { name: 'bin/', type: 'directory' },
    { name: 'bin/busybox', content: busybox, mode: 0o755 },
    ...BUSYBOX_APPLETS.map((a): TarEntry => ({ name: `bin/${a}`, type: 'symlink', linkname: 'busybox' })),
    { name: 'etc/', type: 'directory' },
    { name: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\n' },
    { name: 'etc/disk.conf', type: 'block-device', devmajor: loop.major, devminor: loop.minor, mode: 0o666 },
    // /dev/null's numbers: the machine's device cgroup allows it, so only nodev makes it inert.
    { name: 'etc/null.conf', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
    { name: 'tmp/', type: 'directory', mode: 0o1777 },
  ];
  await writeLayout(join(scratch, 'layout'), '1', { layers: [{ entries, compression: 'gzip' }], config: { Cmd: ['sleep', '3600'], Env: ['PATH=/bin'] } });
  image = `${registry.host}/tests/devices:1`;
  await pushLayout(join(scratch, 'layout'), image, { tag: '1' });

  d = await withDaemon(['--insecure-registry', registry.host]);
  await d.client.apps.create(APP);
});

after(async () => {
  try {
    await d?.close();
  } finally {
    try {
      await registry?.stop();
    } finally {
      if (loop?.dev) execFileSync('losetup', ['-d', loop.dev]);
      if (scratch) await rm(scratch, { recursive: true, force: true });
    }
  }
});

describe('containment: the daemon writes only regular files into a machine', () => {
  it('refuses config.files over a device node or FIFO the machine made, and writes nothing through it', async (t) => {
    const m = await d.client.machines.create(APP, { config: busyboxConfig });
    const nodes = { '/etc/app.conf': `b ${loop.major} ${loop.minor}`, '/etc/log.conf': 'c 1 11' };
    const planted = await sh(m.id, [...Object.entries(nodes).map(([p, n]) => `mknod ${p} ${n}`), 'mkfifo /etc/f.conf', 'ln -s app.conf /etc/via-link.conf'].join(' && '));
    if (planted.exit_code !== 0) {
      // A hardened machine may not mknod; plant them from the host, as an image layer could.
      t.diagnostic(`mknod inside the machine failed (${planted.stderr.trim()}); planting the nodes from the host`);
      const rootfs = join(d.dataDir, 'machines', m.id, 'rootfs');
      for (const [p, n] of Object.entries(nodes)) execFileSync('mknod', [join(rootfs, p), ...n.split(' ')]);
      execFileSync('mkfifo', [join(rootfs, '/etc/f.conf')]);
      execFileSync('ln', ['-sf', 'app.conf', join(rootfs, '/etc/via-link.conf')]);
    }

    for (const [path, kind] of [['/etc/app.conf', 'block device'], ['/etc/log.conf', 'character device'], ['/etc/f.conf', 'FIFO'], ['/etc/via-link.conf', 'block device']] as const) {
      const what = `config.files over a ${kind} (${path})`;
      const r = await call('POST', machineUrl(m.id), { config: { ...busyboxConfig, files: [{ guest_path: path, raw_value: b64(`${TAG} via ${path}\n`) }] } });
      assertRefused(r, 'not_a_regular_file', what);
      const state = (await call('GET', machineUrl(m.id))).body.state;
      assert.ok(state === 'stopped' || state === 'started', `${what}: the machine settled (${state}), not left updating`);
      await assertHostUntouched(what);

      const put = await call('PUT', `${machineUrl(m.id)}/files?path=${encodeURIComponent(path)}`, `${TAG} via the files API\n`, { 'content-type': 'application/octet-stream' });
      assertRefused(put, 'not_a_regular_file', `files API write over a ${kind}`);
      await assertHostUntouched(`files API write over a ${kind}`);
    }
    assertRefused(await call('GET', `${machineUrl(m.id)}/files?path=/etc/f.conf`), 'not_a_regular_file', 'files API read of a FIFO');
    const left = await call('GET', `${machineUrl(m.id)}/files/list?path=/etc`);
    assert.deepEqual(left.body.entries.filter((e: { name: string }) => e.name.startsWith('.hangar')), [], 'no temp file left in /etc');

    // Regular files are still written, and an absolute link resolves inside the machine, as the
    // machine sees it, never on the host.
    await d.client.machines.start(APP, m.id);
    const hostTwin = join(scratch, `twin-${TAG}`);
    await sh(m.id, `ln -s ${hostTwin} /etc/abs.conf`);
    const ok = await call('POST', machineUrl(m.id), {
      config: { ...busyboxConfig, files: [{ guest_path: '/etc/ok.conf', raw_value: b64('fine\n'), mode: 0o600 }, { guest_path: '/etc/abs.conf', raw_value: b64('inside\n') }] },
    });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.state, 'started');
    const seen = await sh(m.id, `cat /etc/ok.conf ${hostTwin}; stat -c %a /etc/ok.conf`);
    assert.equal(seen.stdout, 'fine\ninside\n600\n');
    assert.ok(!existsSync(hostTwin), 'the absolute link was not followed on the host');
    await assertDestroyedClean(m.id);
  });

  it("makes an image layer's device nodes inert, and refuses config.files over them at create", async (t) => {
    const refused = await call('POST', `/v1/apps/${APP}/machines`, { config: { image, files: [{ guest_path: '/etc/disk.conf', raw_value: b64(`${TAG} at create\n`) }] } });
    assertRefused(refused, 'not_a_regular_file', 'config.files over an image block device at create');
    await assertHostUntouched('create over an image device');
    const live = (await call('GET', `/v1/apps/${APP}/machines`)).body.filter((x: { config: { image: string } }) => x.config.image === image);
    assert.deepEqual(live, [], 'the failed create left no machine');

    const m = await d.client.machines.create(APP, { config: { image } });
    await d.client.machines.wait(APP, m.id, 'started', { timeoutS: 30 });
    // The daemon's own mount is nodev: no host process that follows a path into the machine
    // reaches a device through it.
    const rootfs = join(d.dataDir, 'machines', m.id, 'rootfs');
    for (const node of ['etc/disk.conf', 'etc/null.conf']) {
      assert.throws(() => closeSync(openSync(join(rootfs, node), 'r')), /EACCES/, `${node} opened from the host through the machine's mount`);
    }
    // Inside, the machine's device cgroup refuses the host disk's numbers.
    const inside = await sh(m.id, 'head -c 8 /etc/disk.conf');
    assert.notEqual(inside.exit_code, 0, 'the image\'s block device is refused inside the machine');
    assert.match(inside.stderr, /Permission denied|Operation not permitted/, inside.stderr);
    const nullDev = await sh(m.id, 'echo x > /etc/null.conf');
    t.diagnostic(`a /dev/null node from the image, written inside the machine: ${nullDev.exit_code === 0 ? 'works (the runtime drops nodev on its own root mount)' : nullDev.stderr.trim()}`);
    await assertHostUntouched('device nodes opened inside the machine');
    await assertDestroyedClean(m.id);
  });
});

describe('containment: trees deeper than the daemon can hold', () => {
  it('removes a 21,000-deep tree (past the descriptor limit and PATH_MAX) through the files API and at destroy', async (t) => {
    const depth = 21_000;
    const limit = Number(/Max open files\s+(\d+)/.exec(await readFile(`/proc/${d.process.pid}/limits`, 'utf8'))?.[1]);
    if (limit > depth) t.diagnostic(`the daemon may hold ${limit} descriptors; this tree does not outgrow them`);
    const m = await d.client.machines.create(APP, { config: busyboxConfig });
    // Built from the top in steps of 1,000 levels (a chain made, the tree moved under it), so no
    // path the shell names is near PATH_MAX.
    const chain = 'd/'.repeat(1000);
    const build = (dir: string) => `mkdir ${dir} && echo leaf > ${dir}/leaf && for i in $(seq ${depth / 1000}); do mkdir -p /s/${chain} && mv ${dir} /s/${chain}x && mv /s ${dir} || exit 1; done`;
    const started = Date.now();
    for (const dir of ['/deep1', '/deep2']) {
      const r = await sh(m.id, build(dir));
      assert.equal(r.exit_code, 0, r.stderr);
    }
    t.diagnostic(`built two ${depth}-deep trees in ${Date.now() - started} ms`);

    const removed = await call('DELETE', `${machineUrl(m.id)}/files?path=/deep1&recursive=true`);
    assert.equal(removed.status, 200, `recursive remove: ${JSON.stringify(removed.body)}`);
    assert.equal((await call('GET', `${machineUrl(m.id)}/files/stat?path=/deep1`)).status, 404);
    assert.equal((await sh(m.id, 'ls /')).stdout.split('\n').filter((n) => n.startsWith('.hangar')).length, 0, 'nothing renamed up is left');
    assert.equal((await http(d, 'GET', '/health')).status, 200);
    await assertDestroyedClean(m.id); // /deep2 is still there
  });
});

describe('containment: uploads that die', () => {
  it('leaves no temp file in the machine when the daemon dies in the middle of an upload', async () => {
    const first = await withDaemon();
    let second: TestDaemon | undefined;
    const socket = { destroy: () => {} } as { destroy(): void };
    try {
      await first.client.apps.create(APP);
      const m = await first.client.machines.create(APP, { config: busyboxConfig });
      const dir = join(first.dataDir, 'machines', m.id, 'rootfs', 'up');
      const temps = () => (existsSync(dir) ? readdirSync(dir).filter((n) => n.startsWith('.hangar-write-')) : []);
      // An upload that announces 100 MB, sends 1 MiB and stays open.
      const url = new URL(first.url);
      const conn = connect(Number(url.port), url.hostname);
      Object.assign(socket, { destroy: () => conn.destroy() });
      conn.on('error', () => {});
      conn.write(`PUT /v1/apps/${APP}/machines/${m.id}/files?path=/up/big.bin HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${first.token}\r\n` +
        `content-type: application/octet-stream\r\ncontent-length: 100000000\r\n\r\n`);
      conn.write(Buffer.alloc(1024 * 1024));
      await waitFor(async () => (temps().length > 0 ? true : undefined), 10_000, 'the upload reached the machine');

      await first.kill(); // kill -9 mid-upload: nothing in that daemon removes the temp file
      conn.destroy();
      assert.equal(temps().length, 1, 'the dead daemon left its temp file');
      second = await startDaemon(first.dataDir);

      const listed = await http(second, 'GET', `${machineUrl(m.id)}/files/list?path=/up`);
      assert.deepEqual(listed.body.entries.map((e: { name: string }) => e.name), [], 'the temp file was swept when the machine was next used');
      const inside = await second.client.machines.exec(APP, m.id, ['ls', '-a', '/up']);
      assert.equal(inside.stdout, '.\n..\n');
      assert.equal((await http(second, 'GET', '/health')).status, 200);
      const w = await http(second, 'PUT', `${machineUrl(m.id)}/files?path=/up/small.txt`, 'whole', { 'content-type': 'application/octet-stream' });
      assert.equal(w.body.size, 5, 'writes still work');
      assert.deepEqual(temps(), []);
    } finally {
      socket.destroy();
      await second?.kill().catch(() => undefined);
      await first.close();
    }
  });
});
