import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withDaemon, http, HANGAR, type TestDaemon } from './helpers/daemon.ts';
import { startRegistry, pushLayout, type TestRegistry } from './helpers/registry.ts';
import { writeLayout, type TarEntry } from './helpers/oci-layout.ts';
import { waitFor } from './helpers/wait.ts';

// Machines from an image in a real registry: pulled through the daemon (CLI progress included),
// the image's config honoured, layers stacked with their whiteouts.

let registry: TestRegistry;
let d: TestDaemon & { close(): Promise<void> };
let layoutDir: string;
let image: string;
// A registry that answers every pull with a redirect into the daemon's own API, or with a flood of
// junk for an error body; listed as insecure, as any registry on loopback must be.
let hostile: Server;
let hostileHost: string;
let hostileMode: 'redirect-to-api' | 'realm-at-api' | 'junk-error' = 'redirect-to-api';

before(async () => {
  registry = await startRegistry();
  layoutDir = await mkdtemp(join(tmpdir(), 'hangar-layout-'));
  const busybox = await readFile('/bin/busybox');
  const base: TarEntry[] = [
    { name: 'bin/', type: 'directory', mode: 0o755 },
    { name: 'bin/busybox', content: busybox, mode: 0o755 },
    ...['sh', 'id', 'cat', 'ls', 'echo', 'sleep', 'pwd'].map((a): TarEntry => ({ name: `bin/${a}`, type: 'symlink', linkname: 'busybox' })),
    { name: 'etc/', type: 'directory', mode: 0o755 },
    { name: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\nrobot:x:1000:1000:robot:/home/robot:/bin/sh\n', mode: 0o644 },
    { name: 'etc/group', content: 'root:x:0:\nrobot:x:1000:\n', mode: 0o644 },
    { name: 'etc/removeme', content: 'lower', mode: 0o644 },
    { name: 'tmp/', type: 'directory', mode: 0o1777 },
  ];
  const app: TarEntry[] = [
    { name: 'etc/.wh.removeme', content: '' },
    { name: 'app/', type: 'directory', mode: 0o755, uid: 1000, gid: 1000 },
    { name: 'app/hello.txt', content: 'from layer two\n', mode: 0o644, uid: 1000, gid: 1000 },
  ];
  await writeLayout(layoutDir, '1', {
    layers: [{ entries: base, compression: 'gzip' }, { entries: app, compression: 'zstd' }],
    config: { Cmd: ['sh', '-c', 'echo started as $(id -u) in $(pwd); exec sleep 3600'], Env: ['PATH=/bin', 'FROM_IMAGE=yes'], WorkingDir: '/app', User: 'robot', StopSignal: 'SIGUSR1' },
    index: true,
  });
  image = `${registry.host}/tests/app:1`;
  await pushLayout(layoutDir, image, { tag: '1' });
  hostile = createServer((_req, res) => {
    if (hostileMode === 'redirect-to-api') return void res.writeHead(307, { location: `${d.url}/v1/apps` }).end();
    if (hostileMode === 'realm-at-api') return void res.writeHead(401, { 'www-authenticate': `Bearer realm="${d.url}/v1/apps",service="x"` }).end();
    res.writeHead(500).end(`\x1b]0;pwned\x07\r\nERROR injected line ${'x'.repeat(5 << 20)}`);
  });
  hostile.listen(0, '127.0.0.1');
  await once(hostile, 'listening');
  hostileHost = `127.0.0.1:${(hostile.address() as { port: number }).port}`;
  d = await withDaemon(['--insecure-registry', registry.host, '--insecure-registry', hostileHost]);
  await d.client.apps.create('reg');
});

after(async () => {
  await d?.close();
  await registry?.stop();
  hostile?.closeAllConnections();
  hostile?.close();
  if (layoutDir) await rm(layoutDir, { recursive: true, force: true });
});

describe('machines from a registry image', () => {
  it('pulls with progress through the CLI and runs the image as its config says', async () => {
    const pull = spawnSync(HANGAR, ['images', 'pull', image], { encoding: 'utf8', env: { ...process.env, HANGAR_DATA_DIR: d.dataDir } });
    assert.equal(pull.status, 0, pull.stderr);
    assert.match(pull.stderr, /resolving .*tests\/app:1/);
    assert.match(pull.stderr, /downloading 2 layer\(s\)/);
    assert.match(pull.stdout, /tests\/app:1\s+sha256:[0-9a-f]{64}/);

    const m = await d.client.machines.create('reg', { config: { image } });
    assert.equal(m.state, 'started');
    assert.deepEqual({ registry: m.image_ref.registry, repository: m.image_ref.repository, tag: m.image_ref.tag }, { registry: registry.host, repository: 'tests/app', tag: '1' });
    const r = await d.client.machines.exec('reg', m.id, ['sh', '-c', 'id -u; pwd; echo $FROM_IMAGE; cat hello.txt; ls /etc']);
    assert.equal(r.exit_code, 0, r.stderr);
    const [uid, cwd, fromImage, hello, ...etc] = r.stdout.trim().split('\n');
    assert.deepEqual([uid, cwd, fromImage, hello], ['1000', '/app', 'yes', 'from layer two']);
    assert.ok(!etc.includes('removeme'), 'the whiteout in layer two hides /etc/removeme');
    const logs = await d.client.machines.logs('reg', m.id);
    assert.ok(logs.lines.includes('started as 1000 in /app'), JSON.stringify(logs.lines));

    // The image's StopSignal is what a stop sends when neither the request nor the config names one.
    const trapper = await d.client.machines.create('reg', { config: { image, init: { cmd: ['sh', '-c', 'trap "echo got USR1; exit 0" USR1; echo trapping; while true; do sleep 0.1; done'] } } });
    // Stopped once the shell has its trap: a signal before that would end it with no word.
    await waitFor(async () => ((await d.client.machines.logs('reg', trapper.id)).lines.includes('trapping') ? true : undefined), 10_000, 'the trap to be set');
    await d.client.machines.stop('reg', trapper.id, { timeout: '20s' });
    assert.ok((await d.client.machines.logs('reg', trapper.id)).lines.includes('got USR1'));
    await d.client.machines.destroy('reg', trapper.id, { force: true });

    const inUse = await http(d, 'DELETE', `/v1/images?image=${encodeURIComponent(image)}`);
    assert.equal(inUse.status, 409);
    assert.equal(inUse.body.code, 'image_in_use');
    await d.client.machines.destroy('reg', m.id, { force: true });
    assert.equal((await http(d, 'DELETE', `/v1/images?image=${encodeURIComponent(image)}`)).status, 200);
  });

  it('creating from an image not in the store pulls it; an unknown tag is a 404 with a hint', async () => {
    const m = await d.client.machines.create('reg', { skip_launch: true, config: { image } });
    assert.equal(m.state, 'created');
    const missing = await http(d, 'POST', '/v1/apps/reg/machines', { config: { image: `${registry.host}/tests/app:nope` } });
    assert.equal(missing.status, 404, missing.text);
    assert.equal(missing.body.code, 'image_not_found');
    assert.ok(missing.body.hint);
  });

  it('a hostile registry cannot send the pull (or its token request) into the daemon API, nor flood the error', async () => {
    hostileMode = 'redirect-to-api';
    const redirected = await http(d, 'POST', '/v1/apps/reg/machines', { config: { image: `${hostileHost}/evil/app:1` } });
    assert.equal(redirected.status, 502, redirected.text);
    assert.equal(redirected.body.code, 'registry_redirect_refused');
    assert.match(redirected.body.hint, /HTTPS/);

    hostileMode = 'realm-at-api';
    const realm = await http(d, 'POST', '/v1/images/pull', { image: `${hostileHost}/evil/app:1` });
    assert.equal(realm.status, 502, realm.text);
    assert.equal(realm.body.code, 'registry_realm_refused');

    hostileMode = 'junk-error';
    const flooded = await http(d, 'POST', '/v1/images/pull', { image: `${hostileHost}/evil/app:1` });
    assert.equal(flooded.status, 502, flooded.text.slice(0, 500));
    assert.equal(flooded.body.code, 'registry_error');
    assert.ok(flooded.text.length < 2000, `error of ${flooded.text.length} bytes`);
    assert.doesNotMatch(flooded.body.error, /[\x00-\x1f\x7f]/);
  });
});
