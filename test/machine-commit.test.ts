import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CommitProgress } from '../src/sdk/index.ts';
import { withDaemon, http, HANGAR, type TestDaemon } from './helpers/daemon.ts';
import { startRegistry, type TestRegistry } from './helpers/registry.ts';
import { makeTestCa } from './helpers/test-certs.ts';

// A machine committed as an image, as a robot does it: it builds its state up in place (files,
// owners, a set-uid bit, a hard link, deletions of the image's files), commits, and machines
// created from the image (here, and on a second daemon that pulls it from a registry) start with
// the same files, the same command and env.

const APP = 'commit';
let registry: TestRegistry;
let locked: TestRegistry;
let realm: Server;
let work: string;
let d: TestDaemon & { close(): Promise<void> };

const sh = async (daemon: TestDaemon, id: string, script: string) => {
  const r = await daemon.client.machines.exec(APP, id, ['/bin/busybox', 'sh', '-c', script]);
  assert.equal(r.exit_code, 0, `${script}\n${r.stdout}${r.stderr}`);
  return r.stdout;
};

// Every path the machine wrote or the image holds there, with type, owner, mode and link count,
// through busybox itself (the machine deleted some applet links).
const LISTING = `cd / && /bin/busybox find bin sbin usr etc data -xdev 2>/dev/null | /bin/busybox sort | while read -r f; do
  /bin/busybox stat -c '%n %F %u:%g %a %h' "$f"; done; /bin/busybox md5sum data/a.txt data/tool`;

