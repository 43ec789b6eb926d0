import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { LookupFunction } from 'node:net';
import { Agent, fetch as undiciFetch } from 'undici';
import WebSocket from 'ws';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { FIXTURE_PORT, nodeServerConfig, waitForPort, withNodeDaemon, type NodeDaemon } from './helpers/node-image.ts';

// Long-lived streams through the edge proxy, with real Node servers in the machines: WebSocket
// frames both ways over HTTP and HTTPS, an MCP session over Streamable HTTP pinned to one of three
// machines, and autostop: idle machines stop (never below min_machines_running), an open stream
// keeps its machine up, and the next request wakes one again.

let d: NodeDaemon;
let ca = '';

// Every `<app>.localhost` is this host: clients then send the Host header a browser would.
const toLoopback: LookupFunction = (_host, opts, cb) => {
  if (opts.all) (cb as unknown as (e: null, a: Array<{ address: string; family: number }>) => void)(null, [{ address: '127.0.0.1', family: 4 }]);
  else cb(null, '127.0.0.1', 4);
};
const dispatcher = new Agent({ connect: { lookup: toLoopback } });

before(async () => {
  d = await withNodeDaemon();
  ca = await (await fetch(`${d.url}/v1/tls/ca.pem`)).text();
});
after(async () => {
  await dispatcher.close();
  await d?.close();
});

const port = (url: string) => new URL(url).port;

