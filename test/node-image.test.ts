import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { FIXTURE_PORT, FIXTURE_SERVERS, nodeServerConfig, waitForPort, withNodeDaemon, type FixtureServer, type NodeDaemon } from './helpers/node-image.ts';

// The Node test image boots, and each fixture server in it answers on the machine's private
// address, straight from the host (no proxy in between): what the proxy tests build on.

const APP = 'node-image';
let d: NodeDaemon;
const base = {} as Record<FixtureServer, string>;

before(async () => {
  d = await withNodeDaemon();
  await d.client.apps.create(APP);
  await Promise.all(FIXTURE_SERVERS.map(async (server) => {
    const m = await d.client.machines.create(APP, { config: nodeServerConfig(d.nodeImage, server) });
    await waitForPort(m.private_ip, FIXTURE_PORT);
    base[server] = `http://${m.private_ip}:${FIXTURE_PORT}`;
  }));
});
after(async () => {
  await d?.close();
});

describe('node test image', () => {
  it('http: a 100-byte body on a kept-alive connection; /headers reports what it got', async () => {
    const res = await fetch(`${base.http}/anything`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('connection'), 'keep-alive');
    assert.equal((await res.arrayBuffer()).byteLength, 100);
    const echoed = (await (await fetch(`${base.http}/headers`, { headers: { 'x-forwarded-for': '203.0.113.9' } })).json()) as { machine: string; headers: Record<string, string> };
    assert.equal(echoed.headers['x-forwarded-for'], '203.0.113.9');
    assert.match(echoed.machine, /^[0-9a-f]{14}$/);
  });

  it('sse: a headers event, then ticks as they are written, then the end', async () => {
    const res = await fetch(`${base.sse}/events?every_ms=30&count=3`, { headers: { 'x-forwarded-proto': 'https' } });
    assert.equal(res.headers.get('content-type'), 'text/event-stream');
    const events = (await res.text()).trim().split('\n\n').map((block) => {
      const field = (name: string) => block.split('\n').find((l) => l.startsWith(`${name}: `))?.slice(name.length + 2);
      return { event: field('event'), data: JSON.parse(field('data') ?? 'null') as Record<string, unknown> };
    });
    assert.deepEqual(events.map((e) => e.event), ['headers', 'tick', 'tick', 'tick']);
    assert.equal(events[0]!.data['x-forwarded-proto'], 'https');
    assert.deepEqual(events.slice(1).map((e) => e.data.n), [1, 2, 3]);
  });

  it('ws-echo: a hello, then text and binary messages back as sent', async () => {
    const ws = new WebSocket(`${base['ws-echo'].replace('http', 'ws')}/echo`);
    ws.binaryType = 'arraybuffer';
    const received: unknown[] = [];
    const done = new Promise<void>((resolve, reject) => {
      ws.onmessage = (e) => {
        received.push(e.data);
        if (received.length === 3) resolve();
      };
      ws.onerror = () => reject(new Error('websocket error'));
    });
    await new Promise((resolve) => (ws.onopen = resolve));
    ws.send('hello, echo');
    ws.send(new Uint8Array([1, 2, 3]));
    await done;
    ws.close();
    const hello = JSON.parse(received[0] as string) as { hello: boolean; path: string };
    assert.deepEqual([hello.hello, hello.path], [true, '/echo']);
    assert.equal(received[1], 'hello, echo');
    assert.deepEqual([...new Uint8Array(received[2] as ArrayBuffer)], [1, 2, 3]);
  });

  it('mcp: tools over Streamable HTTP, with state kept per session', async () => {
    const client = new Client({ name: 'node-image-test', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(`${base.mcp}/mcp`));
    await client.connect(transport);
    try {
      assert.deepEqual((await client.listTools()).tools.map((t) => t.name).sort(), ['count', 'echo']);
      const echo = await client.callTool({ name: 'echo', arguments: { text: 'ping' } });
      assert.deepEqual(echo.content, [{ type: 'text', text: 'ping' }]);
      await client.callTool({ name: 'count', arguments: {} });
      const second = await client.callTool({ name: 'count', arguments: {} });
      assert.deepEqual(second.structuredContent, { calls: 2, session: transport.sessionId, machine: (second.structuredContent as { machine: string }).machine });
      const stranger = await fetch(`${base.mcp}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-session-id': 'not-a-session' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
      });
      assert.equal(stranger.status, 404, 'a session lives on one machine only');
    } finally {
      await client.close();
    }
  });
});
