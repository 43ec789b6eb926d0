import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { HANGAR, REPO, http, withDaemon, type TestDaemon } from './helpers/daemon.ts';

// The MCP server as robots' hosts use it: the SDK's own client over Streamable HTTP (/mcp on the
// API port) and over stdio (`hangar mcp`), plus the MCP Inspector's CLI as a third-party client.

const APP = 'mcp';
const TOOLS = [
  'app_list', 'app_create', 'app_update', 'app_usage', 'app_destroy',
  'machine_create', 'machine_list', 'machine_get', 'machine_start', 'machine_stop', 'machine_restart', 'machine_destroy',
  'machine_wait', 'machine_update', 'machine_exec', 'machine_ps', 'machine_logs', 'machine_fork', 'machine_diff', 'machine_commit', 'machine_metrics', 'machine_egress', 'file_watch',
  'checkpoint_create', 'checkpoint_list', 'checkpoint_restore', 'checkpoint_delete',
  'volume_create', 'volume_list', 'volume_extend', 'volume_snapshot', 'volume_delete',
  'session_start', 'session_output', 'session_list', 'session_write', 'session_kill',
  'file_read', 'file_write', 'file_list', 'file_remove',
  'token_create', 'secret_seal', 'secret_public_key', 'secret_set', 'secret_list', 'secret_unset',
];
const INSPECTOR = join(REPO, 'node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js');

let d: TestDaemon & { close(): Promise<void> };
let overHttp: Client;
let overStdio: Client;

async function connectHttp(): Promise<[Client, StreamableHTTPClientTransport]> {
  const client = new Client({ name: 'hangar-test', version: '1' });
  const transport = new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), {
    requestInit: { headers: { authorization: `Bearer ${d.token}` } },
  });
  await client.connect(transport);
  return [client, transport];
}

before(async () => {
  d = await withDaemon();
  [overHttp] = await connectHttp();
  overStdio = new Client({ name: 'hangar-test', version: '1' });
  await overStdio.connect(new StdioClientTransport({ command: HANGAR, args: ['mcp'], env: { HANGAR_DATA_DIR: d.dataDir }, stderr: 'pipe' }));
});
after(async () => {
  await overHttp?.close();
  await overStdio?.close();
  await d?.close();
});

const clients = () => [['http', overHttp], ['stdio', overStdio]] as const;

async function call(client: Client, name: string, args: Record<string, unknown> = {}): Promise<CallToolResult> {
  return (await client.callTool({ name, arguments: args })) as CallToolResult;
}

/** A successful call's structured content; fails the test with the tool's error text otherwise. */
async function ok(client: Client, name: string, args: Record<string, unknown> = {}): Promise<any> {
  const r = await call(client, name, args);
  assert.ok(!r.isError, `${name} failed: ${JSON.stringify(r.content)}`);
  return r.structuredContent;
}

const text = (r: CallToolResult) => r.content.map((c) => (c.type === 'text' ? c.text : '')).join('\n');

async function newMachine(client: Client, extra: Record<string, unknown> = {}): Promise<string> {
  const { machine } = await ok(client, 'machine_create', { app: APP, config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } }, ...extra });
  return machine.id;
}