async function loadOf(app: string, machine: string): Promise<number> {
  const text = await (await fetch(`${d.url}/metrics`, { headers: { authorization: `Bearer ${d.token}` } })).text();
  const line = text.split('\n').find((l) => l.startsWith(`hangar_proxy_machine_load{app="${app}",machine="${machine}"}`));
  return Number(line?.split(' ')[1] ?? NaN);
}

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Opens a WebSocket, collecting what arrives; resolves once open. */
async function openSocket(url: string, opts: WebSocket.ClientOptions = {}): Promise<{ ws: WebSocket; messages: Array<{ data: Buffer; binary: boolean }> }> {
  const ws = new WebSocket(url, { lookup: toLoopback, ...opts });
  const messages: Array<{ data: Buffer; binary: boolean }> = [];
  ws.on('message', (data, binary) => messages.push({ data: data as Buffer, binary }));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade answered ${res.statusCode}`)));
  });
  return { ws, messages };
}

describe('streams through the edge proxy', () => {
  it('carries WebSocket frames both ways, over HTTP and HTTPS, and counts an open socket as load', async () => {
    const app = 'wsecho';
    await d.client.apps.create(app);
    const m = await d.client.machines.create(app, { config: nodeServerConfig(d.nodeImage, 'ws-echo') });
    await waitForPort(m.private_ip, FIXTURE_PORT);

    const { ws, messages } = await openSocket(`ws://${app}.localhost:${port(d.proxyUrl)}/chat?room=1`);
    await until('the hello', () => messages.length >= 1);
    const hello = JSON.parse(messages[0]!.data.toString());
    assert.equal(hello.machine, m.id);
    assert.equal(hello.path, '/chat?room=1');
    assert.equal(hello['x-forwarded-proto'], 'http');
    assert.equal(hello['x-forwarded-host'], `${app}.localhost:${port(d.proxyUrl)}`);

    ws.send('text frame');
    const big = Buffer.alloc(1024 * 1024, 7);
    ws.send(big);
    await until('both echoes', () => messages.length >= 3);
    assert.equal(messages[1]!.data.toString(), 'text frame');
    assert.equal(messages[1]!.binary, false);
    assert.equal(messages[2]!.binary, true);
    assert.ok(messages[2]!.data.equals(big), 'a 1 MiB binary frame comes back intact');
    assert.equal(await loadOf(app, m.id), 1);
    ws.close(1000);
    await until('the socket to close and its load to go', async () => (await loadOf(app, m.id)) === 0);

    const secure = await openSocket(`wss://${app}.localhost:${port(d.proxyTlsUrl)}/tls`, { ca });
    await until('the hello over TLS', () => secure.messages.length >= 1);
    assert.equal(JSON.parse(secure.messages[0]!.data.toString())['x-forwarded-proto'], 'https');
    secure.ws.send('over tls');
    await until('the echo over TLS', () => secure.messages.length >= 2);
    assert.equal(secure.messages[1]!.data.toString(), 'over tls');
    secure.ws.close(1000);
  });

  it('keeps an MCP session on the machine fly-force-instance-id names, out of three', async () => {
    const app = 'mcpapp';
    await d.client.apps.create(app);
    const machines = await Promise.all([0, 1, 2].map(() => d.client.machines.create(app, { config: nodeServerConfig(d.nodeImage, 'mcp') })));
    await Promise.all(machines.map((m) => waitForPort(m.private_ip, FIXTURE_PORT)));

    const session = async (pinned: string) => {
      const transport = new StreamableHTTPClientTransport(new URL(`http://${app}.localhost:${port(d.proxyUrl)}/mcp`), {
        fetch: ((url: string | URL, init?: RequestInit) =>
          undiciFetch(url, { ...(init as object), dispatcher, headers: { ...Object.fromEntries(new Headers(init?.headers)), 'fly-force-instance-id': pinned } })) as typeof fetch,
      });
      const client = new Client({ name: 'edge-test', version: '1.0.0' });
      await client.connect(transport);
      return client;
    };
    const [a, b] = await Promise.all([session(machines[1]!.id), session(machines[2]!.id)]);
    for (let i = 1; i <= 3; i++) {
      const [ra, rb] = await Promise.all([a.callTool({ name: 'count' }), b.callTool({ name: 'count' })]);
      assert.deepEqual({ calls: (ra.structuredContent as { calls: number }).calls, machine: (ra.structuredContent as { machine: string }).machine }, { calls: i, machine: machines[1]!.id });
      assert.deepEqual({ calls: (rb.structuredContent as { calls: number }).calls, machine: (rb.structuredContent as { machine: string }).machine }, { calls: i, machine: machines[2]!.id });
    }
    const echoed = await a.callTool({ name: 'echo', arguments: { text: 'through the proxy' } });
    assert.deepEqual(echoed.content, [{ type: 'text', text: 'through the proxy' }]);
    await Promise.all([a.close(), b.close()]);
  });

  it('autostops idle machines down to min_machines_running, holds one with an open stream, and wakes one on the next request', async () => {
    const app = 'sleepy';
    await d.client.apps.create(app, { settings: { autostop_idle: '2s' } });
    const config = nodeServerConfig(d.nodeImage, 'sse');
    const service = { ...config.services![0], autostop: 'stop', min_machines_running: 1 };
    const machines = await Promise.all([0, 1, 2].map(() => d.client.machines.create(app, { config: { ...config, services: [service] } as never })));
    await Promise.all(machines.map((m) => waitForPort(m.private_ip, FIXTURE_PORT)));

    // A stream to one machine for ~5 s, well past the idle period.
    const streamed = await undiciFetch(`http://${app}.localhost:${port(d.proxyUrl)}/events?every_ms=500&count=10`, {
      dispatcher,
      headers: { 'fly-force-instance-id': machines[0]!.id },
    });
    assert.equal(streamed.status, 200);
    const body = streamed.text();
    const states = async () => Promise.all(machines.map(async (m) => (await d.client.machines.get(app, m.id)).state));
    await until('the two idle machines to be stopped', async () => (await states()).filter((s) => s === 'stopped').length === 2, 8_000);
    assert.equal((await states())[0], 'started', 'the machine with an open stream is kept');
    assert.match(await body, /event: tick/);

    // Stream over: it may go too, but min_machines_running keeps one started.
    await new Promise((r) => setTimeout(r, 3_500));
    assert.deepEqual((await states()).filter((s) => s === 'started').length, 1);

    // Every machine stopped by hand (min_machines_running only holds autostop back), then a request wakes one.
    for (const m of machines) await d.client.machines.stop(app, m.id).catch(() => undefined);
    await until('all stopped', async () => (await states()).every((s) => s === 'stopped'));
    const woke = await undiciFetch(`http://${app}.localhost:${port(d.proxyUrl)}/events?every_ms=10&count=1`, { dispatcher });
    assert.equal(woke.status, 200);
    await woke.text();
    assert.equal((await states()).filter((s) => s === 'started').length, 1);

    const text = await (await fetch(`${d.url}/metrics`, { headers: { authorization: `Bearer ${d.token}` } })).text();
    const count = (name: string) => text.split('\n').filter((l) => l.startsWith(`${name}{app="${app}"`)).reduce((sum, l) => sum + Number(l.split(' ')[1]), 0);
    assert.ok(count('hangar_proxy_autostops_total') >= 2, 'autostops are counted');
    assert.equal(count('hangar_proxy_wakes_total'), 1);
  });
});
