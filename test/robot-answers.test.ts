import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { Machine } from '../src/sdk/index.ts';
import { HANGAR, http, withDaemon, type TestDaemon } from './helpers/daemon.ts';

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
});
after(async () => {
  await mcp?.close();
  await d?.close();
});

async function call(name: string, args: Record<string, unknown>, onprogress?: (message: string) => void): Promise<CallToolResult> {
  return (await mcp.callTool({ name, arguments: args }, undefined, onprogress ? { onprogress: (p) => onprogress(p.message ?? '') } : undefined)) as CallToolResult;
}

const text = (r: CallToolResult) => r.content.map((c) => (c.type === 'text' ? c.text : '')).join('\n');
const port = (url: string) => new URL(url).port;

describe('long calls', () => {
  it('machine_create reports the first build of its image, then answers', async () => {
    const progress: string[] = [];
    const r = await call('machine_create', { app: APP, config: { image: 'hangar/busybox', init: { cmd: ['sleep', 'infinity'] } } }, (m) => progress.push(m));
    assert.ok(!r.isError, text(r));
    id = (r.structuredContent as { machine: { id: string } }).machine.id;
    assert.ok(progress.some((m) => m.startsWith('getting image hangar/busybox')), progress.join('\n'));
    assert.ok(progress.some((m) => m === 'hangar/busybox: ready'), progress.join('\n'));
  });

  it('a quiet command still sends progress while it runs, and long tools say so', async () => {
    const progress: string[] = [];
    const r = await call('machine_exec', { app: APP, id, command: ['sleep', '6'] }, (m) => progress.push(m));
    assert.ok(!r.isError, text(r));
    assert.ok(progress.some((m) => /^machine_exec: still working \(\d+ s\)$/.test(m)), progress.join('\n'));
    const { tools } = await mcp.listTools();
    for (const name of ['machine_create', 'machine_exec', 'checkpoint_create', 'machine_fork', 'machine_update']) {
      assert.match(tools.find((t) => t.name === name)!.description!, /progress notification/, name);
    }
  });
});

describe('text names the daemon it came from', () => {
  it('llms.txt, the addresses route and tool descriptions give the real ports, not the defaults', async () => {
    const [httpPort, httpsPort] = [port(d.proxyUrl), port(d.proxyTlsUrl)];
    const addresses = await d.client.addresses();
    assert.deepEqual(addresses, { api_url: d.url, proxy_url: d.proxyUrl, proxy_tls_url: d.proxyTlsUrl, app_domain: 'localhost' });
    const llms = await (await fetch(`${d.url}/llms.txt`)).text();
    assert.ok(llms.includes(`http://<app>.localhost:${httpPort} and https://<app>.localhost:${httpsPort}`), llms.slice(0, 2000));
    assert.doesNotMatch(llms, /:4380|:4443/);
    const stdio = new Client({ name: 'robot-answers-test', version: '1' });
    await stdio.connect(new StdioClientTransport({ command: HANGAR, args: ['mcp'], env: { HANGAR_DATA_DIR: d.dataDir }, stderr: 'pipe' }));
    try {
      for (const client of [mcp, stdio]) {
        const create = (await client.listTools()).tools.find((t) => t.name === 'machine_create')!;
        assert.ok(create.description!.includes(`http://<app>.localhost:${httpPort}`), create.description);
        assert.doesNotMatch(create.description!, /:4380|:4443/);
      }
    } finally {
      await stdio.close();
    }
  });

  it('a machine with services is answered with its URLs, over REST and MCP', async () => {
    const config = { image: 'hangar/busybox', init: { cmd: ['sleep', 'infinity'] }, services: [{ internal_port: 8080 }] };
    const urls = [`http://${APP}.localhost:${port(d.proxyUrl)}`, `https://${APP}.localhost:${port(d.proxyTlsUrl)}`];
    const rest = await http(d, 'POST', `/v1/apps/${APP}/machines`, { config, skip_launch: true });
    assert.deepEqual(rest.body.urls, urls);
    assert.deepEqual((await http(d, 'GET', `/v1/apps/${APP}/machines/${rest.body.id}`)).body.urls, urls);
    const r = await call('machine_create', { app: APP, config, skip_launch: true });
    assert.deepEqual((r.structuredContent as { urls: string[] }).urls, urls);
    assert.ok(text(r).includes(`serving at ${urls[0]}`), text(r));
    const plain = await http(d, 'GET', `/v1/apps/${APP}/machines/${id}`);
    assert.equal(plain.body.urls, undefined, 'a machine without services has no URL');
  });
});

