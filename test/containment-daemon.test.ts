import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { get as httpGet, request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { http } from './helpers/daemon.ts';
import { withNodeDaemon, waitForPort, type NodeDaemon } from './helpers/node-image.ts';

// The daemon serves every app at once, so no machine and no client may crash it or starve it.
// Each attack is made as an attacker would (from inside a machine where that is where it comes
// from), while /health is asked on a fresh connection every 100 ms: it must answer throughout,
// and the attacker must get a clear refusal. Caps are set small by flag to keep the run short.

const GATEWAY_PER_MACHINE = 16;
const PROXY_PER_CLIENT = 100;
const FLAGS = [
  '--gateway-max-connections', '48', '--gateway-max-connections-per-machine', String(GATEWAY_PER_MACHINE),
  '--proxy-max-connections', '200', '--proxy-max-connections-per-client', String(PROXY_PER_CLIENT), '--proxy-replay-buffer-mb', '4',
];

let d: NodeDaemon;
const b64 = (s: string) => Buffer.from(s).toString('base64');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

before(async () => {
  d = await withNodeDaemon(FLAGS);
  for (const app of ['flood', 'px', 'px-stall', 'attacker', 'victim', 'limits']) await d.client.apps.create(app);
});
after(async () => {
  await d?.close();
});

/** GET /health on a connection of its own (a pooled one would hide a daemon out of descriptors). */
function healthOnce(): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = httpGet(`${d.url}/health`, { agent: false, timeout: 3000 }, (res) => {
      res.resume();
      res.once('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
    });
    req.once('timeout', () => req.destroy(new Error('no answer in 3 s')));
    req.once('error', reject);
  });
}

/** Watchers still asking; a test that failed before stopping its own leaves it to afterEach. */
const watching = new Set<() => Promise<void>>();
afterEach(async () => {
  for (const halt of watching) await halt();
});

/** Asks /health every 100 ms until stop(); then it must have answered every time, promptly. */
function watchHealth(): { stop(): Promise<{ asked: number; maxMs: number }> } {
  const failures: string[] = [];
  const latencies: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const t = performance.now();
      await healthOnce().catch((err: Error) => failures.push(err.message));
      latencies.push(performance.now() - t);
      await sleep(100);
    }
  })();
  const halt = async () => {
    running = false;
    watching.delete(halt);
    await loop;
  };
  watching.add(halt);
  return {
    stop: async () => {
      await halt();
      assert.deepEqual(failures, [], `/health failed ${failures.length} of ${latencies.length} times`);
      const maxMs = Math.max(...latencies);
      assert.ok(maxMs < 2000, `/health took ${Math.round(maxMs)} ms at worst`);
      return { asked: latencies.length, maxMs };
    },
  };
}

