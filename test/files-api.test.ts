import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tar from 'tar-stream';
import { Hangar, HangarApiError, type Machine } from '../src/sdk/index.ts';
import { HANGAR, withDaemon, http, type TestDaemon } from './helpers/daemon.ts';
import { waitFor } from './helpers/wait.ts';

// The files API as robots use it: files of a machine whether it runs or not, streamed both ways,
// and never a byte read or written outside the machine, whatever the path or archive says.

const APP = 'files';
let d: TestDaemon & { close(): Promise<void> };
let hangar: Hangar;

before(async () => {
  d = await withDaemon();
  hangar = new Hangar({ baseUrl: d.url, token: d.token });
  await hangar.apps.create(APP);
});
after(async () => {
  const dataDir = d?.dataDir;
  await d?.close();
  if (dataDir) assert.equal(readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(dataDir)).length, 0, 'no mounts left behind');
});

const busybox = (opts: { skipLaunch?: boolean } = {}) =>
  hangar.machines.create(APP, { skip_launch: opts.skipLaunch ?? false, config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });
const sh = async (m: Machine, script: string) => {
  const r = await d.client.machines.exec(APP, m.id, ['sh', '-c', script]);
  assert.equal(r.exit_code, 0, `${script}: ${r.stderr}`);
  return r.stdout;
};
const filesUrl = (m: Machine, sub = '') => `/v1/apps/${APP}/machines/${m.id}/files${sub}`;
const q = (path: string) => `?path=${encodeURIComponent(path)}`;
const putRaw = (m: Machine, path: string, body: string | Uint8Array, type = 'application/octet-stream', sub = '') =>
  fetch(`${d.url}${filesUrl(m, sub)}${q(path)}`, { method: 'PUT', headers: { authorization: `Bearer ${d.token}`, 'content-type': type }, body });

async function rejects(p: Promise<unknown>, code: string, what: string): Promise<HangarApiError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof HangarApiError, `${what}: ${String(err)}`);
    assert.equal(err.code, code, `${what}: ${err.message}`);
    assert.ok(err.hint, `${what}: has a hint`);
    return err;
  }
  assert.fail(`${what}: was not refused`);
}

