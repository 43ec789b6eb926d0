import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, request } from 'node:http';
import { connect } from 'node:net';
import { once } from 'node:events';
import { UPGRADE_ECHO_CONFIG } from './helpers/upgrade-echo.ts';
import { withDaemon, type TestDaemon } from './helpers/daemon.ts';

// How the edge proxy spreads load and guards itself, as clients see it: soft limits wake more
// machines, hard limits queue then refuse, upgraded connections flow both ways and count as load,
// slow or oversized requests are cut off, and every request shows up in /metrics.

let d: TestDaemon & { close(): Promise<void> };

// busybox httpd; /cgi-bin/sleep?N answers after N seconds with the machine's id.
const SLEEP_CGI = ['#!/bin/sh', 'sleep "${QUERY_STRING:-0}"', "printf 'Content-Type: text/plain\\r\\n\\r\\n'", 'echo "$FLY_MACHINE_ID"', ''].join('\n');
const SERVER = ['sh', '-c', 'mkdir -p /srv; exec httpd -f -p 8080 -h /srv'];
const FILES = [{ guest_path: '/srv/cgi-bin/sleep', raw_value: Buffer.from(SLEEP_CGI).toString('base64'), mode: 0o755 }];

function served(concurrency: { type?: 'connections' | 'requests'; soft_limit: number; hard_limit: number }) {
  return {
    image: 'hangar/busybox',
    init: { cmd: SERVER },
    files: FILES,
    services: [{ internal_port: 8080, ports: [{ port: 80, handlers: ['http'] }], concurrency: { type: 'requests', ...concurrency } }],
  } as never;
}

before(async () => {
  d = await withDaemon(['--proxy-header-timeout', '1s', '--proxy-idle-timeout', '6s']);
});
after(async () => {
  await d?.close();
});

function get(host: string, path = '/', headers: Record<string, string> = {}, agent?: Agent): Promise<{ status: number; body: string; ms: number }> {
  const url = new URL(d.proxyUrl);
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path, headers: { host, ...headers }, ...(agent ? { agent } : {}) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ms: Date.now() - t0 }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function untilServing(host: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if ((await get(host, '/cgi-bin/sleep')).status === 200) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`${host} never served`);
}

async function metrics(): Promise<string> {
  const res = await fetch(`${d.url}/metrics`, { headers: { authorization: `Bearer ${d.token}` } });
  assert.equal(res.status, 200);
  return res.text();
}

/** The proxy's load gauge for one machine, as Prometheus would scrape it. */
async function loadOf(app: string, machine: string): Promise<number> {
  const line = (await metrics()).split('\n').find((l) => l.startsWith(`hangar_proxy_machine_load{app="${app}",machine="${machine}"}`));
  return Number(line?.split(' ')[1] ?? NaN);
}