function rssBytes(): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${d.process.pid}/status`, 'utf8'))?.[1];
  return Number(kb) * 1024;
}

describe('a machine flooding its own log', () => {
  it('is followed over REST and MCP in bounded pieces while it writes one 600 MB line, and the daemon stays up', async () => {
    // One line longer than V8's longest string, then a marker line, repeated so a follower still
    // sees it after the log was rotated under it.
    const flood =
      "const fs = require('fs'); setTimeout(() => { const b = Buffer.alloc(1 << 20, 97); " +
      "for (let i = 0; i < 600; i++) fs.writeSync(1, b); setInterval(() => fs.writeSync(1, '\\nflood-done\\n'), 300); }, 1500);";
    const m = await d.client.machines.create('flood', { config: { image: d.nodeImage, init: { cmd: ['node', '-e', flood] } } });
    const health = watchHealth();
    const rest = followOverRest(m.id, 90_000);
    rest.catch(() => undefined); // awaited below; failing first elsewhere must not leave it unhandled
    const mcp = new Client({ name: 'containment-test', version: '1' });
    await mcp.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${d.token}` } } }));
    try {
      const r = (await mcp.callTool({ name: 'machine_logs', arguments: { app: 'flood', id: m.id, lines: 10, follow_s: 8 } })) as CallToolResult;
      assert.ok(!r.isError, JSON.stringify(r.content).slice(0, 500));
      const answer = r.structuredContent as { lines: string[]; truncated: boolean };
      assert.equal(answer.truncated, true, 'the flood is more than one answer carries');
      assert.ok(JSON.stringify(answer).length < 400 * 1024, `the MCP answer is ${JSON.stringify(answer).length} bytes`);
      assert.ok(answer.lines.every((l) => Buffer.byteLength(l) <= 64 * 1024));
    } finally {
      await mcp.close();
    }
    const seen = await rest;
    assert.ok(seen.sawMarker, `the follower saw the line after the flood (${seen.events} events, ${seen.bytes} bytes)`);
    assert.ok(seen.longest <= 64 * 1024, `a log event carries at most 64 KiB of a line, not ${seen.longest}`);
    assert.ok(seen.events > 100, 'the long line came as many pieces');
    const tail = await http(d, 'GET', `/v1/apps/flood/machines/${m.id}/logs?tail=100000`);
    assert.equal(tail.status, 200);
    assert.ok(tail.text.length < 10 * 2 ** 20, `a tail reads a bounded window (${tail.text.length} bytes)`);
    await health.stop();
    await d.client.machines.destroy('flood', m.id, { force: true });
  });
});

describe('a machine filling its log as fast as it can', () => {
  it('holds at most two 8 MiB files on disk at any moment, and keeps the end of what it wrote', async () => {
    // 256 MiB: 16 times what the log may keep, so it rotates some 30 times under the watch below.
    const m = await d.client.machines.create('flood', {
      config: { image: 'hangar/busybox', init: { cmd: ['sh', '-c', 'yes 0123456789abcdef | head -c 268435456; echo; echo flood-end; exec sleep 3600'] } },
    });
    const logs = join(d.dataDir, 'machines', m.id, 'logs');
    const onDisk = () => readdirSync(logs).reduce((sum, f) => sum + (statSync(join(logs, f), { throwIfNoEntry: false })?.size ?? 0), 0);
    let most = 0;
    const deadline = Date.now() + 120_000;
    for (;;) {
      most = Math.max(most, onDisk());
      // multilog makes `current` at the first output and renames it away at each rotation, so it can be briefly absent.
      if (readIfPresent(join(logs, 'current')).includes('flood-end')) break;
      assert.ok(Date.now() < deadline, 'the machine wrote its 256 MiB and the marker within 2 minutes');
      await sleep(20);
    }
    assert.ok(most <= 2 * 8 * 2 ** 20 + 64 * 1024, `the log never held more than two files' worth (${most} bytes at most)`);
    const { lines } = await d.client.machines.logs('flood', m.id, { tail: 2 });
    assert.equal(lines.at(-1), 'flood-end');
    await d.client.machines.destroy('flood', m.id, { force: true });
  });
});

/** Follows a machine's log over SSE until the flood's marker line (or the deadline), reading as fast as it can. */
async function followOverRest(id: string, deadlineMs: number): Promise<{ events: number; bytes: number; longest: number; sawMarker: boolean }> {
  const res = await fetch(`${d.url}/v1/apps/flood/machines/${id}/logs?follow=true&tail=0`, {
    headers: { authorization: `Bearer ${d.token}` },
    signal: AbortSignal.timeout(deadlineMs),
  });
  assert.equal(res.status, 200);
  const seen = { events: 0, bytes: 0, longest: 0, sawMarker: false };
  let buffer = '';
  const decoder = new TextDecoder();
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (!block.startsWith('event: log\ndata: ')) continue;
        const line = block.slice('event: log\ndata: '.length);
        seen.events++;
        seen.bytes += line.length;
        seen.longest = Math.max(seen.longest, Buffer.byteLength(line));
        if (line === 'flood-done') seen.sawMarker = true;
      }
      if (seen.sawMarker) break;
    }
  } catch (err) {
    if ((err as Error).name !== 'TimeoutError') throw err;
  }
  return seen;
}