type TarMember = { name: string; type?: 'file' | 'directory' | 'symlink' | 'link'; content?: string; linkname?: string; mode?: number };
async function makeTar(members: TarMember[]): Promise<Uint8Array> {
  const pack = tar.pack();
  for (const m of members) {
    const type = m.type ?? 'file';
    const header = { name: m.name, type, mode: m.mode ?? (type === 'directory' ? 0o755 : 0o644), ...(m.linkname ? { linkname: m.linkname } : {}) };
    if (type === 'file') pack.entry(header, m.content ?? '');
    else pack.entry(header);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return new Uint8Array(Buffer.concat(chunks));
}

async function readTar(stream: ReadableStream<Uint8Array>): Promise<Map<string, { type: string; content: string; linkname?: string; mode: number }>> {
  const out = new Map<string, { type: string; content: string; linkname?: string; mode: number }>();
  const extract = tar.extract();
  const feeding = (async () => {
    for await (const chunk of stream as unknown as AsyncIterable<Uint8Array>) extract.write(chunk);
    extract.end(Buffer.alloc(0));
  })();
  for await (const entry of extract) {
    const parts: Buffer[] = [];
    for await (const c of entry) parts.push(c as Buffer);
    const h = entry.header;
    out.set(h.name.replace(/^\.\//, '').replace(/\/$/, ''), { type: h.type ?? '', content: Buffer.concat(parts).toString(), linkname: h.linkname ?? undefined, mode: (h.mode ?? 0) & 0o7777 });
  }
  await feeding;
  return out;
}

describe('files API', () => {
  it('writes a file while stopped that the started machine sees, and reads back what the machine wrote', async () => {
    const m = await busybox({ skipLaunch: true });
    assert.equal(m.state, 'created');
    const w = await m.files.write('/srv/app/config.txt', 'port=8080\n', { mode: 0o600 });
    assert.deepEqual(w, { path: '/srv/app/config.txt', size: 10, mode: 0o600 });
    await m.start();
    assert.equal(await sh(m, 'cat /srv/app/config.txt; stat -c %a /srv/app/config.txt'), 'port=8080\n600\n');

    await m.files.write('/srv/app/live.txt', 'written while started');
    assert.equal(await sh(m, 'cat /srv/app/live.txt'), 'written while started');
    await sh(m, 'echo from inside > /srv/app/out.txt');
    assert.equal(await m.files.readText('/srv/app/out.txt'), 'from inside\n');

    await m.stop({ timeout: '1s' });
    await m.files.write('/srv/app/config.txt', 'port=9090\n');
    assert.equal(await m.files.readText('/srv/app/out.txt'), 'from inside\n', 'readable while stopped');
    await m.start();
    assert.equal(await sh(m, 'cat /srv/app/config.txt; stat -c %a /srv/app/config.txt'), 'port=9090\n600\n', 'a replaced file keeps its mode');
    await m.destroy({ force: true });
  });

  it('mounts the root filesystem again when a reboot took it away', async () => {
    const m = await busybox({ skipLaunch: true });
    await m.files.write('/kept.txt', 'kept');
    execFileSync('umount', [join(d.dataDir, 'machines', m.id, 'rootfs')]);
    assert.equal(await m.files.readText('/kept.txt'), 'kept');
    await m.destroy();
  });

  it('reads byte ranges (206 with Content-Range) and refuses ranges past the end (416)', async () => {
    const m = await busybox({ skipLaunch: true });
    await m.files.write('/r.txt', '0123456789');
    const get = (range?: string) => http(d, 'GET', filesUrl(m) + q('/r.txt'), undefined, range ? { range } : {});

    const whole = await get();
    assert.equal(whole.status, 200);
    assert.equal(whole.text, '0123456789');
    assert.equal(whole.headers.get('accept-ranges'), 'bytes');
    assert.equal(whole.headers.get('content-length'), '10');
    assert.equal(whole.headers.get('content-type'), 'application/octet-stream');

    for (const [range, body, contentRange] of [
      ['bytes=2-4', '234', 'bytes 2-4/10'],
      ['bytes=7-', '789', 'bytes 7-9/10'],
      ['bytes=-3', '789', 'bytes 7-9/10'],
      ['bytes=8-100', '89', 'bytes 8-9/10'],
    ] as const) {
      const r = await get(range);
      assert.equal(r.status, 206, range);
      assert.equal(r.text, body, range);
      assert.equal(r.headers.get('content-range'), contentRange, range);
      assert.equal(r.headers.get('content-length'), String(body.length), range);
    }
    for (const range of ['bytes=10-', 'bytes=99-100', 'bytes=-0']) {
      const r = await get(range);
      assert.equal(r.status, 416, range);
      assert.equal(r.body.code, 'range_not_satisfiable', range);
      assert.equal(r.headers.get('content-range'), 'bytes */10', range);
    }
    assert.equal((await get('bytes=5-2')).status, 200, 'an invalid range is ignored');

    assert.equal(await m.files.readText('/r.txt', { range: { start: 3, end: 5 } }), '345');
    assert.equal(await m.files.readText('/r.txt', { range: { start: 6 } }), '6789');
    await rejects(m.files.read('/r.txt', { range: { start: 10 } }), 'range_not_satisfiable', 'range past the end');
    await m.destroy();
  });

  it('lists, stats, renames and removes, with a clear error for each mistake', async () => {
    const m = await busybox({ skipLaunch: true });
    await m.files.write('/w/b.txt', 'bee');
    await m.files.write('/w/a.sh', '#!/bin/sh\n', { mode: 0o755 });
    await m.files.write('/w/sub/deep/c.txt', 'sea');
    await m.files.write('/w/empty', '');
    await m.start();
    await sh(m, 'ln -s b.txt /w/link');

    const entries = await m.files.list('/w');
    assert.deepEqual(entries.map((e) => [e.name, e.type, e.size]), [['a.sh', 'file', 10], ['b.txt', 'file', 3], ['empty', 'file', 0], ['link', 'symlink', 5], ['sub', 'dir', entries[4]!.size]]);
    assert.equal(entries[0]!.mode, 0o755);
    assert.equal(entries[1]!.mode, 0o644, 'new files get 0644');
    assert.equal(entries[3]!.link_target, 'b.txt');
    assert.ok(!Number.isNaN(Date.parse(entries[0]!.mtime)));

    const st = await m.files.stat('/w/link');
    assert.equal(st.type, 'symlink', 'stat describes the link itself');
    assert.equal(st.link_target, 'b.txt');
    assert.equal(st.path, '/w/link');
    assert.equal((await m.files.stat('/')).type, 'dir');
    assert.equal(await m.files.readText('/w/link'), 'bee', 'read follows a relative link');

    await m.files.rename('/w/b.txt', '/w/moved/b2.txt');
    assert.equal(await sh(m, 'cat /w/moved/b2.txt'), 'bee');
    await rejects(m.files.rename('/w/a.sh', '/w/moved/b2.txt'), 'file_exists', 'rename onto an existing file');
    await m.files.rename('/w/a.sh', '/w/moved/b2.txt', { overwrite: true });
    assert.equal(await m.files.readText('/w/moved/b2.txt'), '#!/bin/sh\n');
    await rejects(m.files.rename('/w/nope', '/w/x'), 'file_not_found', 'rename of a missing file');
    await rejects(m.files.rename('/w/sub', '/w/sub/deep/x'), 'bad_request', 'rename into itself');

    await rejects(m.files.remove('/w/sub'), 'directory_not_empty', 'remove a non-empty dir');
    const raw = await http(d, 'DELETE', filesUrl(m) + q('/w/sub'));
    assert.equal(raw.status, 409);
    await m.files.remove('/w/link');
    assert.equal(await sh(m, 'cat /w/moved/b2.txt'), '#!/bin/sh\n', 'removing a link leaves its target');
    await m.files.remove('/w/sub', { recursive: true });
    await m.files.remove('/w/empty');
    assert.deepEqual((await m.files.list('/w')).map((e) => e.name), ['moved']);
    await rejects(m.files.remove('/'), 'bad_request', 'remove the root');
    await rejects(m.files.remove('/w/nope'), 'file_not_found', 'remove a missing file');

    await rejects(m.files.read('/w'), 'is_a_directory', 'read a directory');
    await rejects(m.files.write('/w', 'x'), 'is_a_directory', 'write over a directory');
    await rejects(m.files.list('/w/moved/b2.txt'), 'not_a_directory', 'list a file');
    await rejects(m.files.write('/w/moved/b2.txt/x', 'x'), 'not_a_directory', 'write under a file');
    await rejects(m.files.read('/w/nope'), 'file_not_found', 'read a missing file');
    const missing = await http(d, 'GET', filesUrl(m) + q('/w/nope'));
    assert.equal(missing.status, 404);
    assert.equal(missing.body.code, 'file_not_found');

    const json = await putRaw(m, '/w/j', '{"a":1}', 'application/json');
    assert.equal(json.status, 400);
    const created = await putRaw(m, '/w/mode.txt', 'x', 'application/octet-stream', '');
    assert.equal(created.status, 201);
    const replaced = await fetch(`${d.url}${filesUrl(m)}${q('/w/mode.txt')}&mode=0640`, {
      method: 'PUT', headers: { authorization: `Bearer ${d.token}`, 'content-type': 'application/octet-stream' }, body: 'yy',
    });
    assert.equal(replaced.status, 200);
    assert.deepEqual(await replaced.json(), { path: '/w/mode.txt', size: 2, mode: 0o640 });
    assert.equal(await sh(m, 'stat -c %a /w/mode.txt'), '640\n');
    const badMode = await http(d, 'PUT', filesUrl(m) + q('/w/m2') + '&mode=999', undefined, { 'content-type': 'application/octet-stream' });
    assert.equal(badMode.body.code, 'validation_failed');
    await m.destroy({ force: true });
  });

  it('streams a 256 MiB file up and down without holding it in memory', async (t) => {
    const m = await busybox();
    const size = 256 * 1024 * 1024;
    const chunk = 1024 * 1024;
    const sent = createHash('sha256');
    let produced = 0;
    const source = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (produced >= size) return controller.close();
        const bytes = randomBytes(chunk);
        sent.update(bytes);
        produced += bytes.length;
        controller.enqueue(new Uint8Array(bytes));
      },
    });
    const pid = d.process.pid!;
    const rss = () => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
    await writeFile(`/proc/${pid}/clear_refs`, '5'); // resets the peak RSS (VmHWM)
    const before = rss();

    const w = await m.files.write('/big/blob.bin', source);
    assert.equal(w.size, size);
    const digest = sent.digest('hex');
    assert.equal((await sh(m, 'sha256sum /big/blob.bin')).split(' ')[0], digest, 'the machine sees every byte');

    const got = createHash('sha256');
    let received = 0;
    for await (const c of (await m.files.readStream('/big/blob.bin')) as unknown as AsyncIterable<Uint8Array>) {
      got.update(c);
      received += c.length;
    }
    assert.equal(received, size);
    assert.equal(got.digest('hex'), digest);
    const grew = rss() - before;
    t.diagnostic(`daemon peak RSS grew ${(grew / 1048576).toFixed(1)} MiB`);
    // Garbage chunks wait for a GC (V8 collects once ~64 MiB of external memory is pending), so
    // the bound is well above that yet well below the file's size.
    assert.ok(grew < 160 * 1024 * 1024, `the daemon's peak RSS grew by ${(grew / 1048576).toFixed(1)} MiB for a 256 MiB file`);

    const tail = await m.files.read('/big/blob.bin', { range: { start: size - 5 } });
    assert.equal(tail.length, 5);
    await m.destroy({ force: true });
  });

  it('leaves nothing half-written when an upload breaks off', async () => {
    const m = await busybox({ skipLaunch: true });
    await m.files.write('/u/file.txt', 'original');
    let sent = 0;
    let breakIt!: () => void;
    const broken = new Promise<void>((resolve) => (breakIt = resolve));
    const breaking = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (sent >= 4 * 1024 * 1024) {
          await broken;
          return controller.error(new Error('the source broke'));
        }
        sent += 1024 * 1024;
        controller.enqueue(new Uint8Array(1024 * 1024));
      },
    });
    const writing = m.files.write('/u/file.txt', breaking).then(() => 'written', (err: unknown) => err);
    const temp = () => m.files.list('/u').then((l) => l.filter((e) => e.name !== 'file.txt'));
    await waitFor(async () => ((await temp()).length > 0 ? true : undefined), 10_000, 'the upload reached the daemon');
    assert.equal(await m.files.readText('/u/file.txt'), 'original', 'the target is untouched while the upload runs');
    breakIt();
    assert.ok((await writing) instanceof Error, 'the write failed');
    // The daemon sees the request cut short and removes its temp file.
    await waitFor(async () => ((await temp()).length === 0 ? true : undefined), 10_000, 'the temp file is gone');
    assert.equal(await m.files.readText('/u/file.txt'), 'original');
    assert.equal((await http(d, 'GET', '/health')).status, 200, 'the daemon is fine');
    await m.destroy();
  });

  it('uploads a directory as a tar stream and downloads it again', async () => {
    const m = await busybox();
    await sh(m, 'mkdir -p /data/old && echo keep > /data/old/keep.txt && echo stale > /data/replace.txt');
    const archive = await makeTar([
      { name: 'bin/', type: 'directory', mode: 0o750 },
      { name: 'bin/run.sh', content: '#!/bin/sh\necho ran\n', mode: 0o755 },
      { name: 'replace.txt', content: 'fresh\n' },
      { name: 'old/new.txt', content: 'new\n' },
      { name: 'latest', type: 'symlink', linkname: 'bin/run.sh' },
      { name: 'hard.sh', type: 'link', linkname: 'bin/run.sh' },
      { name: 'abs-link', type: 'symlink', linkname: '/etc/passwd' },
    ]);
    const r = await m.files.uploadTar('/data', archive);
    assert.deepEqual(r, { path: '/data', members: 7 });
    assert.equal(await sh(m, '/data/latest; cat /data/replace.txt /data/old/keep.txt /data/old/new.txt; stat -c "%a %h" /data/bin /data/bin/run.sh; readlink /data/abs-link'),
      'ran\nfresh\nkeep\nnew\n750 2\n755 2\n/etc/passwd\n');
    assert.ok(!(await m.files.list('/data')).some((e) => e.name.startsWith('.hangar')), 'no staging dir left');

    const members = await readTar(await m.files.downloadTar('/data'));
    // GNU tar stores the first name of a hard-linked file with its content, the other as a link.
    const [stored, linked] = members.get('bin/run.sh')?.type === 'file' ? ['bin/run.sh', 'hard.sh'] : ['hard.sh', 'bin/run.sh'];
    assert.equal(members.get(stored)?.content, '#!/bin/sh\necho ran\n');
    assert.equal(members.get(stored)?.mode, 0o755);
    assert.equal(members.get(linked)?.type, 'link');
    assert.equal(members.get('latest')?.type, 'symlink');
    assert.equal(members.get('latest')?.linkname, 'bin/run.sh');
    assert.equal(members.get('abs-link')?.linkname, '/etc/passwd', 'links are archived as links, not followed');
    assert.equal(members.get('old/keep.txt')?.content, 'keep\n');

    // Round trip into a stopped machine, then start it.
    const copy = await busybox({ skipLaunch: true });
    const again = await m.files.downloadTar('/data');
    await copy.files.uploadTar('/restored', again);
    await copy.start();
    assert.equal(await sh(copy, '/restored/latest; cat /restored/old/keep.txt'), 'ran\nkeep\n');

    const notDir = await http(d, 'GET', filesUrl(m, '/tar') + q('/data/replace.txt'));
    assert.equal(notDir.body.code, 'not_a_directory');
    const garbage = await putRaw(m, '/data', 'this is not a tar archive, just some text that is long enough'.repeat(20), 'application/x-tar', '/tar');
    assert.equal(garbage.status, 400);
    await m.destroy({ force: true });
    await copy.destroy({ force: true });
  });

  it('refuses every path escape, and writes nothing outside the machine', async () => {
    const m = await busybox();
    const tag = randomBytes(4).toString('hex');
    const hostDir = await mkdtemp(join(tmpdir(), 'hangar-files-host-'));
    await writeFile(join(hostDir, 'secret'), 'host secret');
    try {
      await sh(m, [
        'mkdir -p /work/d /work/tdest && echo inside > /work/d/f',
        'ln -s / /work/root', 'ln -s /etc /work/etc', `ln -s ${hostDir} /work/hostdir`, 'ln -s /etc/passwd /work/passwd',
        'ln -s ../../.. /work/up', 'ln -s ../etc /work/rel', 'ln -s / /work/tdest/link',
      ].join(' && '));
      const escapes = (p: Promise<unknown>, what: string) => rejects(p, 'path_escapes_root', what);

      // Paths that are not plain absolute paths.
      await escapes(m.files.read('/work/../etc/passwd'), '.. in the path');
      await escapes(m.files.read('etc/passwd'), 'relative path');
      await escapes(m.files.write('/work/d/../../x', 'x'), '.. in a write');
      const rawDots = await http(d, 'GET', filesUrl(m) + '?path=/work/%2e%2e/%2e%2e/etc/passwd');
      assert.equal(rawDots.status, 400);
      assert.equal(rawDots.body.code, 'path_escapes_root');

      // Absolute symlinks, and relative ones that climb out of the root.
      await escapes(m.files.read('/work/root/etc/passwd'), 'through a link to /');
      await escapes(m.files.read('/work/passwd'), 'absolute link as the last component');
      await escapes(m.files.read(`/work/hostdir/secret`), 'link to a host path');
      await escapes(m.files.list('/work/hostdir'), 'list through a link to a host path');
      await escapes(m.files.write(`/work/etc/hangar-evil-${tag}`, 'evil'), 'write through a link to /etc');
      await escapes(m.files.write(`/work/hostdir/evil`, 'evil'), 'write through a link to a host dir');
      await escapes(m.files.write(`/work/up/tmp/hangar-evil-${tag}`, 'evil'), 'write through ../../..');
      await escapes(m.files.list('/work/up'), 'list ../../..');
      await escapes(m.files.remove(`/work/hostdir/secret`), 'remove through a link');
      await escapes(m.files.remove('/work/root/tmp', { recursive: true }), 'recursive remove through a link');
      await escapes(m.files.rename('/work/d/f', `/work/root/tmp/hangar-evil-${tag}`), 'rename to outside');
      await escapes(m.files.rename(`/work/hostdir/secret`, '/work/d/stolen'), 'rename from outside');
      await escapes(m.files.downloadTar('/work/hostdir'), 'tar of a host dir');
      await escapes(m.files.uploadTar('/work/hostdir/x', await makeTar([{ name: 'evil', content: 'evil' }])), 'tar into a host dir');
      const link = await m.files.stat('/work/root');
      assert.equal(link.link_target, '/', 'stat describes a link without following it');
      await m.files.remove('/work/passwd');
      assert.equal(await sh(m, 'test ! -e /work/passwd && head -c 5 /etc/passwd'), 'root:', 'removing the link left /etc/passwd');

      // A relative link that stays inside is followed, inside the machine.
      await m.files.write(`/work/rel/hangar-rel-${tag}`, 'inside');
      assert.equal(await sh(m, `cat /etc/hangar-rel-${tag}`), 'inside');

      // Malicious archives: refused whole, and nothing of them is left.
      const malicious: Array<[string, TarMember[]]> = [
        ['a .. member', [{ name: 'ok.txt', content: 'ok' }, { name: `../hangar-evil-${tag}`, content: 'evil' }]],
        ['an absolute member', [{ name: 'ok.txt', content: 'ok' }, { name: `/etc/hangar-evil-${tag}`, content: 'evil' }]],
        ['a member written through a symlink it planted', [{ name: 'ok.txt', content: 'ok' }, { name: 'l', type: 'symlink', linkname: '/' }, { name: `l/etc/hangar-evil-${tag}`, content: 'evil' }]],
        ['a member through a relative link out', [{ name: 'ok.txt', content: 'ok' }, { name: 'up', type: 'symlink', linkname: '../../../..' }, { name: `up/tmp/hangar-evil-${tag}`, content: 'evil' }]],
        ['a hard link to outside', [{ name: 'ok.txt', content: 'ok' }, { name: 'pw', type: 'link', linkname: '../../etc/passwd' }]],
      ];
      for (const [what, members] of malicious) {
        await escapes(m.files.uploadTar('/work/tarred', await makeTar(members)), what);
        assert.deepEqual(await m.files.list('/work/tarred'), [], `${what}: nothing unpacked, no staging left`);
      }

      // A link already in the machine is replaced by the archive's directory, never followed.
      await m.files.uploadTar('/work/tdest', await makeTar([{ name: 'link/', type: 'directory' }, { name: `link/tmp/hangar-evil-${tag}`, content: 'contained' }]));
      assert.equal(await sh(m, `cat /work/tdest/link/tmp/hangar-evil-${tag}; test -d /work/tdest/link && ! test -L /work/tdest/link && echo dir`), 'containeddir\n');
      assert.equal(await sh(m, `ls /tmp/hangar-evil-${tag} 2>&1 || true`), `ls: /tmp/hangar-evil-${tag}: No such file or directory\n`);

      // Nothing outside the machine was touched.
      for (const p of [`/etc/hangar-evil-${tag}`, `/tmp/hangar-evil-${tag}`, `/etc/hangar-rel-${tag}`, join(hostDir, 'evil'), join(hostDir, 'x'), join(tmpdir(), `hangar-evil-${tag}`)]) {
        assert.equal(existsSync(p), false, `${p} must not exist on the host`);
      }
      assert.equal(await readFile(join(hostDir, 'secret'), 'utf8'), 'host secret');
      assert.equal(await sh(m, 'cat /work/d/f'), 'inside\n');
    } finally {
      await rm(hostDir, { recursive: true, force: true });
      await m.destroy({ force: true });
    }
  });

  it('answers for machines that have no root filesystem to offer', async () => {
    const m = await busybox({ skipLaunch: true });
    await m.destroy();
    const r = await http(d, 'GET', filesUrl(m, '/list') + q('/'));
    assert.equal(r.status, 404);
    assert.equal(r.body.code, 'machine_not_found');
  });

  it('works from the CLI: hangar files put, cat, ls, stat, mv, rm, put-tar, get-tar', async () => {
    const m = await busybox({ skipLaunch: true });
    const local = await mkdtemp(join(tmpdir(), 'hangar-files-cli-'));
    try {
      const cli = (args: string[], input?: string | Buffer) => {
        const r = spawnSync(HANGAR, ['files', ...args], {
          input, env: { ...process.env, HANGAR_API_URL: d.url, HANGAR_TOKEN: d.token, HANGAR_APP: APP }, timeout: 60_000,
        });
        return { code: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString(), raw: r.stdout };
      };
      await writeFile(join(local, 'hello.txt'), 'hello from the cli\n');
      const put = cli(['put', m.id, '/cli/hello.txt', join(local, 'hello.txt'), '--mode', '0600']);
      assert.equal(put.code, 0, put.stderr);
      assert.match(put.stdout, /wrote 19 bytes to \/cli\/hello.txt \(mode 0600\)/);
      assert.equal(cli(['put', m.id, '/cli/stdin.txt'], 'from stdin').code, 0);
      assert.equal(cli(['cat', m.id, '/cli/hello.txt']).stdout, 'hello from the cli\n');
      const ls = cli(['ls', m.id, '/cli']);
      assert.match(ls.stdout, /^MODE\s+SIZE\s+MTIME\s+NAME/m);
      assert.match(ls.stdout, /0600\s+19\s+.*hello.txt/);
      assert.match(cli(['stat', m.id, '/cli/stdin.txt']).stdout, /\/cli\/stdin.txt\s+file\s+10 bytes/);
      assert.equal(cli(['mv', m.id, '/cli/stdin.txt', '/cli/moved.txt']).code, 0);
      const clash = cli(['mv', m.id, '/cli/moved.txt', '/cli/hello.txt']);
      assert.equal(clash.code, 1);
      assert.match(clash.stderr, /already exists[\s\S]*hint: .*overwrite/);
      assert.equal(cli(['mv', m.id, '/cli/moved.txt', '/cli/hello.txt', '--force']).code, 0);

      const tarFile = join(local, 'cli.tar');
      assert.equal(cli(['get-tar', m.id, '/cli', tarFile]).code, 0);
      const up = cli(['put-tar', m.id, '/copy', tarFile]);
      assert.equal(up.code, 0, up.stderr);
      assert.match(up.stdout, /unpacked \d+ members into \/copy/);
      assert.equal(cli(['cat', m.id, '/copy/hello.txt']).stdout, 'from stdin');
      assert.equal(cli(['get-tar', m.id, '/copy']).raw.length % 512, 0, 'a tar archive on stdout');

      const rm1 = cli(['rm', m.id, '/cli']);
      assert.equal(rm1.code, 1);
      assert.match(rm1.stderr, /code: directory_not_empty/);
      assert.equal(cli(['rm', m.id, '/cli', '-r']).code, 0);
      const escape = cli(['cat', m.id, '/../etc/passwd']);
      assert.equal(escape.code, 1);
      assert.match(escape.stderr, /code: path_escapes_root/);
    } finally {
      await rm(local, { recursive: true, force: true });
      await m.destroy();
    }
  });
});