describe('MCP server', () => {
  it('lists every tool, each with a description and an input schema, over both transports', async () => {
    for (const [via, client] of clients()) {
      const { tools } = await client.listTools();
      assert.deepEqual(tools.map((t) => t.name).sort(), [...TOOLS].sort(), via);
      for (const t of tools) {
        assert.ok(t.description && t.description.length > 20, `${via} ${t.name} description`);
        assert.equal(t.inputSchema.type, 'object', `${via} ${t.name} schema`);
      }
      const create = tools.find((t) => t.name === 'machine_create')!;
      assert.deepEqual(create.inputSchema.required, ['app', 'config']);
      assert.ok((create.inputSchema.properties as any).config.properties.image, 'config is the MachineConfig schema');
    }
  });

  it('creates an app and a machine over one transport and sees them over the other', async () => {
    const { app } = await ok(overStdio, 'app_create', { app: APP });
    assert.equal(app.name, APP);
    const id = await newMachine(overHttp);
    const { machine } = await ok(overStdio, 'machine_get', { app: APP, id });
    assert.equal(machine.state, 'started');
    const { apps } = await ok(overHttp, 'app_list');
    assert.equal(apps.find((a: { name: string }) => a.name === APP).machine_count, 1);
    const updated = await ok(overHttp, 'app_update', { app: APP, nested_namespaces: true });
    assert.equal(updated.app.nested_namespaces, true);
    assert.equal((await ok(overStdio, 'app_update', { app: APP, nested_namespaces: false })).app.nested_namespaces, false);
  });

  it('creates, lists, extends, snapshots and deletes a volume over both transports', async () => {
    const { volume } = await ok(overHttp, 'volume_create', { app: APP, name: 'mcpdata', size_gb: 1 });
    assert.match(volume.id, /^vol_/);
    const { volumes } = await ok(overStdio, 'volume_list', { app: APP });
    assert.ok(volumes.some((v: { id: string }) => v.id === volume.id));
    assert.equal((await ok(overStdio, 'volume_extend', { app: APP, id: volume.id, size_gb: 2 })).volume.size_gb, 2);
    assert.match((await ok(overHttp, 'volume_snapshot', { app: APP, id: volume.id })).snapshot.id, /^vs_/);
    const shrink = await call(overHttp, 'volume_extend', { app: APP, id: volume.id, size_gb: 1 });
    assert.match(text(shrink), /^volume_cannot_shrink: .+\nhint: .+/);
    assert.equal((await ok(overStdio, 'volume_delete', { app: APP, id: volume.id })).volume.state, 'destroyed');
  });

  it('returns a failed call as isError with the code and the hint', async () => {
    for (const [via, client] of clients()) {
      const r = await call(client, 'machine_start', { app: APP, id: '0123456789abcd' });
      assert.equal(r.isError, true, via);
      assert.match(text(r), /^machine_not_found: .+\nhint: .+/, via);
      assert.equal((r.structuredContent as { code: string }).code, 'machine_not_found');
    }
    const bad = await call(overHttp, 'machine_wait', { app: APP, id: 'x', state: 'sideways' });
    assert.equal(bad.isError, true, 'input validation failures are tool errors too');
  });

  it('says what to do next as tool calls, never as REST routes, and which app a machine is in', async () => {
    const id = await newMachine(overHttp);
    await ok(overHttp, 'machine_stop', { app: APP, id });
    await ok(overHttp, 'machine_wait', { app: APP, id, state: 'stopped' });
    const stopped = await call(overHttp, 'machine_ps', { app: APP, id });
    assert.equal(stopped.isError, true);
    assert.match(text(stopped), new RegExp(`\nhint: call machine_start \{"app":"${APP}","id":"${id}"\}$`));
    await ok(overHttp, 'app_create', { app: 'mcp-other' });
    const elsewhere = await call(overHttp, 'machine_get', { app: 'mcp-other', id });
    assert.match(text(elsewhere), new RegExp(`it is in app ${APP}: call again with app "${APP}"`));
    const missing = await call(overHttp, 'machine_start', { app: APP, id: '0123456789abcd' });
    assert.match(text(missing), new RegExp(`hint: call machine_list \{"app":"${APP}"\}`));
    for (const r of [stopped, elsewhere, missing]) assert.doesNotMatch(text(r), /POST|GET|\/v1\//);
    await ok(overHttp, 'machine_destroy', { app: APP, id, force: true });
    await ok(overHttp, 'app_destroy', { app: 'mcp-other' });
  });

  it('streams exec output as progress notifications before the result', async () => {
    const id = await newMachine(overHttp);
    for (const [via, client] of clients()) {
      const events: string[] = [];
      const r = (await client.callTool(
        { name: 'machine_exec', arguments: { app: APP, id, command: ['sh', '-c', 'echo one; sleep 0.4; echo two; sleep 0.4; echo three'] } },
        undefined,
        { onprogress: (p) => void events.push(`progress:${p.message}`) },
      )) as CallToolResult;
      events.push('result');
      assert.ok(!r.isError, text(r));
      assert.deepEqual(r.structuredContent, { exit_code: 0, stdout: 'one\ntwo\nthree\n', stderr: '', stdout_truncated_bytes: 0, stderr_truncated_bytes: 0, timed_out: false });
      assert.ok(events.indexOf('result') >= 2, `${via}: ${events.join(' ')}`);
      assert.ok(events.includes('progress:one\n'), `${via}: ${events.join(' ')}`);
    }
  });

  it('kills the command when the exec call is cancelled', async () => {
    const id = await newMachine(overHttp);
    for (const [via, client] of clients()) {
      const abort = new AbortController();
      const running = client.callTool({ name: 'machine_exec', arguments: { app: APP, id, command: ['sh', '-c', 'echo go; exec sleep 77'] } }, undefined, {
        signal: abort.signal,
        onprogress: () => abort.abort(),
      });
      await assert.rejects(running, via);
      let ps = '';
      for (let i = 0; i < 150; i++) {
        ps = (await ok(overHttp, 'machine_exec', { app: APP, id, command: ['ps'] })).stdout;
        if (!ps.includes('sleep 77')) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.doesNotMatch(ps, /sleep 77/, `${via}: the cancelled command still runs`);
    }
  });

  it('writes a file into a stopped machine, which sees it once started', async () => {
    const id = await newMachine(overStdio);
    await ok(overStdio, 'machine_stop', { app: APP, id, timeout: '2s' });
    const written = await ok(overStdio, 'file_write', { app: APP, id, path: '/srv/hello.txt', content: 'hello from mcp\n', mode: '0640' });
    assert.deepEqual([written.size, written.mode], [15, '640']);
    await ok(overHttp, 'file_write', { app: APP, id, path: '/srv/blob', content: Buffer.from([0, 1, 2, 255]).toString('base64'), encoding: 'base64' });
    await ok(overStdio, 'machine_start', { app: APP, id });

    const read = await ok(overHttp, 'file_read', { app: APP, id, path: '/srv/hello.txt' });
    assert.deepEqual([read.content, read.encoding, read.eof], ['hello from mcp\n', 'utf8', true]);
    const part = await ok(overHttp, 'file_read', { app: APP, id, path: '/srv/hello.txt', offset: 6, length: 4 });
    assert.deepEqual([part.content, part.next_offset, part.eof], ['from', 10, false]);
    const blob = await ok(overStdio, 'file_read', { app: APP, id, path: '/srv/blob' });
    assert.deepEqual([blob.encoding, blob.content], ['base64', 'AAEC/w==']);
    const { entries } = await ok(overStdio, 'file_list', { app: APP, id, path: '/srv' });
    assert.deepEqual(entries.map((e: { name: string }) => e.name).sort(), ['blob', 'hello.txt']);

    const seen = await ok(overHttp, 'machine_exec', { app: APP, id, command: ['cat', '/srv/hello.txt'] });
    assert.equal(seen.stdout, 'hello from mcp\n');
    await ok(overHttp, 'file_remove', { app: APP, id, path: '/srv', recursive: true });
    const gone = await call(overHttp, 'file_read', { app: APP, id, path: '/srv/hello.txt' });
    assert.match(text(gone), /^file_not_found: /);
  });

  it('reads recent logs and follows new lines for a bounded time', async () => {
    const id = await newMachine(overHttp, {
      config: { image: 'hangar/busybox', init: { cmd: ['sh', '-c', 'echo booted; sleep 1; echo later; exec sleep 3600'] } },
    });
    const followed: string[] = [];
    const r = (await overStdio.callTool({ name: 'machine_logs', arguments: { app: APP, id, follow_s: 3 } }, undefined, {
      onprogress: (p) => void followed.push(p.message ?? ''),
    })) as CallToolResult;
    assert.ok(!r.isError, text(r));
    assert.deepEqual((r.structuredContent as { lines: string[] }).lines, ['booted', 'later']);
    assert.deepEqual(followed, ['booted', 'later']);
    const recent = await ok(overHttp, 'machine_logs', { app: APP, id, lines: 1 });
    assert.deepEqual(recent.lines, ['later']);
  });

  it("lists machines' config and logs as resources and reads a config", async () => {
    const id = await newMachine(overHttp, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] }, env: { MARK: 'resource' } } });
    for (const [via, client] of clients()) {
      const { resources } = await client.listResources();
      const uris = resources.map((r) => r.uri);
      assert.ok(uris.includes(`hangar://apps/${APP}/machines/${id}/config`), via);
      assert.ok(uris.includes(`hangar://apps/${APP}/machines/${id}/logs`), via);
      const { resourceTemplates } = await client.listResourceTemplates();
      assert.deepEqual(resourceTemplates.map((t) => t.uriTemplate).sort(), [
        'hangar://apps/{app}/machines/{id}/config',
        'hangar://apps/{app}/machines/{id}/egress',
        'hangar://apps/{app}/machines/{id}/files{+path}',
        'hangar://apps/{app}/machines/{id}/logs',
      ]);
      const { contents } = await client.readResource({ uri: `hangar://apps/${APP}/machines/${id}/config` });
      const config = JSON.parse((contents[0] as { text: string }).text);
      assert.deepEqual([config.image, config.env.MARK], ['hangar/busybox', 'resource']);
    }
    await assert.rejects(overHttp.readResource({ uri: `hangar://apps/${APP}/machines/0123456789abcd/config` }), /machine_not_found/);
  });

  it('answers /mcp without a token with 401, and ends a session on DELETE', async () => {
    const init = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '1' } } };
    const res = await fetch(`${d.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify(init),
    });
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { code: string }).code, 'unauthorized');

    const [client, transport] = await connectHttp();
    const sessionId = transport.sessionId!;
    await ok(client, 'app_list');
    await transport.terminateSession();
    await client.close();
    const ended = await http(d, 'POST', '/mcp', { jsonrpc: '2.0', id: 2, method: 'tools/list' }, {
      'mcp-session-id': sessionId,
      accept: 'application/json, text/event-stream',
    });
    assert.equal(ended.status, 404);
  });

  it('works with the MCP Inspector CLI over stdio and over HTTP', async () => {
    // The inspector keeps state under $HOME; give it one inside the data dir, which cleanup removes.
    const home = join(d.dataDir, 'inspector-home');
    await mkdir(home, { recursive: true });
    const inspector = (args: string[]) =>
      promisify(execFile)(process.execPath, [INSPECTOR, '--cli', ...args], { cwd: REPO, env: { ...process.env, HOME: home }, timeout: 60_000 });

    const listed = JSON.parse((await inspector(['-e', `HANGAR_DATA_DIR=${d.dataDir}`, '--method', 'tools/list', HANGAR, 'mcp'])).stdout);
    assert.deepEqual(listed.tools.map((t: { name: string }) => t.name).sort(), [...TOOLS].sort());

    const called = JSON.parse((await inspector([`${d.url}/mcp`, '--header', `Authorization: Bearer ${d.token}`, '--method', 'tools/call', '--tool-name', 'app_list'])).stdout);
    assert.ok(called.structuredContent.apps.some((a: { name: string }) => a.name === APP));

    // --tool-arg takes every key=value after it, so the server command goes first here.
    const viaStdio = JSON.parse((await inspector([HANGAR, 'mcp', '-e', `HANGAR_DATA_DIR=${d.dataDir}`, '--method', 'tools/call', '--tool-name', 'machine_list', '--tool-arg', `app=${APP}`])).stdout);
    assert.ok(viaStdio.structuredContent.machines.length >= 1);
  });
});