// The proxy's test backend: /headers echoes what arrived; /replay asks for a replay to this same
// machine, then answers the replayed request with the size of its body; /stall never reads nor answers.
const BACKEND = `
const http = require('http');
http.createServer((req, res) => {
  if (req.url === '/headers') return res.end(JSON.stringify(req.headers));
  if (req.url === '/replay') {
    if (!req.headers['fly-replay-src']) { res.writeHead(200, { 'fly-replay': 'instance=' + process.env.FLY_MACHINE_ID }); return res.end(); }
    let n = 0; req.on('data', (c) => (n += c.length)); req.on('end', () => res.end('replayed ' + n)); return;
  }
  if (req.url === '/stall') return req.pause();
  res.end('ok');
}).listen(8080);`;

describe('hostile proxy clients', () => {
  let proxyPort = 0;
  before(async () => {
    proxyPort = Number(new URL(d.proxyUrl).port);
    // The stalled uploads go to an app of their own: they hold its machine's connections, which
    // is that app's concern (its concurrency limits); here the point is the daemon and other clients.
    for (const app of ['px', 'px-stall']) {
      const m = await d.client.machines.create(app, {
        config: {
          image: d.nodeImage,
          init: { cmd: ['node', '-e', BACKEND] },
          services: [{ internal_port: 8080, ports: [{ port: 80, handlers: ['http'] }], concurrency: { type: 'requests', soft_limit: 1000, hard_limit: 1000 } }],
        },
      });
      await waitForPort(m.private_ip, 8080);
    }
  });

  /** One request through the proxy as `px.localhost`; `rawHeaders` may repeat a name. */
  function viaProxy(path: string, opts: { method?: string; body?: Buffer; headers?: Record<string, string> } = {}): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: proxyPort, path, method: opts.method ?? 'GET', agent: false, headers: { host: 'px.localhost', ...opts.headers } }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c) => (body += c)).once('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.once('error', reject);
      req.end(opts.body);
    });
  }

  it('refuses two Host headers with 400 instead of routing by the last', async () => {
    const socket = connect(proxyPort, '127.0.0.1');
    socket.write('GET /headers HTTP/1.1\r\nHost: px.localhost\r\nHost: other.localhost\r\nConnection: close\r\n\r\n');
    let text = '';
    for await (const chunk of socket) text += chunk;
    assert.match(text, /^HTTP\/1\.1 400 /);
    assert.match(text, /"code":"bad_request"/);
  });

  it('replaces the forwarding headers a client sends instead of passing them to the machine', async () => {
    const forged = {
      'fly-client-ip': '6.6.6.6', 'fly-replay-src': 'instance=forged;app=other', 'fly-forwarded-port': '1', 'fly-region': 'evil',
      'fly-request-id': 'forged', 'x-request-id': 'forged', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'evil.example',
      'x-forwarded-port': '1', 'x-forwarded-ssl': 'on',
    };
    const r = await viaProxy('/headers', { headers: forged });
    assert.equal(r.status, 200, r.body);
    const seen = JSON.parse(r.body) as Record<string, string>;
    assert.equal(seen['fly-client-ip'], '127.0.0.1');
    assert.equal(seen['fly-replay-src'], undefined);
    assert.equal(seen['fly-region'], undefined);
    assert.equal(seen['fly-forwarded-port'], String(proxyPort));
    assert.equal(seen['x-forwarded-port'], String(proxyPort));
    assert.equal(seen['x-forwarded-proto'], 'http');
    assert.equal(seen['x-forwarded-ssl'], 'off');
    assert.equal(seen['x-forwarded-host'], 'px.localhost');
    assert.notEqual(seen['fly-request-id'], 'forged');
    assert.equal(seen['fly-request-id'], seen['x-request-id']);
  });

  it('caps one client\'s stalled uploads (503 too_many_connections past the cap) and the memory kept for replays', async () => {
    const body = Buffer.alloc(512 * 1024, 98);
    const before = await viaProxy('/replay', { method: 'POST', body });
    assert.deepEqual(before, { status: 200, body: `replayed ${body.length}` }, 'a replay with its body works before the attack');

    const rssBefore = rssBytes();
    const health = watchHealth();
    // 300 uploads from one address (127.0.0.2) to another app, each announcing 2 MiB and stalling
    // after 1 MiB less a bit. Without caps the daemon kept them all: ~200 MB more.
    const attackers = await Promise.all(Array.from({ length: 300 }, () => stalledUpload(proxyPort)));
    try {
      const refused = attackers.filter((a) => a.answer().startsWith('HTTP/1.1 503'));
      assert.equal(refused.length, 300 - PROXY_PER_CLIENT, `${refused.length} of 300 were refused`);
      assert.match(refused[0]!.answer(), /"code":"too_many_connections"/);
      await sleep(1000);
      const grewMb = (rssBytes() - rssBefore) / 2 ** 20;
      assert.ok(grewMb < 60, `the daemon grew by ${grewMb.toFixed(0)} MB for ${PROXY_PER_CLIENT} stalled uploads`);

      // Other clients are still served; with the replay budget spent, a replay cannot be honoured, and says so.
      const during = await viaProxy('/replay', { method: 'POST', body });
      assert.equal(during.status, 503, during.body);
      assert.equal(JSON.parse(during.body).code, 'replay_unavailable');
      assert.equal((await viaProxy('/')).body, 'ok');
    } finally {
      for (const a of attackers) a.socket.destroy();
    }
    await health.stop();
    await sleep(500);
    assert.deepEqual(await viaProxy('/replay', { method: 'POST', body }), { status: 200, body: `replayed ${body.length}` }, 'replays work again once the uploads are gone');
  });


  it('caps connections in total over all clients: over it, HTTP gets 503 and HTTPS is closed before the handshake', async () => {
    // Two clients at their per-client cap fill the total (200); they send nothing.
    const idle: Socket[] = [];
    for (const from of ['127.0.0.3', '127.0.0.4']) {
      for (let i = 0; i < PROXY_PER_CLIENT; i++) {
        const socket = connect({ host: '127.0.0.1', port: proxyPort, localAddress: from });
        socket.on('error', () => undefined);
        idle.push(socket);
      }
    }
    try {
      await Promise.all(idle.map((s) => new Promise((resolve) => (s.readyState === 'open' ? resolve(undefined) : s.once('connect', resolve)))));
      await sleep(200);
      const refused = await viaProxy('/');
      assert.equal(refused.status, 503, refused.body);
      assert.equal(JSON.parse(refused.body).code, 'too_many_connections');
      assert.match(JSON.parse(refused.body).error, /in total/);
      const tlsPort = Number(new URL(d.proxyTlsUrl).port);
      const handshake = await new Promise<string>((resolve) => {
        const t = tlsConnect({ host: '127.0.0.1', port: tlsPort, servername: 'px.localhost', rejectUnauthorized: false }, () => resolve('handshake done'));
        t.once('error', (err) => resolve(err.message));
      });
      assert.match(handshake, /disconnected|ECONNRESET/);
      await healthOnce();
    } finally {
      for (const s of idle) s.destroy();
    }
    await sleep(300);
    assert.equal((await viaProxy('/')).body, 'ok');
  });
});

