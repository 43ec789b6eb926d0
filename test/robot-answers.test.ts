import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { Machine } from '../src/sdk/index.ts';
import { http, withDaemon, type TestDaemon } from './helpers/daemon.ts';

// What a robot reads back: answers bounded in size, progress on long calls, text that names the
// daemon's real addresses, config fields that are refused or warned about rather than dropped.

const APP = 'answers';
const SEQ_BYTES = 14_888_896; // `seq 1 2000000 | wc -c`

let d: TestDaemon & { close(): Promise<void> };
let mcp: Client;
let id: string;

before(async () => {
  d = await withDaemon();
  mcp = new Client({ name: 'robot-answers-test', version: '1' });
  await mcp.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${d.token}` } } }));
  await d.client.apps.create(APP);
  id = (await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', 'infinity'] } } })).id;
});
after(async () => {
  await mcp?.close();
  await d?.close();
});

async function call(name: string, args: Record<string, unknown>, onprogress?: (message: string) => void): Promise<CallToolResult> {
  return (await mcp.callTool({ name, arguments: args }, undefined, onprogress ? { onprogress: (p) => onprogress(p.message ?? '') } : undefined)) as CallToolResult;
}

const text = (r: CallToolResult) => r.content.map((c) => (c.type === 'text' ? c.text : '')).join('\n');

describe('bounded answers', () => {
  it('REST exec keeps the head and tail of big output within 1 MiB and says how much it left out', async () => {
    const r = await http(d, 'POST', `/v1/apps/${APP}/machines/${id}/exec`, { command: ['seq', '1', '2000000'], timeout: 60 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.exit_code, 0);
    assert.equal(r.body.stdout_truncated_bytes, SEQ_BYTES - 1024 * 1024);
    assert.equal(r.body.stderr_truncated_bytes, 0);
    assert.ok(r.body.stdout.length < 1024 * 1024 + 200, `${r.body.stdout.length} characters`);
    assert.ok(r.body.stdout.startsWith('1\n2\n3\n'));
    assert.ok(r.body.stdout.endsWith('1999999\n2000000\n'));
    assert.match(r.body.stdout, /\n\[hangar: 13840320 bytes of output left out here; .+\]\n/);

    const small = await http(d, 'POST', `/v1/apps/${APP}/machines/${id}/exec`, { command: ['sh', '-c', 'seq 1 1000; echo oops >&2'], max_output_bytes: 2048 });
    assert.equal(small.body.stderr, 'oops\n', 'a small stream keeps all of itself');
    assert.equal(small.body.stdout_truncated_bytes, 3893 - (2048 - 5));
    const whole = await http(d, 'POST', `/v1/apps/${APP}/machines/${id}/exec`, { command: ['echo', 'hi'] });
    assert.deepEqual([whole.body.stdout, whole.body.stdout_truncated_bytes], ['hi\n', 0]);
    const refused = await http(d, 'POST', `/v1/apps/${APP}/machines/${id}/exec`, { command: ['true'], max_output_bytes: 1e9 });
    assert.equal(refused.body.code, 'validation_failed');
  });

  it('the SDK bounds buffered output too, buffered or streamed', async () => {
    const buffered = await d.client.machines.exec(APP, id, ['seq', '1', '2000000'], { maxOutputBytes: 4096, timeoutS: 60 });
    assert.equal(buffered.stdout_truncated_bytes, SEQ_BYTES - 4096);
    const m = new Machine(d.client, APP, await d.client.machines.get(APP, id));
    const streamed = await m.exec(['seq', '1', '2000000']).wait();
    assert.equal(streamed.stdoutTruncatedBytes, SEQ_BYTES - 1024 * 1024);
    assert.ok(streamed.stdout.startsWith('1\n2\n') && streamed.stdout.endsWith('\n2000000\n'));
  });

  it('MCP machine_exec answers a flood in tens of KB, with the gap marked, and streams bounded progress', async () => {
    let progressBytes = 0;
    const r = await call('machine_exec', { app: APP, id, command: ['seq', '1', '2000000'] }, (m) => (progressBytes += m.length));
    assert.ok(!r.isError, text(r));
    const size = JSON.stringify(r).length;
    assert.ok(size < 100_000, `the tool result is ${size} bytes`);
    assert.ok(progressBytes < 100_000, `progress carried ${progressBytes} bytes`);
    const data = r.structuredContent as { stdout: string; stdout_truncated_bytes: number; exit_code: number };
    assert.equal(data.exit_code, 0);
    assert.equal(data.stdout_truncated_bytes, SEQ_BYTES - 32 * 1024);
    assert.match(text(r), /^1\n2\n3\n/m);
    assert.match(text(r), /bytes of output left out here/);
    assert.match(text(r), /\n2000000\n/);

    const more = await call('machine_exec', { app: APP, id, command: ['seq', '1', '2000000'], max_output_bytes: 200_000 });
    assert.equal((more.structuredContent as { stdout_truncated_bytes: number }).stdout_truncated_bytes, SEQ_BYTES - 200_000);
  });
});