/** Waits until the proxy counts a request in flight on the machine. */
async function loaded(app: string, machine: string): Promise<void> {
  for (let i = 0; i < 100 && (await loadOf(app, machine)) !== 1; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(await loadOf(app, machine), 1);
}

describe('edge proxy under load', () => {
  it('sends work past the soft limit to a started machine and wakes a stopped one for what follows', async () => {
    const app = 'soft';
    await d.client.apps.create(app);
    const a = await d.client.machines.create(app, { config: served({ soft_limit: 1, hard_limit: 5 }) });
    const b = await d.client.machines.create(app, { config: served({ soft_limit: 1, hard_limit: 5 }), skip_launch: true } as never);
    await untilServing(`${app}.localhost`);
    assert.equal((await d.client.machines.get(app, b.id)).state, 'created');

    const first = get(`${app}.localhost`, '/cgi-bin/sleep?2');
    await loaded(app, a.id);
    const second = await get(`${app}.localhost`, '/cgi-bin/sleep?0');
    assert.equal(second.status, 200, second.body);
    assert.equal(second.body.trim(), a.id, 'the started machine under its hard limit takes it at once');
    await d.client.machines.wait(app, b.id, 'started', { timeoutS: 10 });
    assert.equal((await first).body.trim(), a.id);
  });

  // Each on an app of its own (the last on the first test's), and mostly waiting on the proxy's
  // timeouts: they run at once.
  describe('app by app', { concurrency: true }, () => {
    it('queues at the hard limit, serves once a slot frees, and answers 503 when none frees in time', async () => {
      const app = 'hard';
      await d.client.apps.create(app);
      const m = await d.client.machines.create(app, { config: served({ soft_limit: 1, hard_limit: 1 }) });
      await untilServing(`${app}.localhost`);

      const slow = get(`${app}.localhost`, '/cgi-bin/sleep?1');
      await loaded(app, m.id);
      const queued = await get(`${app}.localhost`, '/cgi-bin/sleep?0');
      assert.equal(queued.status, 200, queued.body);
      assert.ok(queued.ms >= 600, `waited for the slot (${queued.ms} ms)`);
      assert.equal((await slow).status, 200);

      const hog = get(`${app}.localhost`, '/cgi-bin/sleep?5');
      await loaded(app, m.id);
      const refused = await get(`${app}.localhost`, '/cgi-bin/sleep?0');
      assert.equal(refused.status, 503, refused.body);
      const body = JSON.parse(refused.body);
      assert.equal(body.code, 'over_capacity');
      assert.match(body.hint, /hard_limit/);
      assert.ok(refused.ms >= 2500, `queued before refusing (${refused.ms} ms)`);
      assert.equal((await hog).body.trim(), m.id);

      const scraped = await metrics();
      assert.match(scraped, new RegExp(`hangar_proxy_requests_total\\{app="${app}",machine="${m.id}",status="200"\\} [3-9]`));
      assert.match(scraped, new RegExp(`hangar_proxy_requests_total\\{app="${app}",machine="",status="503"\\} 1`));
      assert.match(scraped, new RegExp(`hangar_proxy_request_duration_seconds_bucket\\{le="\\+Inf",app="${app}",machine="${m.id}"\\}`));
      assert.equal((await fetch(`${d.url}/metrics`)).status, 401, 'metrics need the token');
    });

    it('with concurrency type connections, holds a machine for a client connection from its first request until it closes', async () => {
      const app = 'conns';
      const host = `${app}.localhost`;
      await d.client.apps.create(app);
      const config = served({ type: 'connections', soft_limit: 1, hard_limit: 1 });
      const machines = [await d.client.machines.create(app, { config }), await d.client.machines.create(app, { config })];
      // One keep-alive connection per agent.
      const agents = [0, 1, 2].map(() => new Agent({ keepAlive: true, maxSockets: 1 }));
      try {
        const first = await get(host, '/cgi-bin/sleep', {}, agents[0]);
        assert.equal(first.status, 200, first.body);
        const holder = first.body.trim();
        assert.equal((await get(host, '/cgi-bin/sleep', {}, agents[0])).body.trim(), holder, 'the connection keeps its machine');
        assert.equal(await loadOf(app, holder), 1, 'an open connection counts as load between its requests');

        const other = await get(host, '/cgi-bin/sleep', {}, agents[1]);
        assert.equal(other.status, 200, other.body);
        assert.notEqual(other.body.trim(), holder, 'a second connection goes to the machine no connection holds');

        // Both machines are at their hard limit of one connection: a third waits for one to close.
        const third = get(host, '/cgi-bin/sleep', {}, agents[2]);
        await new Promise((r) => setTimeout(r, 700));
        agents[0]!.destroy();
        const served3 = await third;
        assert.equal(served3.status, 200, served3.body);
        assert.equal(served3.body.trim(), holder, 'it gets the machine the closed connection let go');
        assert.ok(served3.ms >= 600, `it waited for a connection to close (${served3.ms} ms)`);
      } finally {
        for (const agent of agents) agent.destroy();
      }
      for (const m of machines) {
        for (let i = 0; i < 50 && (await loadOf(app, m.id)) !== 0; i++) await new Promise((r) => setTimeout(r, 50));
        assert.equal(await loadOf(app, m.id), 0, 'closed connections hold nothing');
      }
    });

    it('passes an upgraded connection through both ways and counts it as load while open', async () => {
      const app = 'upgrade';
      await d.client.apps.create(app);
      const m = await d.client.machines.create(app, {
        config: UPGRADE_ECHO_CONFIG as never,
      });
      const url = new URL(d.proxyUrl);
      const socket = connect({ host: url.hostname, port: Number(url.port) });
      await once(socket, 'connect');
      let received = '';
      socket.setEncoding('utf8');
      socket.on('data', (c: string) => (received += c));
      socket.write(`GET /chat HTTP/1.1\r\nHost: ${app}.localhost\r\nConnection: Upgrade\r\nUpgrade: echo-protocol\r\n\r\n`);
      const until = async (pattern: RegExp) => {
        for (let i = 0; i < 100 && !pattern.test(received); i++) await new Promise((r) => setTimeout(r, 50));
        assert.match(received, pattern);
      };
      await until(/\r\n\r\n/);
      assert.match(received, /^HTTP\/1\.1 101 /);
      assert.match(received, /upgrade: echo-protocol/i);
      assert.match(received, new RegExp(`x-machine: ${m.id}`, 'i'));
      socket.write('ping one\n');
      await until(/ping one\n$/);
      assert.equal(await loadOf(app, m.id), 1);
      // Quiet for longer than the idle timeout: an upgraded connection is not cut for it.
      await new Promise((r) => setTimeout(r, 6_500));
      socket.write('ping two\n');
      await until(/ping two\n$/);
      socket.end();
      await once(socket, 'close');
      for (let i = 0; i < 50 && (await loadOf(app, m.id)) !== 0; i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(await loadOf(app, m.id), 0);
    });

    it('answers oversized headers with 431, cuts off a client that never finishes its headers, and closes idle connections', async () => {
      const big = await get('soft.localhost', '/', { 'x-big': 'a'.repeat(20_000) });
      assert.equal(big.status, 431);
      assert.equal(JSON.parse(big.body).code, 'bad_request');

      const url = new URL(d.proxyUrl);
      const socket = connect({ host: url.hostname, port: Number(url.port) });
      await once(socket, 'connect');
      const t0 = Date.now();
      socket.write('GET / HTTP/1.1\r\nHost: soft.localhost\r\n');
      let answer = '';
      socket.setEncoding('utf8');
      socket.on('data', (c: string) => (answer += c));
      await once(socket, 'close');
      const waited = Date.now() - t0;
      assert.match(answer, /^HTTP\/1\.1 408 /);
      assert.ok(waited >= 900 && waited < 5000, `cut off after the 1s header timeout (${waited} ms)`);

      // A kept-alive connection that goes quiet is closed after the 6s idle timeout.
      const idle = connect({ host: url.hostname, port: Number(url.port) });
      await once(idle, 'connect');
      idle.write('GET /cgi-bin/sleep HTTP/1.1\r\nHost: soft.localhost\r\n\r\n');
      let reply = '';
      idle.setEncoding('utf8');
      idle.on('data', (c: string) => (reply += c));
      const t1 = Date.now();
      await once(idle, 'close');
      const lasted = Date.now() - t1;
      assert.match(reply, /^HTTP\/1\.1 200 /);
      assert.ok(lasted >= 5800 && lasted < 10_000, `closed once idle for 6s (${lasted} ms)`);
    });
  });
});