/** A client that sends a request head, then (unless refused at once) most of a body, and stalls. */
async function stalledUpload(port: number): Promise<{ socket: Socket; answer: () => string }> {
  const socket = connect({ host: '127.0.0.1', port, localAddress: '127.0.0.2' });
  let answer = '';
  socket.on('data', (c) => (answer += c));
  socket.on('error', () => undefined);
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.write(`POST /stall HTTP/1.1\r\nHost: px-stall.localhost\r\nContent-Length: ${2 * 2 ** 20}\r\n\r\n`);
  await sleep(300);
  if (!answer) socket.write(Buffer.alloc(2 ** 20 - 1024, 120));
  return { socket, answer: () => answer };
}

// Run inside a machine: `node /attack.js MODE COUNT`, against its gateway (_api.internal).
//   http:   COUNT connections (200 at a time), each sending one request without a token; prints
//           the answers' statuses and codes and how many answered connections were open at once.
//   silent: COUNT connections that send nothing; prints after how long the gateway closed each.
//   dns:    COUNT TCP connections to the gateway's DNS; prints how many are still open after 1 s.
const ATTACK = `
const net = require('net');
const [mode, countText] = process.argv.slice(2);
const count = Number(countText);
require('dns').lookup('_api.internal', { family: 4 }, async (err, gateway) => {
  if (err) throw err;
  const out = { statuses: {}, codes: {}, unanswered: 0, peakOpen: 0, closedAfterMs: [], stillOpen: 0 };
  let open = 0;
  let done = 0;
  setInterval(() => console.error(JSON.stringify({ done, open, ...out })), 2000).unref();
  const one = () => new Promise((resolve) => {
    const started = Date.now();
    const s = net.connect(mode === 'dns' ? 53 : 4280, gateway);
    let text = '';
    let answered = false;
    s.on('error', () => {});
    s.on('connect', () => { if (mode === 'http') s.write('GET /v1/apps HTTP/1.1\\r\\nHost: _api.internal\\r\\n\\r\\n'); });
    s.on('data', (c) => {
      text += c;
      if (answered || !text.includes('\\r\\n\\r\\n')) return;
      answered = true;
      const status = text.split(' ')[1];
      out.statuses[status] = (out.statuses[status] || 0) + 1;
      const code = /"code":"([a-z_]+)"/.exec(text);
      if (code) out.codes[code[1]] = (out.codes[code[1]] || 0) + 1;
      if (status === '401') { open++; out.peakOpen = Math.max(out.peakOpen, open); s.once('close', () => open--); }
      resolve();
    });
    s.on('close', () => {
      if (mode === 'silent') out.closedAfterMs.push(Date.now() - started);
      if (!answered) { if (mode === 'http') out.unanswered++; resolve(); }
    });
    if (mode === 'dns') setTimeout(() => { if (!s.destroyed) out.stillOpen++; resolve(); }, 1000);
  });
  if (mode === 'http') {
    let next = 0;
    await Promise.all(Array.from({ length: 200 }, async () => { while (next++ < count) { await one(); done++; } }));
  } else {
    await Promise.all(Array.from({ length: count }, one));
  }
  console.log(JSON.stringify(out));
  process.exit(0);
});`;