function hangar(...args: string[]) {
  const r = spawnSync(HANGAR, args, { encoding: 'utf8', env: { ...process.env, HANGAR_DATA_DIR: d.dataDir, HANGAR_APP: APP }, timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

before(async () => {
  registry = await startRegistry();
  // A registry whose token service refuses everyone: a push to it fails on auth.
  work = await mkdtemp(join(tmpdir(), 'hangar-commit-'));
  realm = createServer((_req, res) => void res.writeHead(401).end('{"details":"no"}'));
  realm.listen(0, '127.0.0.1');
  await once(realm, 'listening');
  const realmHost = `127.0.0.1:${(realm.address() as { port: number }).port}`;
  const bundle = join(work, 'ca.pem');
  await writeFile(bundle, (await makeTestCa('hangar-commit-token')).certPem);
  locked = await startRegistry({ tokenAuth: { realm: `http://${realmHost}/token`, service: 'locked', issuer: 'nobody', rootCertBundle: bundle } });
  d = await withDaemon(['--insecure-registry', registry.host, '--insecure-registry', locked.host, '--insecure-registry', realmHost]);
  await d.client.apps.create(APP);
});

after(async () => {
  await d?.close();
  await registry?.stop();
  await locked?.stop();
  realm?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('machine commit', () => {
  let source: string;
  let listing: string;

  it('commits a started machine: files, owners, set-id bits, hard links and deletions, command and env', async () => {
    const m = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] }, env: { GREETING: 'hello there' }, rootfs: { size_gb: 2 } } });
    source = m.id;
    await sh(d, m.id, [
      'mkdir -p /data && echo hello > /data/a.txt && chown 1000:1000 /data/a.txt',
      'ln /data/a.txt /data/b.txt',
      "printf '#!/bin/sh\\necho tool\\n' > /data/tool && chown 123:456 /data/tool && chmod 4755 /data/tool",
      'echo s > /data/secret && chmod 000 /data/secret',
      'ln -s a.txt /data/link && mkfifo /data/pipe',
      // An image file, an image directory, and a directory made anew over an image one (opaque).
      'rm /bin/vi && rm -rf /sbin && rm -rf /usr/sbin && mkdir /usr/sbin && echo only > /usr/sbin/only',
    ].join(' && '));
    listing = await sh(d, m.id, LISTING);
    assert.match(listing, /^data\/tool regular file 123:456 4755 1$/m);
    assert.match(listing, /^data\/a.txt regular file 1000:1000 644 2$/m);

    const progress: CommitProgress[] = [];
    const made = await d.client.machines.commit(APP, m.id, { image: `${registry.host}/tests/committed:1` }, { onProgress: (p) => progress.push(p) });
    assert.equal(made.image, `${registry.host}/tests/committed:1`);
    assert.match(made.digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(made.layers, 2, "the base image's layer plus the machine's");
    assert.equal(made.source, 'live');
    assert.equal(made.pushed, false);
    assert.deepEqual(made.skipped, []);
    assert.deepEqual([...new Set(progress.map((p) => p.phase))], ['capture', 'layer', 'store', 'done']);
    assert.equal((await d.client.machines.get(APP, m.id)).state, 'started', 'the machine runs on');

    const inspected = await d.client.images.inspect(made.image);
    assert.deepEqual(inspected.config.Cmd, ['sleep', '3600']);
    assert.ok((inspected.config.Env as string[]).includes('GREETING=hello there'));
    assert.ok(!(inspected.config.Env as string[]).some((e) => e.startsWith('FLY_')), 'per-machine variables stay out');

    // No init and no env of its own: the image's carry the source's.
    const copy = await d.client.machines.create(APP, { config: { image: made.image, rootfs: { size_gb: 2 } } });
    assert.equal(await sh(d, copy.id, LISTING), listing, 'the same files, owners, modes and links');
    const after = await sh(d, copy.id, 'test ! -e /bin/vi && test ! -e /sbin && /bin/busybox ls /usr/sbin && test -p /data/pipe && /bin/busybox readlink /data/link && /bin/busybox stat -c %i /data/a.txt /data/b.txt');
    const [only, link, inoA, inoB] = after.trim().split('\n');
    assert.equal(only, 'only', 'the opaque directory hides the image\'s');
    assert.equal(link, 'a.txt');
    assert.equal(inoA, inoB, 'the hard link is one file');
    const init = await sh(d, copy.id, "/bin/busybox tr '\\0' ' ' < /proc/1/cmdline; echo; /bin/busybox tr '\\0' '\\n' < /proc/1/environ");
    assert.match(init, /(^|-- )sleep 3600 $/m, 'the source\'s command');
    assert.match(init, /^GREETING=hello there$/m);
    await d.client.machines.destroy(APP, copy.id, { force: true });
  });

  it('commits a checkpoint through the CLI, with progress', async () => {
    await d.client.checkpoints.create(APP, source, { name: 'cp1' });
    await sh(d, source, 'echo later > /data/later');
    const image = `${registry.host}/tests/committed:cp1`;
    const r = hangar('machines', 'commit', source, image, '--checkpoint', 'cp1');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^${image.replace(/[.]/g, '\\.')}  sha256:[0-9a-f]{64}\\n$`));
    assert.match(r.stderr, /opening checkpoint ck[0-9a-f]{12}/);
    assert.match(r.stderr, /^done /m);
    const copy = await d.client.machines.create(APP, { config: { image, rootfs: { size_gb: 2 } } });
    assert.equal(await sh(d, copy.id, LISTING), listing, 'the checkpoint as it was');
    assert.equal(await sh(d, copy.id, 'test -e /data/later || echo absent'), 'absent\n');
    await d.client.machines.destroy(APP, copy.id, { force: true });
  });

  it('pushes, and a second daemon on a fresh data dir runs the image with the same files', async () => {
    const image = `${registry.host}/tests/committed:2`;
    const now = await sh(d, source, LISTING);
    const progress: CommitProgress[] = [];
    const made = await d.client.machines.commit(APP, source, { image, push: true }, { onProgress: (p) => progress.push(p) });
    assert.equal(made.pushed, true);
    const pushes = progress.filter((p) => p.phase === 'push');
    assert.equal(new Set(pushes.map((p) => p.digest)).size, 3, 'config, base layer and new layer');
    assert.ok(progress.some((p) => p.phase === 'manifest'));

    const other = await withDaemon(['--insecure-registry', registry.host]);
    try {
      await other.client.apps.create(APP);
      const copy = await other.client.machines.create(APP, { config: { image, rootfs: { size_gb: 2 } } });
      const theirs = await sh(other, copy.id, LISTING);
      assert.equal(theirs, now, 'the same files on the other host');
      assert.equal(copy.image_ref.digest, made.digest, 'the manifest travelled byte for byte');
    } finally {
      await other.close();
    }
  });

  it('answers errors a robot can act on', async () => {
    const bad = await http(d, 'POST', `/v1/apps/${APP}/machines/${source}/commit`, { image: 'Not A Ref!' });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.code, 'invalid_image_ref');
    assert.ok(bad.body.hint);
    const base = await http(d, 'POST', `/v1/apps/${APP}/machines/${source}/commit`, { image: 'hangar/busybox:mine' });
    assert.equal(base.status, 400);
    assert.equal(base.body.code, 'invalid_image_ref');
    const pinned = await http(d, 'POST', `/v1/apps/${APP}/machines/${source}/commit`, { image: `${registry.host}/x@sha256:${'a'.repeat(64)}` });
    assert.equal(pinned.status, 400);
    const noCheckpoint = await http(d, 'POST', `/v1/apps/${APP}/machines/${source}/commit`, { image: `${registry.host}/x:1`, checkpoint: 'nope' });
    assert.equal(noCheckpoint.status, 404);
    assert.equal(noCheckpoint.body.code, 'checkpoint_not_found');
    const noMachine = await http(d, 'POST', `/v1/apps/${APP}/machines/0123456789abcd/commit`, { image: `${registry.host}/x:1` });
    assert.equal(noMachine.status, 404);

    const denied = await http(d, 'POST', `/v1/apps/${APP}/machines/${source}/commit`, { image: `${locked.host}/tests/denied:1`, push: true });
    assert.equal(denied.status, 502);
    assert.equal(denied.body.code, 'registry_auth_failed');
    assert.match(denied.body.hint, /credentials/);
    // Stored before the push failed: a push can be retried once credentials are configured.
    assert.ok((await d.client.images.list()).some((i) => i.name === `${locked.host}/tests/denied:1`));
  });
});
