import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { HANGAR, cleanupDataDir, http, makeDataDir, startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { attenuate, inspectToken, type Caveat } from '../src/sdk/index.ts';
import { encodeToken } from '../src/protocol/token-format.ts';

// Tokens a robot can narrow, driven as a robot would: minted over REST, narrowed offline with the
// SDK, used over REST, the CLI, MCP and from inside a machine through _api.internal.

const A = 'tok-a';
const B = 'tok-b';
const BUSYBOX = { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] } };

let dataDir: string;
let d: TestDaemon;
let x: string;
let y: string;
let b: string;

const as = (token: string) => ({ url: d.url, token });

async function mint(caveats: Caveat[]): Promise<string> {
  const res = await http(d, 'POST', '/v1/tokens', { caveats });
  assert.equal(res.status, 201, res.text);
  return res.body.token;
}

function assertDenied(res: { status: number; body: any; text: string }, caveat: Caveat['type']): void {
  assert.equal(res.status, 403, res.text);
  assert.equal(res.body.code, 'token_denied');
  assert.equal(res.body.details.caveat.type, caveat, res.text);
  assert.match(res.body.error, new RegExp(`${caveat} caveat`));
}

before(async () => {
  dataDir = await makeDataDir();
  d = await startDaemon(dataDir);
  await d.client.apps.create(A);
  await d.client.apps.create(B);
  [x, y, b] = await Promise.all([
    d.client.machines.create(A, { config: BUSYBOX }).then((m) => m.id),
    d.client.machines.create(A, { config: BUSYBOX }).then((m) => m.id),
    d.client.machines.create(B, { config: BUSYBOX }).then((m) => m.id),
  ]);
});

after(async () => {
  await d?.kill().catch(() => undefined);
  if (dataDir) await cleanupDataDir(dataDir);
});

