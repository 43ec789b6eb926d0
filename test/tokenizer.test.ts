import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { stat, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { createServer as createHttpsServer, type Server } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import sodium from 'libsodium-wrappers';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { HANGAR, http, withDaemon, type TestDaemon } from './helpers/daemon.ts';
import { makeTestCa, makeTestCert } from './helpers/test-certs.ts';

// Hangar's tokenizer as a client of Fly's tokenizer uses it, written from that project's README:
// seal {inject_processor, bearer_auth, allowed_hosts} to the public key with a NaCl sealed box,
// then send plain http:// requests through the proxy with Proxy-Tokenizer and
// Proxy-Authorization. The upstream is an HTTPS server on the host's loopback with a test CA
// (the daemon is told to trust it and to allow 127.0.0.1 as a destination); 127.0.0.2 stays
// refused, as every private address is.

const REAL = 'ghp_the-real-token-0123456789';
const PASSWORD = 'trustno1';

type Seen = { method: string; url: string; headers: IncomingHttpHeaders; body: string };

let d: TestDaemon & { close(): Promise<void> };
let certDir: string;
let upstream: Server;
let refusedUpstream: Server;
/** Serves a certificate from a CA the daemon does not trust. */
let untrustedUpstream: Server;
let untrustedPort: number;
const seenUntrusted: Seen[] = [];
let port: number;
let refusedPort: number;
const seen: Seen[] = [];
const seenRefused: Seen[] = [];
let sealKey: Uint8Array;
let tokenizerUrl: URL;

function recordingServer(cert: { certPem: string; keyPem: string }, into: Seen[]): Server {
  return createHttpsServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      into.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': 'yes' });
      res.end(`hello from upstream ${req.url}`);
    });
  });
}

function listen(server: Server, host: string): Promise<number> {
  return new Promise((resolve) => server.listen(0, host, () => resolve((server.address() as { port: number }).port)));
}

before(async () => {
  certDir = await mkdtemp(join(tmpdir(), 'hangar-tokenizer-'));
  const ca = await makeTestCa('Tokenizer Test CA');
  await writeFile(join(certDir, 'ca.pem'), ca.certPem);
  const cert = await makeTestCert(ca, ['127.0.0.1', '127.0.0.2', 'localhost']);
  upstream = recordingServer(cert, seen);
  refusedUpstream = recordingServer(cert, seenRefused);
  port = await listen(upstream, '127.0.0.1');
  untrustedUpstream = recordingServer(await makeTestCert(await makeTestCa('Untrusted CA'), ['127.0.0.1']), seenUntrusted);
  untrustedPort = await listen(untrustedUpstream, '127.0.0.1');
  refusedPort = await listen(refusedUpstream, '127.0.0.2');
  d = await withDaemon(['--tokenizer-listen', '127.0.0.1:0', '--tokenizer-allow-cidr', '127.0.0.1/32', '--tokenizer-upstream-ca', join(certDir, 'ca.pem')]);
  tokenizerUrl = new URL(readFileSync(join(d.dataDir, 'tokenizer-url'), 'utf8').trim());
  const key = await http(d, 'GET', '/v1/tokenizer/public_key');
  assert.equal(key.status, 200);
  await sodium.ready;
  sealKey = sodium.from_hex(key.body.seal_key);
});
after(async () => {
  await d?.close();
  upstream?.close();
  refusedUpstream?.close();
  untrustedUpstream?.close();
  if (certDir) await rm(certDir, { recursive: true, force: true });
});

/** As the README's Ruby client does: RbNaCl::Boxes::Sealed.new(seal_key).box(secret.to_json), base64. */
function seal(secret: object): string {
  return Buffer.from(sodium.crypto_box_seal(JSON.stringify(secret), sealKey)).toString('base64');
}

function digestOf(password: string): string {
  return createHash('sha256').update(password).digest('base64');
}

type Answer = { status: number; headers: IncomingHttpHeaders; body: string };

