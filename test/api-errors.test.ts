import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { withDaemon, http, type TestDaemon } from './helpers/daemon.ts';

// Bad input gets a 4xx (or 502 for a registry) with a machine-readable code and a hint.

const APP = 'errs';
let d: TestDaemon & { close(): Promise<void> };

before(async () => {
  d = await withDaemon();
  await d.client.apps.create(APP);
});
after(async () => {
  await d?.close();
});

function assertError(res: { status: number; body: any }, status: number, code: string) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(res.body.code, code);
  assert.equal(typeof res.body.error, 'string');
  assert.ok(res.body.hint, 'has a hint');
  assert.match(res.body.request_id, /^req_/);
  assert.ok(!/\bat .+\.ts:\d+/.test(JSON.stringify(res.body)), 'no stack trace');
}

async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

describe('API errors', () => {
  it('needs a bearer token everywhere but /health and /openapi.json', async () => {
    assertError(await http({ url: d.url, token: 'wrong' }, 'GET', '/v1/apps'), 401, 'unauthorized');
    const noAuth = await fetch(d.url + '/v1/apps');
    assert.equal(noAuth.status, 401);
    assert.equal((await fetch(d.url + '/health')).status, 200);
    const spec = await (await fetch(d.url + '/openapi.json')).json() as { paths: Record<string, Record<string, { requestBody?: { content: object } }>> };
    assert.ok(spec.paths['/v1/apps/{app_name}/machines/{machine_id}/wait']);
    const upload = spec.paths['/v1/apps/{app_name}/machines/{machine_id}/files']?.put?.requestBody?.content;
    assert.deepEqual(Object.keys(upload ?? {}), ['application/octet-stream'], 'raw uploads are documented with their content type');
    assert.equal(statSync(join(d.dataDir, 'token')).mode & 0o777, 0o600, 'the generated token is readable by root only');
  });

  it('rejects malformed JSON, wrong types, and bodies over 1 MiB', async () => {
    assertError(await http(d, 'POST', `/v1/apps/${APP}/machines`, '{"config": {'), 400, 'invalid_json');
    const wrongType = await http(d, 'POST', `/v1/apps/${APP}/machines`, { config: { image: 'hangar/busybox', guest: { memory_mb: 'lots' } } });
    assertError(wrongType, 400, 'validation_failed');
    assert.match(wrongType.body.error, /config\.guest\.memory_mb/);
    assertError(await http(d, 'POST', `/v1/apps/${APP}/machines`, { config: {} }), 400, 'validation_failed');
    const big = { config: { image: 'hangar/busybox', env: { BIG: 'x'.repeat(1024 * 1024 + 10) } } };
    assertError(await http(d, 'POST', `/v1/apps/${APP}/machines`, big), 413, 'body_too_large');
  });

  it('names unknown apps, machines and routes', async () => {
    assertError(await http(d, 'GET', '/v1/apps/nope/machines'), 404, 'app_not_found');
    assertError(await http(d, 'GET', `/v1/apps/${APP}/machines/0123456789abcd`), 404, 'machine_not_found');
    assertError(await http(d, 'POST', `/v1/apps/${APP}/machines/0123456789abcd/start`), 404, 'machine_not_found');
    assertError(await http(d, 'GET', '/v1/nothing-here'), 404, 'route_not_found');
    assertError(await http(d, 'POST', '/v1/apps', { app_name: APP }), 409, 'app_exists');
    assertError(await http(d, 'POST', '/v1/apps', { app_name: 'Bad Name!' }), 400, 'validation_failed');
  });

  it('gives a name to exactly one of many concurrent creates', async () => {
    const body = { name: 'unique', skip_launch: true, config: { image: 'hangar/busybox', init: { cmd: ['sleep', '1'] } } };
    const results = await Promise.all(Array.from({ length: 5 }, () => http(d, 'POST', `/v1/apps/${APP}/machines`, body)));
    assert.deepEqual(results.map((r) => r.status).sort(), [200, 409, 409, 409, 409]);
    for (const r of results.filter((x) => x.status === 409)) assertError(r, 409, 'machine_name_taken');
  });

  it('refuses files that escape the root and memory the host cannot give', async () => {
    const escape = await http(d, 'POST', `/v1/apps/${APP}/machines`, {
      config: { image: 'hangar/busybox', files: [{ guest_path: '/etc/../../../tmp/pwned', raw_value: 'eA==' }] },
    });
    assertError(escape, 400, 'path_escapes_root');
    const relative = await http(d, 'POST', `/v1/apps/${APP}/machines`, {
      config: { image: 'hangar/busybox', files: [{ guest_path: 'etc/x', raw_value: 'eA==' }] },
    });
    assertError(relative, 400, 'path_escapes_root');
    const memory = await http(d, 'POST', `/v1/apps/${APP}/machines`, { config: { image: 'hangar/busybox', guest: { memory_mb: 10_000_000 } } });
    assertError(memory, 422, 'memory_unavailable');
    assert.match(memory.body.hint, /at most \d+ MB/);
  });

  it('reports images that cannot be found and registries that cannot be reached', async () => {
    const port = await closedPort();
    const unreachable = await http(d, 'POST', `/v1/apps/${APP}/machines`, { config: { image: `127.0.0.1:${port}/x/y:1` } });
    assert.equal(unreachable.status, 502, JSON.stringify(unreachable.body));
    assert.ok(['registry_unreachable'].includes(unreachable.body.code));
    assertError(await http(d, 'POST', `/v1/apps/${APP}/machines`, { config: { image: 'hangar/no-such-base' } }), 404, 'image_not_found');
    assertError(await http(d, 'POST', `/v1/apps/${APP}/machines`, { config: { image: 'UPPER/Case::bad' } }), 400, 'invalid_image_ref');
  });
});

describe('documents for robots', () => {
  it('serves /llms.txt generated from the route table, without auth', async () => {
    const res = await fetch(d.url + '/llms.txt');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    const text = await res.text();
    assert.match(text, /^# Hangar/);
    assert.match(text, /- POST \/v1\/apps\/\{app_name\}\/machines: Create a machine .* — body \{name\?: string, config: object/);
    assert.match(text, /- GET \/v1\/apps\/\{app_name\}\/machines\/\{machine_id\}\/wait \?state\?: string, timeout\?: /);
    assert.match(text, /## MCP tools[\s\S]*- machine_exec: Run a command in a started machine/, 'the MCP tools are described from the tool table');
  });
});