describe('narrowed tokens', () => {
  it('keep the root key in the data dir, mode 600', () => {
    assert.equal(statSync(join(dataDir, 'token-key')).mode & 0o777, 0o600);
  });

  it('limit a token to app A: it lists and creates there, and gets 403 token_denied naming the caveat in app B', async () => {
    const t = await mint([{ type: 'apps', apps: { [A]: ['read', 'write', 'exec', 'control', 'delete'] } }]);
    const listA = await http(as(t), 'GET', `/v1/apps/${A}/machines`);
    assert.equal(listA.status, 200, listA.text);
    assert.equal(listA.body.length, 2);
    assertDenied(await http(as(t), 'GET', `/v1/apps/${B}/machines`), 'apps');
    assertDenied(await http(as(t), 'POST', `/v1/apps/${B}/machines/${b}/stop`), 'apps');
    assertDenied(await http(as(t), 'POST', `/v1/apps/${B}/machines`, { config: BUSYBOX, skip_launch: true }), 'apps');
    assertDenied(await http(as(t), 'POST', '/v1/apps', { app_name: 'tok-c' }), 'apps');
    const created = await http(as(t), 'POST', `/v1/apps/${A}/machines`, { config: BUSYBOX, skip_launch: true });
    assert.equal(created.status, 200, created.text);
    assert.equal((await http(as(t), 'DELETE', `/v1/apps/${A}/machines/${created.body.id}`)).status, 200);
    const apps = await http(as(t), 'GET', '/v1/apps');
    assert.deepEqual(apps.body.apps.map((a: { name: string }) => a.name), [A], 'the app list shows the token\'s apps only');
    assertDenied(await http(as(t), 'GET', '/metrics'), 'apps');
    assertDenied(await http(as(t), 'POST', '/v1/images/pull', { image: 'hangar/busybox' }), 'apps');
  });

  it('let a read-only token read but not start, stop or exec', async () => {
    const t = await mint([{ type: 'apps', apps: { [A]: ['read'] } }]);
    assert.equal((await http(as(t), 'GET', `/v1/apps/${A}/machines/${x}`)).status, 200);
    const start = await http(as(t), 'POST', `/v1/apps/${A}/machines/${x}/start`);
    assertDenied(start, 'apps');
    assert.match(start.body.error, /allows read on app tok-a, not control/);
    assertDenied(await http(as(t), 'POST', `/v1/apps/${A}/machines/${x}/exec`, { command: ['true'] }), 'apps');
  });

  it('let an exec-prefix caveat run `ls` but not `rm`, over REST, NDJSON, sessions and the WebSocket', async () => {
    const t = await mint([{ type: 'apps', apps: { [A]: ['read', 'exec'] } }, { type: 'commands', commands: [{ argv: ['ls'], prefix: true }] }]);
    const ls = await http(as(t), 'POST', `/v1/apps/${A}/machines/${x}/exec`, { command: ['ls', '/'] });
    assert.equal(ls.status, 200, ls.text);
    assert.match(ls.body.stdout, /bin/);
    assertDenied(await http(as(t), 'POST', `/v1/apps/${A}/machines/${x}/exec`, { command: ['rm', '-rf', '/tmp'] }), 'commands');
    assertDenied(await http(as(t), 'POST', `/v1/apps/${A}/machines/${x}/exec`, { cmd: 'rm -rf /tmp' }), 'commands');
    assertDenied(await http(as(t), 'POST', `/v1/apps/${A}/machines/${x}/exec`, { command: ['lsblk'] }), 'commands');
    assertDenied(await http(as(t), 'POST', `/v1/apps/${A}/machines/${x}/exec/stream`, { command: ['rm', '/x'] }), 'commands');
    assertDenied(await http(as(t), 'POST', `/v1/apps/${A}/machines/${x}/sessions`, { command: ['sh'] }), 'commands');
    // Typing into a shell someone else started would be running any command.
    const shell = await http(d, 'POST', `/v1/apps/${A}/machines/${x}/sessions`, { command: ['sh'], stdin: true });
    assert.equal(shell.status, 201, shell.text);
    assertDenied(await http(as(t), 'POST', `/v1/apps/${A}/machines/${x}/sessions/${shell.body.id}/input`, { data: 'rm -rf /\n' }), 'commands');
    assertDenied(await http(as(t), 'POST', `/v1/apps/${A}/machines/${x}/sessions/nonesuch/input`, { data: 'x' }), 'commands');
    await http(d, 'POST', `/v1/apps/${A}/machines/${x}/sessions/${shell.body.id}/kill`, {});
    const ws = new WebSocket(`${d.url.replace('http', 'ws')}/v1/apps/${A}/machines/${x}/exec/ws`, { headers: { authorization: `Bearer ${t}` } } as never);
    const messages: any[] = [];
    ws.onmessage = (e) => messages.push(JSON.parse(String(e.data)));
    await new Promise((r) => (ws.onopen = r));
    ws.send(JSON.stringify({ type: 'start', command: ['rm', '-rf', '/'] }));
    await new Promise((r) => (ws.onclose = r));
    assert.equal(messages[0]?.code, 'token_denied', JSON.stringify(messages));
  });

  it('refuse an expired token, and one not yet valid', async () => {
    const now = Math.floor(Date.now() / 1000);
    const expired = await mint([{ type: 'validity', not_after: now - 10 }]);
    const res = await http(as(expired), 'GET', '/v1/apps');
    assertDenied(res, 'validity');
    assert.match(res.body.error, /expired/);
    assertDenied(await http(as(await mint([{ type: 'validity', not_before: now + 3600 }])), 'GET', '/v1/apps'), 'validity');
    assert.equal((await http(as(await mint([{ type: 'validity', not_after: now + 3600 }])), 'GET', '/v1/apps')).status, 200);
  });

  it('are narrowed offline by the SDK, and removing or changing a caveat breaks the signature', async () => {
    const t = await mint([{ type: 'apps', apps: { [A]: ['read', 'control'] } }]);
    const narrow = await attenuate(t, [{ type: 'apps', apps: { [A]: ['read'] } }]);
    assert.equal(inspectToken(narrow).caveats.length, 2);
    assert.equal((await http(as(narrow), 'GET', `/v1/apps/${A}/machines/${x}`)).status, 200);
    assertDenied(await http(as(narrow), 'POST', `/v1/apps/${A}/machines/${x}/start`), 'apps');

    const body = inspectToken(narrow);
    const removed = encodeToken({ ...body, caveats: body.caveats.slice(0, 1) });
    const edited = encodeToken({ ...body, caveats: [body.caveats[0]!, { type: 'apps', apps: { [A]: ['read', 'control'] } }] });
    for (const forged of [removed, edited]) {
      const res = await http(as(forged), 'GET', `/v1/apps/${A}/machines`);
      assert.equal(res.status, 401, res.text);
      assert.match(res.body.error, /signature does not match/);
    }
    // Minting over REST with a narrowed token narrows it further.
    const child = await http(as(narrow), 'POST', '/v1/tokens', { caveats: [{ type: 'machines', machines: [x] }] });
    assert.equal(child.status, 201, child.text);
    assert.equal(child.body.caveats.length, 3);
    assert.equal((await http(as(child.body.token), 'GET', `/v1/apps/${A}/machines/${y}`)).status, 403);
    assert.equal((await http(as(child.body.token), 'GET', `/v1/apps/${A}/machines/${x}`)).status, 200);
  });

  it("accept Fly's FlyV1 scheme as well as Bearer, for the admin token and narrowed ones", async () => {
    const t = await mint([{ type: 'apps', apps: { [A]: ['read'] } }]);
    for (const token of [t, d.token]) {
      const res = await http(d, 'GET', `/v1/apps/${A}/machines`, undefined, { authorization: `FlyV1 ${token}` });
      assert.equal(res.status, 200, res.text);
    }
    assertDenied(await http(d, 'GET', `/v1/apps/${B}/machines`, undefined, { authorization: `FlyV1 ${t}` }), 'apps');
    assert.equal((await http(d, 'GET', '/v1/apps', undefined, { authorization: 'FlyV1 hm1_bogus' })).status, 401);
  });

  it('work only from inside machine X through _api.internal with a from_machine caveat', async () => {
    const t = await mint([{ type: 'apps', apps: { [A]: ['read'] } }, { type: 'from_machine', machine: x }]);
    assertDenied(await http(as(t), 'GET', `/v1/apps/${A}/machines`), 'from_machine');
    const get = async (id: string) => (await d.client.machines.exec(A, id, ['sh', '-c',
      `wget -q -O - --header 'Authorization: Bearer ${t}' http://_api.internal:4280/v1/apps/${A}/machines/${x} 2>&1 || echo FAILED`], { timeoutS: 30 })).stdout;
    const fromX = await get(x);
    assert.equal(JSON.parse(fromX).id, x, fromX);
    assert.match(await get(y), /403 Forbidden[\s\S]*FAILED/, 'another machine of the app is refused');
  });

  it('keep working from inside machine X over MCP at _api.internal, whose tools call the API on loopback', async () => {
    const t = await mint([{ type: 'apps', apps: { [A]: ['read'] } }, { type: 'from_machine', machine: x }]);
    const rpc = (body: object) => JSON.stringify(body).replace(/'/g, "'\\''");
    const post = (body: object, extra = '') =>
      `wget -q -S -O - --header 'Authorization: Bearer ${t}' --header 'Content-Type: application/json' ` +
      `--header 'Accept: application/json, text/event-stream' ${extra} --post-data '${rpc(body)}' http://_api.internal:4280/mcp`;
    const script = [
      `sid=$(${post({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-03-26', capabilities: {}, clientInfo: { name: 'wget', version: '1' } } })} 2>&1 >/dev/null | sed -n 's/.*[Mm]cp-[Ss]ession-[Ii]d: *//p' | tr -d '\\r')`,
      `${post({ jsonrpc: '2.0', method: 'notifications/initialized' }, "--header \"Mcp-Session-Id: $sid\"")} >/dev/null 2>&1`,
      `${post({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'machine_get', arguments: { app: A, id: x } } }, "--header \"Mcp-Session-Id: $sid\"")} 2>/dev/null`,
    ].join('\n');
    const out = (await d.client.machines.exec(A, x, ['sh', '-c', script], { timeoutS: 30 })).stdout;
    const result = JSON.parse(out.split('\n').find((l) => l.startsWith('data: '))!.slice(6)).result;
    assert.notEqual(result.isError, true, out);
    assert.equal(result.structuredContent.machine?.id ?? result.structuredContent.id, x, out);
  });

  it('are minted for one app by the MCP server, never wider than its own token', async () => {
    const own = await mint([{ type: 'apps', apps: { [A]: ['read', 'write', 'exec', 'control', 'delete'] } }]);
    const client = new Client({ name: 'tokens-test', version: '1' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${own}` } } }));
    try {
      const call = async (args: Record<string, unknown>) => (await client.callTool({ name: 'token_create', arguments: args })) as CallToolResult;
      const readOnly = await call({ app: A, actions: ['read'], ttl: '1h' });
      assert.ok(!readOnly.isError, JSON.stringify(readOnly.content));
      const minted = (readOnly.structuredContent as { token: string }).token;
      assert.equal((await http(as(minted), 'GET', `/v1/apps/${A}/machines`)).status, 200);
      assertDenied(await http(as(minted), 'POST', `/v1/apps/${A}/machines/${x}/stop`), 'apps');
      const forB = (await call({ app: B })).structuredContent as { token: string };
      assertDenied(await http(as(forB.token), 'GET', `/v1/apps/${B}/machines`), 'apps');
      const listB = (await client.callTool({ name: 'machine_list', arguments: { app: B } })) as CallToolResult;
      assert.equal(listB.isError, true);
      assert.match(JSON.stringify(listB.structuredContent), /token_denied/);
    } finally {
      await client.close();
    }
  });

  it('are made, narrowed, inspected and revoked by the CLI', async () => {
    const { HANGAR_TOKEN: _t, HANGAR_API_URL: _u, ...inherited } = process.env;
    const run = (args: string[], env: Record<string, string> = {}) =>
      promisify(execFile)(HANGAR, args, { env: { ...inherited, HANGAR_DATA_DIR: dataDir, ...env } })
        .then((r) => ({ code: 0, out: r.stdout, err: r.stderr }), (e) => ({ code: e.code as number, out: e.stdout as string, err: e.stderr as string }));
    const created = await run(['tokens', 'create', '--app', `${A}=read,control`, '--ttl', '1h']);
    assert.equal(created.code, 0, created.err);
    const token = created.out.trim();
    const narrowed = await run(['tokens', 'attenuate', token, '--app', `${A}=read`]);
    assert.equal(narrowed.code, 0, narrowed.err);
    const inspected = await run(['tokens', 'inspect', narrowed.out.trim()]);
    assert.match(inspected.out, /caveat 1: apps tok-a=read,control\ncaveat 2: valid until .*\ncaveat 3: apps tok-a=read\n/);
    const start = await run(['machines', 'start', x, '--app', A], { HANGAR_TOKEN: narrowed.out.trim() });
    assert.notEqual(start.code, 0);
    assert.match(start.err, /apps caveat/);
    const revoked = await run(['tokens', 'revoke', token]);
    assert.equal(revoked.code, 0, revoked.err);
    assert.equal((await http(as(narrowed.out.trim()), 'GET', `/v1/apps/${A}/machines`)).status, 401, 'revoking a token revokes what was narrowed from it');
  });

  it('stay revoked after a daemon restart, while the token they were narrowed from keeps working', async () => {
    const parent = await mint([{ type: 'apps', apps: { [A]: ['read'] } }]);
    const child = await attenuate(parent, [{ type: 'machines', machines: [x] }]);
    const grandchild = await attenuate(child, [{ type: 'validity', not_after: Math.floor(Date.now() / 1000) + 3600 }]);
    assert.equal((await http(as(child), 'POST', '/v1/tokens/revoke', { token: child })).status, 200);
    const family = await mint([]);
    const denied = await http(as(parent), 'POST', '/v1/tokens/revoke', { id: inspectToken(family).id });
    assert.deepEqual([denied.status, denied.body.code], [403, 'token_denied'], 'only the admin token revokes a family by id');
    assert.equal((await http(d, 'POST', '/v1/tokens/revoke', { id: inspectToken(family).id })).status, 200);

    await d.stop();
    d = await startDaemon(dataDir);
    for (const gone of [child, grandchild, family]) {
      const res = await http(as(gone), 'GET', `/v1/apps/${A}/machines/${x}`);
      assert.equal(res.status, 401, res.text);
      assert.match(res.body.error, /revoked/);
    }
    assert.equal((await http(as(parent), 'GET', `/v1/apps/${A}/machines/${x}`)).status, 200);
    assert.equal((await http(d, 'GET', `/v1/apps/${A}/machines/${x}`)).status, 200, 'the admin token is unaffected');
  });
});