describe('config fields are used, warned about, or refused', () => {
  const base = { image: 'hangar/busybox', init: { cmd: ['sleep', 'infinity'] } };

  it('REST refuses fields of neither schema, naming the nearest known one', async () => {
    const cmd = await http(d, 'POST', `/v1/apps/${APP}/machines`, { config: { image: 'hangar/busybox', cmd: ['sleep', '60'] } });
    assert.equal(cmd.status, 400);
    assert.equal(cmd.body.code, 'validation_failed');
    assert.match(cmd.body.error, /config\.cmd \(did you mean config\.init\.cmd\?\)/);
    assert.deepEqual(cmd.body.details.issues, [{ path: 'config.cmd', message: 'unknown field', suggestion: 'config.init.cmd' }]);
    const command = await http(d, 'POST', `/v1/apps/${APP}/machines`, { config: { image: 'hangar/busybox', init: { command: ['sleep', '60'] } } });
    assert.match(command.body.error, /config\.init\.command \(did you mean config\.init\.cmd\?\)/);
    const update = await http(d, 'POST', `/v1/apps/${APP}/machines/${id}`, { config: { ...base, guest: { memroy_mb: 512 } } });
    assert.equal(update.status, 400);
    assert.match(update.body.error, /config\.guest\.memroy_mb \(did you mean config\.guest\.memory_mb\?\)/);
    const machines = await d.client.machines.list(APP);
    assert.ok(machines.every((m) => m.config.init?.cmd), 'nothing was created from a refused config');
  });

  it("REST keeps Fly's fields that Hangar does not implement, and says so in warnings", async () => {
    const r = await http(d, 'POST', `/v1/apps/${APP}/machines`, {
      config: { ...base, dns: { nameservers: ['192.0.2.53'] }, init: { ...base.init, swap_size_mb: 512 }, statics: [{ guest_path: '/srv', url_prefix: '/' }] },
      skip_launch: true,
    });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.warnings.map((w: string) => w.split(' ')[0]).sort(), ['config.dns', 'config.init.swap_size_mb', 'config.statics']);
    assert.deepEqual(r.body.config.statics, [{ guest_path: '/srv', url_prefix: '/' }], 'kept, so a Fly client reads back what it sent');
    const clean = await http(d, 'POST', `/v1/apps/${APP}/machines`, { config: base, skip_launch: true });
    assert.equal(clean.body.warnings, undefined);
  });

  it('MCP refuses and warns alike', async () => {
    const bad = await call('machine_create', { app: APP, config: { image: 'hangar/busybox', cmd: ['sleep', '60'] } });
    assert.equal(bad.isError, true);
    assert.match(text(bad), /^validation_failed: .*did you mean config\.init\.cmd\?/);
    const warned = await call('machine_create', { app: APP, config: { ...base, statics: [{ guest_path: '/srv' }] }, skip_launch: true });
    assert.ok(!warned.isError, text(warned));
    assert.match((warned.structuredContent as { warnings: string[] }).warnings[0]!, /^config\.statics /);
    assert.match(text(warned), /warning: config\.statics/);
  });
});

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

describe('small things robots trip on', () => {
  it('a command that is not there exits 127, one that cannot be run 126, as in a shell', async () => {
    const missing = await d.client.machines.exec(APP, id, ['no-such-binary']);
    assert.equal(missing.exit_code, 127);
    assert.match(missing.stderr, /no-such-binary.*not found/);
    assert.equal((await d.client.machines.exec(APP, id, ['/etc/passwd'])).exit_code, 126);
    assert.equal((await d.client.machines.exec(APP, id, ['sh', '-c', 'exit 255'])).exit_code, 255, "a command's own 255 stays");
    const viaMcp = await call('machine_exec', { app: APP, id, command: ['no-such-binary'] });
    assert.equal((viaMcp.structuredContent as { exit_code: number }).exit_code, 127);
  });

  it('file_write says the mode the same way in its text and its data', async () => {
    const r = await call('file_write', { app: APP, id, path: '/tmp/mode.txt', content: 'x', mode: '0640' });
    assert.match(text(r), /\(mode 640\)/);
    assert.equal((r.structuredContent as { mode: string }).mode, '640');
  });

  it('openapi.json names every operation, each once', async () => {
    const doc = (await http(d, 'GET', '/openapi.json')).body as { paths: Record<string, Record<string, { operationId?: string }>> };
    const ops = Object.entries(doc.paths).flatMap(([path, methods]) => Object.entries(methods).map(([method, op]) => ({ at: `${method} ${path}`, id: op.operationId })));
    assert.ok(ops.length > 50);
    assert.deepEqual(ops.filter((o) => !o.id).map((o) => o.at), []);
    assert.equal(new Set(ops.map((o) => o.id)).size, ops.length);
    assert.equal(doc.paths['/v1/apps/{app_name}/machines/{machine_id}/exec']!.post!.operationId, 'postAppMachineExec');
  });
});