describe('a machine flooding its gateway', () => {
  let attacker = '';
  let quiet = '';
  let victim = '';
  before(async () => {
    const config = { image: d.nodeImage, init: { cmd: ['sleep', 'inf'] }, files: [{ guest_path: '/attack.js', raw_value: b64(ATTACK) }] };
    attacker = (await d.client.machines.create('attacker', { config })).id;
    quiet = (await d.client.machines.create('attacker', { config })).id;
    victim = (await d.client.machines.create('victim', { config: { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] } } })).id;
  });

  const attack = async (id: string, mode: string, count: number) => {
    const r = await d.client.machines.exec('attacker', id, ['node', '/attack.js', mode, String(count)], { timeoutS: 40 });
    assert.equal(r.exit_code, 0, r.stderr.slice(-3000));
    return JSON.parse(r.stdout) as { statuses: Record<string, number>; codes: Record<string, number>; unanswered: number; peakOpen: number; closedAfterMs: number[]; stillOpen: number };
  };

  it('cannot use up the daemon\'s descriptors with _api.internal connections: past its share it gets 503 too_many_connections', async () => {
    // A daemon with a small descriptor limit, so a scaled-down flood would exhaust it without caps.
    // Only the soft limit: what is taken from the hard limit cannot be given back here.
    const pid = d.process.pid!;
    const [, soft, hard] = /Max open files\s+(\S+)\s+(\S+)/.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))!;
    execFileSync('prlimit', ['--pid', String(pid), `--nofile=1024:${hard}`]);
    try {
      const health = watchHealth();
      const silent = attack(quiet, 'silent', 8);
      silent.catch(() => undefined); // awaited below; failing first elsewhere must not leave it unhandled
      const flood = await attack(attacker, 'http', 1500);
      // Other apps' machines are still served meanwhile.
      assert.equal((await d.client.machines.exec('victim', victim, ['echo', 'still here'])).stdout, 'still here\n');
      await health.stop();
      assert.ok(flood.peakOpen <= GATEWAY_PER_MACHINE, `the machine held ${flood.peakOpen} connections at once`);
      assert.ok((flood.statuses['401'] ?? 0) >= 1, 'connections within the cap are served (401 without a token)');
      assert.ok((flood.codes.too_many_connections ?? 0) >= 1000, `refusals say why: ${JSON.stringify(flood)}`);
      assert.equal((flood.statuses['401'] ?? 0) + (flood.statuses['503'] ?? 0) + flood.unanswered, 1500);
      // Connections that never send a request are closed by the header timeout (10 s), not kept.
      const { closedAfterMs } = await silent;
      assert.equal(closedAfterMs.length, 8);
      assert.ok(closedAfterMs.every((ms) => ms > 8_000 && ms < 14_000), `silent connections closed after ${closedAfterMs.join(', ')} ms`);
    } finally {
      execFileSync('prlimit', ['--pid', String(pid), `--nofile=${soft}:${hard}`]);
    }
  });

  it('cannot hold more than its share of connections to its gateway\'s DNS over TCP', async () => {
    const health = watchHealth();
    const dns = await attack(attacker, 'dns', 100);
    await health.stop();
    assert.ok(dns.stillOpen >= 1 && dns.stillOpen <= GATEWAY_PER_MACHINE, `${dns.stillOpen} of 100 DNS connections stayed open`);
  });
});

