import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type PeerCertificate } from 'node:tls';
import { UPGRADE_ECHO_CONFIG } from './helpers/upgrade-echo.ts';
import { HANGAR, http, startDaemon, withDaemon, type TestDaemon } from './helpers/daemon.ts';
import { makeTestCa, makeTestCert, type TestCa } from './helpers/test-certs.ts';

// HTTPS on the edge proxy as a client sees it: trusting only the CA fetched from Hangar,
// https://<app>.localhost reaches the app's machine; names that are not apps get no certificate;
// an app's own certificate is served for its hostnames and routes them to the app.

let d: TestDaemon & { close(): Promise<void> };
/** The daemon started again on d's data dir, if a test did. */
let restarted: TestDaemon | undefined;
let caPem: string;
let outside: TestCa;
let certDir: string;
const APP = 'secure';
const SITE = 'www.secure-site.test';

const ECHO_CGI = [
  '#!/bin/sh',
  "printf 'Content-Type: text/plain\\r\\n\\r\\n'",
  'echo "machine=$FLY_MACHINE_ID proto=$HTTP_X_FORWARDED_PROTO host=$HTTP_X_FORWARDED_HOST"',
  '',
].join('\n');
const SERVED = {
  image: 'hangar/busybox',
  init: { cmd: ['httpd', '-f', '-p', '8080', '-h', '/srv'] },
  files: [{ guest_path: '/srv/cgi-bin/echo', raw_value: Buffer.from(ECHO_CGI).toString('base64'), mode: 0o755 }],
  services: [{ internal_port: 8080, ports: [{ port: 80, handlers: ['http'] }] }],
};

let machineId: string;

before(async () => {
  d = await withDaemon();
  certDir = await mkdtemp(join(tmpdir(), 'hangar-tls-certs-'));
  outside = await makeTestCa('Outside CA');
  await d.client.apps.create(APP);
  machineId = (await d.client.machines.create(APP, { config: SERVED as never })).id;
});
after(async () => {
  await restarted?.kill();
  await d?.close();
  if (certDir) await rm(certDir, { recursive: true, force: true });
});

type Answer = { status: number; body: string; cert: PeerCertificate };

/** GET over HTTPS to the proxy's TLS port as `host`, trusting only `ca`. */
function getTls(host: string, ca: string, path = '/cgi-bin/echo'): Promise<Answer> {
  const url = new URL(d.proxyTlsUrl);
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: url.hostname, port: url.port, path, servername: host, ca, headers: { host }, agent: false }, (res) => {
      const cert = (res.socket as import('node:tls').TLSSocket).getPeerCertificate();
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, cert }));
    });
    req.on('error', reject);
    req.end();
  });
}

function getPlain(host: string, path = '/cgi-bin/echo'): Promise<{ status: number; body: string; location?: string }> {
  const url = new URL(d.proxyUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, path, headers: { host } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ...(res.headers.location ? { location: res.headers.location } : {}) }));
    });
    req.on('error', reject);
    req.end();
  });
}

function handshake(servername: string, ca: string): Promise<PeerCertificate> {
  const url = new URL(d.proxyTlsUrl);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: url.hostname, port: Number(url.port), servername, ca }, () => {
      resolve(socket.getPeerCertificate());
      socket.end();
    });
    socket.on('error', reject);
  });
}

