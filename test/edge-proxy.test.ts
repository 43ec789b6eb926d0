import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { withDaemon, type TestDaemon } from './helpers/daemon.ts';

// The edge proxy as a client sees it: http://<app>.localhost:<port>/ reaches the app's machine,
// wakes it when stopped, and says clearly when it cannot.

let d: TestDaemon & { close(): Promise<void> };
const APP = 'edge';

// A busybox httpd serving /srv (index.html) and a CGI that echoes what it was sent.
const SERVER = ['sh', '-c', 'mkdir -p /srv; echo "hello from $FLY_MACHINE_ID" > /srv/index.html; exec httpd -f -p 8080 -h /srv'];
const ECHO_CGI = [
  '#!/bin/sh',
  "printf 'Content-Type: text/plain\\r\\n\\r\\n'",
  'echo method=$REQUEST_METHOD',
  'echo xff=$HTTP_X_FORWARDED_FOR host=$HTTP_X_FORWARDED_HOST',
  'cat',
  '',
].join('\n');
// Asks the proxy to replay to the instance named in the query (elsewhere for "elsewhere" and,
// endlessly, "loop"; to another app for "app=NAME"), unless this is the replayed request, which it
// answers with where it came from and its body.
const REPLAY_CGI = [
  '#!/bin/sh',
  'if [ -n "$HTTP_FLY_REPLAY_SRC" ] && [ "$QUERY_STRING" != loop ]; then',
  "  printf 'Content-Type: text/plain\\r\\n\\r\\n'",
  '  echo "answered by $FLY_MACHINE_ID, replayed from $HTTP_FLY_REPLAY_SRC"',
  '  cat',
  'elif [ "$QUERY_STRING" = loop ] || [ "$QUERY_STRING" = elsewhere ]; then',
  "  printf 'fly-replay: elsewhere=true\\r\\nContent-Type: text/plain\\r\\n\\r\\n'",
  'elif [ "${QUERY_STRING#app=}" != "$QUERY_STRING" ]; then',
  "  printf 'fly-replay: %s\\r\\nContent-Type: text/plain\\r\\n\\r\\n' \"$QUERY_STRING\"",
  'else',
  "  printf 'fly-replay: instance=%s;state=step2\\r\\nContent-Type: text/plain\\r\\n\\r\\n' \"$QUERY_STRING\"",
  'fi',
  '',
].join('\n');
const SSE_CGI = [
  '#!/bin/sh',
  "printf 'Content-Type: text/event-stream\\r\\nCache-Control: no-cache\\r\\n\\r\\n'",
  'for i in 1 2 3 4; do printf "data: tick %s\\n\\n" $i; sleep 0.4; done',
  '',
].join('\n');
const FILES = [
  { guest_path: '/srv/cgi-bin/sse', raw_value: Buffer.from(SSE_CGI).toString('base64'), mode: 0o755 },
  { guest_path: '/srv/cgi-bin/echo', raw_value: Buffer.from(ECHO_CGI).toString('base64'), mode: 0o755 },
  { guest_path: '/srv/cgi-bin/replay', raw_value: Buffer.from(REPLAY_CGI).toString('base64'), mode: 0o755 },
];
const SERVED = { image: 'hangar/busybox', init: { cmd: SERVER }, files: FILES, services: [{ internal_port: 8080, ports: [{ port: 80, handlers: ['http'] }] }] };

before(async () => {
  d = await withDaemon();
  await d.client.apps.create(APP);
});
after(async () => {
  await d?.close();
});