describe('hostile API requests and unlimited machines', () => {
  it('answers a JSON body nested 4,500 deep with 400 invalid_json', async () => {
    const deep = '['.repeat(4500) + ']'.repeat(4500);
    for (const [path, body] of [
      ['/v1/apps', `{"app_name": "deep", "x": ${deep}}`],
      ['/v1/apps/limits/machines', `{"config": {"image": "hangar/busybox", "metadata": ${deep}}}`],
    ] as const) {
      const r = await http(d, 'POST', path, body);
      assert.equal(r.status, 400, `${path}: ${r.text.slice(0, 300)}`);
      assert.equal(r.body.code, 'invalid_json');
      assert.ok(r.body.hint);
    }
    await healthOnce();
  });

  it("gives a machine created without guest Fly's default (1 shared CPU, 256 MB), so it cannot take the host's memory", async () => {
    const m = await d.client.machines.create('limits', { config: { image: d.nodeImage, init: { cmd: ['sleep', 'inf'] } } });
    assert.deepEqual(m.config.guest, { cpu_kind: 'shared', cpus: 1, memory_mb: 256 });
    // Allocates (and touches) up to 400 MB, then says so: with the default limit it is killed first.
    const hog = "const a = []; for (let i = 0; i < 400; i++) a.push(Buffer.alloc(1 << 20, 1)); console.log('got 400 MB')";
    const r = await d.client.machines.exec('limits', m.id, ['node', '-e', hog], { timeoutS: 60 });
    assert.notEqual(r.exit_code, 0, 'the allocation was stopped');
    assert.doesNotMatch(r.stdout, /got 400 MB/);
    const given = await d.client.machines.create('limits', { config: { image: d.nodeImage, init: { cmd: ['sleep', 'inf'] }, guest: { cpus: 2 } } });
    assert.deepEqual(given.config.guest, { cpu_kind: 'shared', cpus: 2, memory_mb: 512 });
  });
});

describe('after every attack', () => {
  it('the daemon is the same process, answering, and logged no unhandled error', async () => {
    assert.equal(d.process.exitCode, null);
    assert.equal(d.process.signalCode, null);
    await healthOnce();
    assert.doesNotMatch(d.output(), /unhandled rejection|uncaught exception|RangeError/i);
  });
});

function readIfPresent(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
}