describe('edge proxy over HTTPS', () => {
  it('hands out its CA without a token, over the API and the CLI', async () => {
    const res = await fetch(`${d.url}/v1/tls/ca.pem`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /application\/x-pem-file/);
    caPem = await res.text();
    assert.match(caPem, /^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n$/);
    assert.equal(await readFile(join(d.dataDir, 'tls', 'ca.pem'), 'utf8'), caPem);
    const cli = spawnSync(HANGAR, ['tls', 'ca'], { encoding: 'utf8', env: { ...process.env, HANGAR_DATA_DIR: d.dataDir } });
    assert.equal(cli.status, 0, cli.stderr);
    assert.equal(cli.stdout, caPem);
    assert.match(d.output(), new RegExp(`https:\\s+${d.proxyTlsUrl.replace(/\./g, '\\.')}.*trust the CA ${join(d.dataDir, 'tls', 'ca.pem')}`));
  });

  it('serves https://<app>.localhost with a certificate for that name, telling the machine it came over https', async () => {
    const res = await getTls(`${APP}.localhost`, caPem);
    assert.equal(res.status, 200, res.body);
    assert.equal(res.body, `machine=${machineId} proto=https host=${APP}.localhost\n`);
    assert.equal(res.cert.subjectaltname, `DNS:${APP}.localhost`);
    const plain = await getPlain(`${APP}.localhost`);
    assert.equal(plain.body, `machine=${machineId} proto=http host=${APP}.localhost\n`, 'the plain listener says http');
  });

  it('redirects plain HTTP to HTTPS for a service with force_https', async () => {
    await d.client.apps.create('forced');
    const config = { ...SERVED, services: [{ internal_port: 8080, ports: [{ port: 80, handlers: ['http'], force_https: true }, { port: 443, handlers: ['tls', 'http'] }] }] };
    await d.client.machines.create('forced', { config: config as never });
    const plain = await getPlain('forced.localhost:1234', '/cgi-bin/echo?x=1');
    assert.equal(plain.status, 301);
    assert.equal(plain.location, `https://forced.localhost:${new URL(d.proxyTlsUrl).port}/cgi-bin/echo?x=1`);
    let secure = await getTls('forced.localhost', caPem);
    for (let i = 0; i < 50 && secure.status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      secure = await getTls('forced.localhost', caPem);
    }
    assert.equal(secure.status, 200);
    assert.match(secure.body, /proto=https/);
    assert.equal((await getPlain(`${APP}.localhost`)).status, 200, 'apps without force_https are not redirected');
  });

  it('gives no certificate for a name that is not one of its apps', async () => {
    for (const name of ['nope.localhost', 'example.com', `x.${APP}.localhost`]) {
      await assert.rejects(handshake(name, caPem), `no certificate for ${name}`);
    }
  });

  it('passes an upgraded (WebSocket) connection through both ways', async () => {
    const app = 'tls-upgrade';
    await d.client.apps.create(app);
    const m = await d.client.machines.create(app, {
      config: UPGRADE_ECHO_CONFIG as never,
    });
    const url = new URL(d.proxyTlsUrl);
    const socket = connect({ host: url.hostname, port: Number(url.port), servername: `${app}.localhost`, ca: caPem });
    await once(socket, 'secureConnect');
    let received = '';
    socket.setEncoding('utf8');
    socket.on('data', (c: string) => (received += c));
    const until = async (pattern: RegExp) => {
      for (let i = 0; i < 100 && !pattern.test(received); i++) await new Promise((r) => setTimeout(r, 50));
      assert.match(received, pattern);
    };
    socket.write(`GET /chat HTTP/1.1\r\nHost: ${app}.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
    await until(/\r\n\r\n/);
    assert.match(received, /^HTTP\/1\.1 101 /);
    assert.match(received, new RegExp(`x-machine: ${m.id}`, 'i'));
    socket.write('ping over tls\n');
    await until(/ping over tls\n$/);
    socket.end();
    await once(socket, 'close');
  });

  it('serves an uploaded certificate for its hostnames and routes them to the app', async () => {
    const { certPem, keyPem } = await makeTestCert(outside, [SITE]);
    const up = await http(d, 'POST', `/v1/apps/${APP}/certificates`, { certificate: certPem + outside.certPem, private_key: keyPem });
    assert.equal(up.status, 201, up.text);
    assert.equal(up.body.certificates[0].hostname, SITE);
    assert.match(up.body.certificates[0].issuer, /Outside CA/);

    const list = await http(d, 'GET', `/v1/apps/${APP}/certificates`);
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.certificates.map((c: { hostname: string }) => c.hostname), [SITE]);
    assert.match(list.body.certificates[0].fingerprint_sha256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    assert.ok(!list.text.includes('PRIVATE KEY'), 'the key is never sent back');

    const res = await getTls(SITE, outside.certPem);
    assert.equal(res.status, 200, res.body);
    assert.equal(res.body, `machine=${machineId} proto=https host=${SITE}\n`);
    assert.equal(res.cert.subjectaltname, `DNS:${SITE}`);
    assert.equal((await getPlain(SITE)).body, `machine=${machineId} proto=http host=${SITE}\n`, 'the hostname routes over plain HTTP too');

    const wild = await makeTestCert(outside, ['*.cli.secure-site.test']);
    await writeFile(join(certDir, 'cert.pem'), wild.certPem);
    await writeFile(join(certDir, 'key.pem'), wild.keyPem);
    const hangar = (...args: string[]) => spawnSync(HANGAR, args, { encoding: 'utf8', env: { ...process.env, HANGAR_DATA_DIR: d.dataDir } });
    const added = hangar('tls', 'certs', 'add', APP, '--cert', join(certDir, 'cert.pem'), '--key', join(certDir, 'key.pem'));
    assert.equal(added.status, 0, added.stderr);
    const listed = hangar('tls', 'certs', 'list', APP);
    assert.equal(listed.status, 0, listed.stderr);
    assert.match(listed.stdout, /^\*\.cli\.secure-site\.test\s+CN=Outside CA/m);
    assert.match(listed.stdout, /^www\.secure-site\.test\s+CN=Outside CA/m);
    const viaWildcard = await getTls('any.cli.secure-site.test', outside.certPem);
    assert.equal(viaWildcard.body, `machine=${machineId} proto=https host=any.cli.secure-site.test\n`);
  });

  it('refuses bad uploads with a code and a hint', async () => {
    const good = await makeTestCert(outside, ['api.secure-site.test']);
    const other = await makeTestCert(outside, ['api.secure-site.test']);
    const cases: Array<[string, unknown, number, string]> = [
      ['garbage', { certificate: 'not a certificate', private_key: good.keyPem }, 400, 'invalid_certificate'],
      ['garbage key', { certificate: good.certPem, private_key: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n' }, 400, 'invalid_certificate'],
      ['mismatched key', { certificate: good.certPem, private_key: other.keyPem }, 400, 'certificate_key_mismatch'],
      ['expired', await (async () => {
        const old = await makeTestCert(outside, ['old.secure-site.test'], { notBefore: new Date(Date.now() - 3 * 86400_000), notAfter: new Date(Date.now() - 86400_000) });
        return { certificate: old.certPem, private_key: old.keyPem };
      })(), 422, 'certificate_expired'],
      ['another app\'s name', await (async () => {
        const theirs = await makeTestCert(outside, ['tls-upgrade.localhost']);
        return { certificate: theirs.certPem, private_key: theirs.keyPem };
      })(), 409, 'hostname_taken'],
      ['missing key', { certificate: good.certPem }, 400, 'validation_failed'],
    ];
    for (const [what, body, status, code] of cases) {
      const res = await http(d, 'POST', `/v1/apps/${APP}/certificates`, body);
      assert.equal(res.status, status, `${what}: ${res.text}`);
      assert.equal(res.body.code, code, what);
      assert.ok(res.body.hint, `${what} has a hint`);
    }
    const noApp = await http(d, 'POST', '/v1/apps/nope/certificates', { certificate: good.certPem, private_key: good.keyPem });
    assert.equal(noApp.body.code, 'app_not_found');
    const site = await makeTestCert(outside, [SITE]);
    const taken = await http(d, 'POST', '/v1/apps/tls-upgrade/certificates', { certificate: site.certPem, private_key: site.keyPem });
    assert.equal(taken.status, 409, taken.text);
    assert.equal(taken.body.code, 'hostname_taken', 'a hostname serves one app');
  });

  it('keeps its CA and the uploaded certificates across a restart', async () => {
    await d.stop();
    restarted = await startDaemon(d.dataDir);
    d = { ...restarted, close: d.close };
    assert.equal(await (await fetch(`${d.url}/v1/tls/ca.pem`)).text(), caPem);
    const res = await getTls(`${APP}.localhost`, caPem);
    assert.equal(res.status, 200, res.body);
    assert.equal((await getTls(SITE, outside.certPem)).status, 200);
  });

  it('stops serving (and routing) a hostname whose certificate is removed', async () => {
    const del = await http(d, 'DELETE', `/v1/apps/${APP}/certificates/${SITE}`);
    assert.equal(del.status, 200, del.text);
    await assert.rejects(handshake(SITE, outside.certPem));
    assert.equal((await getPlain(SITE)).status, 404);
    const again = await http(d, 'DELETE', `/v1/apps/${APP}/certificates/${SITE}`);
    assert.equal(again.status, 404);
    assert.equal(again.body.code, 'certificate_not_found');
    const wildcard = await http(d, 'DELETE', `/v1/apps/${APP}/certificates/${encodeURIComponent('*.cli.secure-site.test')}`);
    assert.equal(wildcard.status, 200, wildcard.text);
    assert.deepEqual((await http(d, 'GET', `/v1/apps/${APP}/certificates`)).body.certificates, []);
  });
});