function get(host: string, path = '/', opts: { method?: string; body?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  const url = new URL(d.proxyUrl);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path, method: opts.method ?? 'GET', headers: { host, ...opts.headers } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

describe('edge proxy', () => {
  it('routes <app>.localhost to the app machine, streaming bodies and adding forwarding headers', async () => {
    const m = await d.client.machines.create(APP, { config: SERVED as never });
    // Right after create: the proxy holds the request until the server listens.
    let res = await get(`${APP}.localhost`);
    assert.equal(res.status, 200, res.body);
    assert.equal(res.body, `hello from ${m.id}\n`);
    assert.match(String(res.headers['fly-request-id']), /^[0-9a-f]{16}$/);

    const posted = await get(`${APP}.localhost:1234`, '/cgi-bin/echo', { method: 'POST', body: 'payload-123' });
    assert.equal(posted.status, 200, posted.body);
    assert.match(posted.body, /method=POST/);
    assert.match(posted.body, /xff=127\.0\.0\.1 host=edge\.localhost:1234/);
    assert.match(posted.body, /payload-123/);
  });

  it('passes a server-sent event stream through as it is written', async () => {
    const url = new URL(d.proxyUrl);
    const arrivals: Array<{ at: number; text: string }> = [];
    const t0 = Date.now();
    await new Promise<void>((resolve, reject) => {
      const req = request({ host: url.hostname, port: url.port, path: '/cgi-bin/sse', headers: { host: `${APP}.localhost`, accept: 'text/event-stream' } }, (res) => {
        assert.equal(res.headers['content-type'], 'text/event-stream');
        res.setEncoding('utf8');
        res.on('data', (c: string) => arrivals.push({ at: Date.now() - t0, text: c }));
        res.on('end', resolve);
      });
      req.on('error', reject);
      req.end();
    });
    const all = arrivals.map((a) => a.text).join('');
    assert.equal(all, 'data: tick 1\n\ndata: tick 2\n\ndata: tick 3\n\ndata: tick 4\n\n');
    const first = arrivals.find((a) => a.text.includes('tick 1'))!;
    const last = arrivals.find((a) => a.text.includes('tick 4'))!;
    assert.ok(last.at - first.at >= 900, `events arrived as written, not buffered (${first.at} ms, ${last.at} ms)`);
  });

  it('wakes a stopped machine on the first request', async () => {
    const [m] = await d.client.machines.list(APP);
    await d.client.machines.stop(APP, m!.id);
    await d.client.machines.wait(APP, m!.id, 'stopped');
    const res = await get(`${APP}.localhost`);
    assert.equal(res.status, 200, res.body);
    assert.equal(res.body, `hello from ${m!.id}\n`);
    assert.equal((await d.client.machines.get(APP, m!.id)).state, 'started');
  });

  it('pins requests with fly-force-instance-id (waking the machine), and prefers with fly-prefer-instance-id', async () => {
    const first = (await d.client.machines.list(APP))[0]!;
    const more = [await d.client.machines.create(APP, { config: SERVED as never }), await d.client.machines.create(APP, { config: SERVED as never })];
    const ids = [first.id, ...more.map((m) => m.id)];
    for (const id of ids) {
      let res = await get(`${APP}.localhost`, '/', { headers: { 'fly-force-instance-id': id } });
      for (let i = 0; i < 50 && res.status !== 200; i++) {
        await new Promise((r) => setTimeout(r, 100));
        res = await get(`${APP}.localhost`, '/', { headers: { 'fly-force-instance-id': id } });
      }
      assert.equal(res.body, `hello from ${id}\n`, `forced to ${id}`);
    }
    await d.client.machines.stop(APP, ids[2]!);
    await d.client.machines.wait(APP, ids[2]!, 'stopped');
    const woken = await get(`${APP}.localhost`, '/', { headers: { 'fly-force-instance-id': ids[2]! } });
    assert.equal(woken.body, `hello from ${ids[2]}\n`, 'a forced request wakes its machine');
    for (let i = 0; i < 5; i++) {
      const preferred = await get(`${APP}.localhost`, '/', { headers: { 'fly-prefer-instance-id': ids[1]! } });
      assert.equal(preferred.body, `hello from ${ids[1]}\n`);
    }
    const missing = await get(`${APP}.localhost`, '/', { headers: { 'fly-force-instance-id': 'ffffffffffffff' } });
    assert.equal(missing.status, 404);
    assert.equal((JSON.parse(missing.body) as { code: string }).code, 'machine_not_found');
  });

  it('replays a request where the machine fly-replay header says, with its body, and cuts loops off', async () => {
    const ids = (await d.client.machines.list(APP)).map((m) => m.id);
    const [a, b] = [ids[0]!, ids[1]!];
    const res = await get(`${APP}.localhost`, `/cgi-bin/replay?${b}`, { method: 'POST', body: 'the-body', headers: { 'fly-force-instance-id': a } });
    assert.equal(res.status, 200, res.body);
    assert.match(res.body, new RegExp(`^answered by ${b}, replayed from instance=${a};app=${APP};state=step2\\nthe-body$`));

    const elsewhere = await get(`${APP}.localhost`, '/cgi-bin/replay?elsewhere', { headers: { 'fly-force-instance-id': a } });
    assert.equal(elsewhere.status, 200, elsewhere.body);
    const by = /^answered by ([0-9a-f]+), replayed from instance=([0-9a-f]+);app=edge\n$/.exec(elsewhere.body);
    assert.ok(by, elsewhere.body);
    assert.equal(by[2], a);
    assert.notEqual(by[1], a, 'elsewhere=true means another machine');

    await d.client.apps.create('edge-other');
    const other = await d.client.machines.create('edge-other', { config: SERVED as never });
    const toApp = await get(`${APP}.localhost`, '/cgi-bin/replay?app=edge-other', { method: 'POST', body: 'moved', headers: { 'fly-force-instance-id': a } });
    assert.equal(toApp.status, 200, toApp.body);
    assert.equal(toApp.body, `answered by ${other.id}, replayed from instance=${a};app=${APP}\nmoved`);
    await d.client.machines.destroy('edge-other', other.id, { force: true });

    const loop = await get(`${APP}.localhost`, '/cgi-bin/replay?loop');
    assert.equal(loop.status, 508);
    assert.ok((JSON.parse(loop.body) as { hint: string }).hint);
  });

  it('answers unknown hosts with 404 and a hint, and an app with nothing to serve with 503', async () => {
    const unknown = await get('nope.localhost');
    assert.equal(unknown.status, 404);
    const body = JSON.parse(unknown.body) as { code: string; hint: string };
    assert.equal(body.code, 'app_not_found');
    assert.ok(body.hint);
    const bare = await get('localhost');
    assert.equal(bare.status, 404);
    assert.match((JSON.parse(bare.body) as { hint: string }).hint, /<app>\.localhost/);

    await d.client.apps.create('quiet');
    await d.client.machines.create('quiet', { config: { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] }, services: [{ internal_port: 8080, autostart: false }] } as never, skip_launch: true });
    const asleep = await get('quiet.localhost');
    assert.equal(asleep.status, 503);
    assert.match((JSON.parse(asleep.body) as { hint: string }).hint, /start a machine/);
  });

  it('holds requests for a machine that just started until its server listens, and says which machine failed when it drops them', async () => {
    await d.client.apps.create('broken');
    const slowBoot = ['sh', '-c', 'sleep 1; mkdir -p /srv; echo up > /srv/index.html; exec httpd -f -p 8080 -h /srv'];
    const booting = await d.client.machines.create('broken', { config: { image: 'hangar/busybox', init: { cmd: slowBoot }, services: [{ internal_port: 8080 }] } as never });
    const t0 = Date.now();
    const first = await get('broken.localhost');
    assert.equal(first.status, 200, first.body);
    assert.equal(first.body.trim(), 'up');
    assert.ok(Date.now() - t0 >= 500, 'the request waited for the boot');
    await d.client.machines.destroy('broken', booting.id, { force: true });

    // Accepts, then closes without a word: 502, naming the machine.
    const m = await d.client.machines.create('broken', { config: { image: 'hangar/busybox', init: { cmd: ['nc', '-ll', '-p', '8080', '-e', 'true'] }, services: [{ internal_port: 8080 }] } as never });
    const res = await get('broken.localhost');
    assert.equal(res.status, 502, res.body);
    assert.match((JSON.parse(res.body) as { error: string }).error, new RegExp(m.id));
  });
});