/** A plain proxy request: absolute http:// URL in the request line, the proxy's address as the socket. */
function viaTokenizer(target: string, headers: Record<string, string | string[]>, opts: { method?: string; body?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: tokenizerUrl.hostname, port: tokenizerUrl.port, method: opts.method ?? 'GET', path: target, headers: { host: new URL(target).host, ...headers } }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

describe('tokenizer keys', () => {
  it('serves a 32-byte seal key and keeps the private key in a mode-600 file', async () => {
    assert.equal(sealKey.length, 32);
    const mode = (await stat(join(d.dataDir, 'tokenizer.key'))).mode & 0o777;
    assert.equal(mode, 0o600);
  });
});

describe('a Fly tokenizer client', () => {
  it('gets its token injected as Authorization: Bearer, over verified HTTPS upstream', async () => {
    const sealed = seal({ inject_processor: { token: REAL }, bearer_auth: { digest: digestOf(PASSWORD) }, allowed_hosts: [`127.0.0.1:${port}`] });
    const before = seen.length;
    const res = await viaTokenizer(`http://127.0.0.1:${port}/user/repos?page=2`, {
      'proxy-tokenizer': sealed,
      'proxy-authorization': `Bearer ${PASSWORD}`,
      'x-client': 'kept',
    });
    assert.equal(res.status, 200, res.body);
    assert.equal(res.body, 'hello from upstream /user/repos?page=2');
    assert.equal(res.headers['x-upstream'], 'yes');
    assert.equal(seen.length, before + 1);
    const got = seen.at(-1)!;
    assert.equal(got.headers.authorization, `Bearer ${REAL}`);
    assert.equal(got.headers.host, `127.0.0.1:${port}`);
    assert.equal(got.headers['x-client'], 'kept');
    assert.equal(got.headers['proxy-tokenizer'], undefined);
    assert.equal(got.headers['proxy-authorization'], undefined);
  });

  it('injects into a custom header with a custom format, and lets the client pick among allowed ones', async () => {
    const sealed = seal({
      inject_processor: { token: REAL, allowed_dst: ['X-Api-Key', 'Authorization'], allowed_fmt: ['token=%s', 'Bearer %s'] },
      bearer_auth: { digest: digestOf(PASSWORD) },
      allowed_hosts: [`127.0.0.1:${port}`],
    });
    const auth = { 'proxy-authorization': `Bearer ${PASSWORD}` };
    let res = await viaTokenizer(`http://127.0.0.1:${port}/a`, { ...auth, 'proxy-tokenizer': sealed });
    assert.equal(res.status, 200, res.body);
    assert.equal(seen.at(-1)!.headers['x-api-key'], `token=${REAL}`);
    res = await viaTokenizer(`http://127.0.0.1:${port}/b`, { ...auth, 'proxy-tokenizer': `${sealed}; {"dst":"Authorization","fmt":"Bearer %s"}` });
    assert.equal(res.status, 200, res.body);
    assert.equal(seen.at(-1)!.headers.authorization, `Bearer ${REAL}`);
    const count = seen.length;
    res = await viaTokenizer(`http://127.0.0.1:${port}/c`, { ...auth, 'proxy-tokenizer': `${sealed}; {"dst":"X-Other"}` });
    assert.equal(res.status, 400);
    assert.equal(JSON.parse(res.body).code, 'secret_invalid');
    assert.equal(seen.length, count, 'a refused request never reaches the upstream');
  });

  it('signs the request body with inject_hmac_processor', async () => {
    const key = Buffer.from('my signing key');
    const sealed = seal({
      inject_hmac_processor: { key: key.toString('base64'), hash: 'sha256', dst: 'X-Signature', fmt: 'sha256=%x' },
      bearer_auth: { digest: digestOf(PASSWORD) },
      allowed_hosts: [`127.0.0.1:${port}`],
    });
    const body = JSON.stringify({ event: 'push' });
    const res = await viaTokenizer(`http://127.0.0.1:${port}/hook`, { 'proxy-tokenizer': sealed, 'proxy-authorization': `Bearer ${PASSWORD}`, 'content-type': 'application/json' }, { method: 'POST', body });
    assert.equal(res.status, 200, res.body);
    const got = seen.at(-1)!;
    assert.equal(got.body, body);
    assert.equal(got.headers['x-signature'], `sha256=${createHmac('sha256', key).update(body).digest('hex')}`);
  });

  it('never sends the secret to an upstream whose certificate it cannot verify', async () => {
    const sealed = seal({ inject_processor: { token: REAL }, bearer_auth: { digest: digestOf(PASSWORD) }, allowed_hosts: [`127.0.0.1:${untrustedPort}`] });
    const res = await viaTokenizer(`http://127.0.0.1:${untrustedPort}/`, { 'proxy-tokenizer': sealed, 'proxy-authorization': `Bearer ${PASSWORD}` });
    assert.equal(res.status, 502, res.body);
    assert.equal(JSON.parse(res.body).code, 'upstream_unreachable');
    assert.equal(seenUntrusted.length, 0);
  });

  it('streams a large body through, and matches allowed_host_pattern', async () => {
    const sealed = seal({ inject_processor: { token: REAL }, bearer_auth: { digest: digestOf(PASSWORD) }, allowed_host_pattern: `^127\\.0\\.0\\.1:${port}$` });
    const body = 'x'.repeat(5 * 2 ** 20);
    const res = await viaTokenizer(`http://127.0.0.1:${port}/upload`, { 'proxy-tokenizer': sealed, 'proxy-authorization': `Bearer ${PASSWORD}` }, { method: 'PUT', body });
    assert.equal(res.status, 200, res.body);
    assert.equal(seen.at(-1)!.body.length, body.length);
    assert.equal(seen.at(-1)!.headers.authorization, `Bearer ${REAL}`);
  });

  it('refuses a host the secret does not allow, and that host never sees the secret', async () => {
    const sealed = seal({ inject_processor: { token: REAL }, bearer_auth: { digest: digestOf(PASSWORD) }, allowed_hosts: [`127.0.0.1:${port}`] });
    const count = seen.length;
    const res = await viaTokenizer(`http://localhost:${port}/steal`, { 'proxy-tokenizer': sealed, 'proxy-authorization': `Bearer ${PASSWORD}` });
    assert.equal(res.status, 403);
    assert.equal(JSON.parse(res.body).code, 'host_not_allowed');
    assert.ok(!res.body.includes(REAL));
    assert.equal(seen.length, count);
  });

  it('refuses a wrong or missing Proxy-Authorization with 407', async () => {
    const sealed = seal({ inject_processor: { token: REAL }, bearer_auth: { digest: digestOf(PASSWORD) }, allowed_hosts: [`127.0.0.1:${port}`] });
    const count = seen.length;
    for (const headers of [{ 'proxy-authorization': 'Bearer wrong' }, {}] as Record<string, string>[]) {
      const res = await viaTokenizer(`http://127.0.0.1:${port}/x`, { 'proxy-tokenizer': sealed, ...headers });
      assert.equal(res.status, 407, res.body);
      assert.equal(JSON.parse(res.body).code, 'proxy_auth_failed');
      assert.ok(!res.body.includes(REAL));
    }
    // Basic with the password, as Fly also accepts.
    const basic = Buffer.from(`x:${PASSWORD}`).toString('base64');
    const ok = await viaTokenizer(`http://127.0.0.1:${port}/x`, { 'proxy-tokenizer': sealed, 'proxy-authorization': `Basic ${basic}` });
    assert.equal(ok.status, 200, ok.body);
    assert.equal(seen.length, count + 1);
  });

  it('refuses private and loopback destinations that are not exempt, even when the secret allows them', async () => {
    const sealed = seal({ inject_processor: { token: REAL }, bearer_auth: { digest: digestOf(PASSWORD) }, allowed_hosts: [`127.0.0.2:${refusedPort}`] });
    const res = await viaTokenizer(`http://127.0.0.2:${refusedPort}/`, { 'proxy-tokenizer': sealed, 'proxy-authorization': `Bearer ${PASSWORD}` });
    assert.equal(res.status, 403, res.body);
    assert.equal(JSON.parse(res.body).code, 'destination_refused');
    assert.equal(seenRefused.length, 0);
  });

  it('refuses a secret sealed to another key, a secret without allowed hosts, origin-form requests and CONNECT', async () => {
    const other = sodium.crypto_box_keypair();
    const foreign = Buffer.from(sodium.crypto_box_seal(JSON.stringify({ inject_processor: { token: REAL }, no_auth: {}, allowed_hosts: [`127.0.0.1:${port}`] }), other.publicKey)).toString('base64');
    const count = seen.length;
    let res = await viaTokenizer(`http://127.0.0.1:${port}/`, { 'proxy-tokenizer': foreign });
    assert.equal(res.status, 400);
    assert.equal(JSON.parse(res.body).code, 'secret_invalid');
    res = await viaTokenizer(`http://127.0.0.1:${port}/`, { 'proxy-tokenizer': seal({ inject_processor: { token: REAL }, no_auth: {} }) });
    assert.equal(res.status, 403);
    assert.equal(JSON.parse(res.body).code, 'host_not_allowed');
    res = await viaTokenizer(`http://127.0.0.1:${port}/`, {});
    assert.equal(res.status, 400);
    const originForm = await new Promise<number>((resolve, reject) => {
      httpRequest({ host: tokenizerUrl.hostname, port: tokenizerUrl.port, path: '/', headers: { host: `127.0.0.1:${port}` } }, (r) => {
        r.resume();
        resolve(r.statusCode!);
      }).on('error', reject).end();
    });
    assert.equal(originForm, 400);
    const connect = await new Promise<number>((resolve, reject) => {
      httpRequest({ host: tokenizerUrl.hostname, port: tokenizerUrl.port, method: 'CONNECT', path: `127.0.0.1:${port}` })
        .on('connect', (r, socket) => {
          socket.destroy();
          resolve(r.statusCode!);
        })
        .on('error', reject)
        .end();
    });
    assert.equal(connect, 405);
    assert.equal(seen.length, count);
  });
});

describe('POST /v1/tokenizer/seal', () => {
  it('seals a secret that works through the proxy, and answers without the credential or password', async () => {
    const res = await http(d, 'POST', '/v1/tokenizer/seal', {
      inject_processor: { token: REAL },
      bearer_auth: { password: PASSWORD },
      allowed_hosts: [`127.0.0.1:${port}`],
    });
    assert.equal(res.status, 200, res.text);
    assert.ok(!res.text.includes(REAL));
    assert.ok(!res.text.includes(PASSWORD));
    assert.equal(res.body.secret.inject_processor.token, 'REDACTED');
    assert.equal(res.body.proxy, 'http://_tokenizer.internal:4281');
    const through = await viaTokenizer(`http://127.0.0.1:${port}/sealed-by-api`, { 'proxy-tokenizer': res.body.sealed, 'proxy-authorization': `Bearer ${PASSWORD}` });
    assert.equal(through.status, 200, through.body);
    assert.equal(seen.at(-1)!.headers.authorization, `Bearer ${REAL}`);
  });

  it('refuses a secret without allowed hosts or without an auth rule, without echoing it', async () => {
    for (const body of [
      { inject_processor: { token: REAL }, bearer_auth: { password: PASSWORD } },
      { inject_processor: { token: REAL }, allowed_hosts: ['api.example.com'] },
      { inject_processor: { token: REAL }, bearer_auth: { password: PASSWORD }, allowed_hosts: ['api.example.com'], oauth2_processor: { token: { access_token: REAL } } },
    ]) {
      const res = await http(d, 'POST', '/v1/tokenizer/seal', body);
      assert.equal(res.status, 400, res.text);
      assert.ok(!res.text.includes(REAL), res.text);
      assert.ok(!res.text.includes(PASSWORD), res.text);
    }
  });

  it('has no route that opens a secret', async () => {
    const spec = await http(d, 'GET', '/openapi.json');
    const paths = Object.keys(spec.body.paths).filter((p) => p.includes('tokenizer'));
    assert.deepEqual(paths.sort(), ['/v1/tokenizer/public_key', '/v1/tokenizer/seal']);
  });
});

describe('sealing from the CLI and MCP', () => {
  it('hangar secrets seal reads the credential from stdin and prints a sealed value that works', async () => {
    const r = spawnSync(HANGAR, ['secrets', 'seal', '--host', `127.0.0.1:${port}`, '--password', PASSWORD, '--header', 'X-Api-Key', '--format', '%s'], {
      input: REAL + '\n', encoding: 'utf8', env: { ...process.env, HANGAR_DATA_DIR: d.dataDir }, timeout: 60_000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(!r.stdout.includes(REAL));
    const res = await viaTokenizer(`http://127.0.0.1:${port}/cli`, { 'proxy-tokenizer': r.stdout.trim(), 'proxy-authorization': `Bearer ${PASSWORD}` });
    assert.equal(res.status, 200, res.body);
    assert.equal(seen.at(-1)!.headers['x-api-key'], REAL);
    const key = spawnSync(HANGAR, ['secrets', 'public-key'], { encoding: 'utf8', env: { ...process.env, HANGAR_DATA_DIR: d.dataDir }, timeout: 60_000 });
    assert.equal(key.stdout.trim(), sodium.to_hex(sealKey));
  });

  it('MCP secret_seal seals without showing the credential again', async () => {
    const client = new Client({ name: 'tokenizer-test', version: '1' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${d.token}` } } }));
    try {
      const r = (await client.callTool({ name: 'secret_seal', arguments: { token: REAL, allowed_hosts: [`127.0.0.1:${port}`], password: PASSWORD } })) as CallToolResult;
      assert.ok(!r.isError, JSON.stringify(r.content));
      assert.ok(!JSON.stringify(r).includes(REAL));
      const sealed = (r.structuredContent as { sealed: string }).sealed;
      const res = await viaTokenizer(`http://127.0.0.1:${port}/mcp`, { 'proxy-tokenizer': sealed, 'proxy-authorization': `Bearer ${PASSWORD}` });
      assert.equal(res.status, 200, res.body);
      assert.equal(seen.at(-1)!.headers.authorization, `Bearer ${REAL}`);
      const refused = (await client.callTool({ name: 'secret_seal', arguments: { token: REAL, allowed_hosts: ['api.example.com'] } })) as CallToolResult;
      assert.ok(refused.isError);
      assert.ok(!JSON.stringify(refused).includes(REAL));
    } finally {
      await client.close();
    }
  });
});

describe('from a machine', () => {
  it('reaches the tokenizer at _tokenizer.internal:4281 as an HTTP proxy, and the upstream gets the credential', async () => {
    await d.client.apps.create('tok');
    const m = await d.client.machines.create('tok', { config: { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] } } });
    const { sealed } = await d.client.tokenizer.seal({ inject_processor: { token: REAL }, bearer_auth: { password: PASSWORD }, allowed_hosts: [`127.0.0.1:${port}`] });
    const count = seen.length;
    const script = `http_proxy=http://_tokenizer.internal:4281 wget -q -O - --header "Proxy-Tokenizer: ${sealed}" --header "Proxy-Authorization: Bearer ${PASSWORD}" http://127.0.0.1:${port}/from-machine 2>&1`;
    const r = await d.client.machines.exec('tok', m.id, ['sh', '-c', script], { timeoutS: 30 });
    assert.equal(r.stdout + r.stderr, 'hello from upstream /from-machine');
    assert.equal(seen.length, count + 1);
    assert.equal(seen.at(-1)!.headers.authorization, `Bearer ${REAL}`);
  });

  it('hangar_src_auth: only machines of the named app may use the secret, without a password', async () => {
    await d.client.apps.create('tok-other');
    const own = (await d.client.machines.list('tok'))[0]!;
    const other = await d.client.machines.create('tok-other', { config: { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] } } });
    const { sealed } = await d.client.tokenizer.seal({ inject_processor: { token: REAL }, hangar_src_auth: { allowed_apps: ['tok'] }, allowed_hosts: [`127.0.0.1:${port}`] });
    const script = `http_proxy=http://_tokenizer.internal:4281 wget -O - --header "Proxy-Tokenizer: ${sealed}" http://127.0.0.1:${port}/src-auth 2>&1; true`;
    const count = seen.length;
    const fromOther = await d.client.machines.exec('tok-other', other.id, ['sh', '-c', script], { timeoutS: 30 });
    assert.match(fromOther.stdout, /407/);
    assert.equal(seen.length, count, 'another app\'s machine gets nothing through');
    const fromHost = await viaTokenizer(`http://127.0.0.1:${port}/src-auth`, { 'proxy-tokenizer': sealed });
    assert.equal(fromHost.status, 407);
    assert.equal(seen.length, count);
    const fromOwn = await d.client.machines.exec('tok', own.id, ['sh', '-c', script], { timeoutS: 30 });
    assert.match(fromOwn.stdout, /hello from upstream \/src-auth/);
    assert.equal(seen.length, count + 1);
    assert.equal(seen.at(-1)!.headers.authorization, `Bearer ${REAL}`);
  });
});

describe('after all of the above', () => {
  it('counts requests by app and result in /metrics', async () => {
    const text = (await http(d, 'GET', '/metrics')).text;
    assert.match(text, /hangar_tokenizer_requests_total\{app="",result="ok"\} \d+/);
    assert.match(text, /hangar_tokenizer_requests_total\{app="",result="host_not_allowed"\} \d+/);
    assert.match(text, /hangar_tokenizer_requests_total\{app="tok",result="ok"\} 2/);
    assert.match(text, /hangar_tokenizer_requests_total\{app="tok-other",result="proxy_auth_failed"\} 1/);
    assert.ok(!text.includes(REAL));
  });

  it('the daemon never printed or logged a credential or password', () => {
    assert.ok(!d.output().includes(REAL));
    assert.ok(!d.output().includes(PASSWORD));
  });
});
