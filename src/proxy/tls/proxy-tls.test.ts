import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type PeerCertificate } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { isHangarError } from '../../protocol/errors.ts';
import { makeTestCa, makeTestCert } from '../../../test/helpers/test-certs.ts';
import { loadOrCreateCa } from './ca.ts';
import { LeafIssuer } from './leaf-issuer.ts';
import { ProxyTls } from './proxy-tls.ts';
import { parseUpload } from './uploaded-cert.ts';

// The CA, the on-demand issuer and uploaded certificates, checked with real TLS handshakes on
// loopback that trust only the CA.

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hangar-tls-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Handshakes with the server as a client trusting only `ca`; resolves to the served certificate. */
function handshake(port: number, servername: string, ca: string): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername, ca }, () => {
      const cert = socket.getPeerCertificate();
      socket.end();
      resolve(cert);
    });
    socket.on('error', reject);
  });
}

describe('certificate authority', () => {
  it('is made once, keeps its key private, and is loaded again as it was', async () => {
    const tlsDir = join(dir, 'ca-once');
    const first = await loadOrCreateCa(tlsDir, 'localhost');
    assert.equal((await stat(join(tlsDir, 'ca-key.pem'))).mode & 0o777, 0o600);
    const again = await loadOrCreateCa(tlsDir, 'localhost');
    assert.equal(again.certPem, first.certPem);
    const cert = new X509Certificate(first.certPem);
    assert.ok(cert.ca);
    assert.equal(await readFile(first.certPath, 'utf8'), first.certPem);
  });

  it('refuses to serve a domain its name constraints do not cover', async () => {
    const tlsDir = join(dir, 'ca-domain');
    await loadOrCreateCa(tlsDir, 'localhost');
    await assert.rejects(loadOrCreateCa(tlsDir, 'apps.example.test'), (err) => isHangarError(err, 'host_unsupported'));
  });
});

describe('leaf issuer', () => {
  it('issues once for concurrent asks, a certificate for that name signed by the CA', async () => {
    const ca = await loadOrCreateCa(join(dir, 'issuer'), 'localhost');
    const issuer = new LeafIssuer(ca);
    const all = await Promise.all(Array.from({ length: 20 }, () => issuer.certificateFor('web.localhost')));
    assert.equal(new Set(all).size, 1);
    const leaf = new X509Certificate(all[0]!.certPem);
    assert.equal(leaf.subjectAltName, 'DNS:web.localhost');
    assert.ok(leaf.verify(new X509Certificate(ca.certPem).publicKey));
    assert.ok(leaf.checkIssued(new X509Certificate(ca.certPem)));
  });

  it('renews a certificate once most of its life is gone, serving the old one meanwhile', async () => {
    const ca = await loadOrCreateCa(join(dir, 'issuer'), 'localhost');
    const issuer = new LeafIssuer(ca, { validityMs: 1500 }); // renewed after 1000 ms
    const first = await issuer.certificateFor('renew.localhost');
    assert.equal(await issuer.certificateFor('renew.localhost'), first);
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal(await issuer.certificateFor('renew.localhost'), first, 'still valid: served while the next is made');
    await new Promise((r) => setTimeout(r, 100));
    const second = await issuer.certificateFor('renew.localhost');
    assert.notEqual(second, first);
    assert.ok(second.notAfter > first.notAfter);
    await new Promise((r) => setTimeout(r, 1600)); // expired and no renewal asked for: the next ask waits for a new one
    const third = await issuer.certificateFor('renew.localhost');
    assert.notEqual(third, second);
    assert.ok(third.notAfter > Date.now());
  });
});

describe('SNI', () => {
  let tls: ProxyTls;
  let port: number;
  let server: ReturnType<ProxyTls['createServer']>;
  const apps = new Map([['web', 'id-web'], ['other', 'id-other']]);

  before(async () => {
    tls = await ProxyTls.open({ dir: join(dir, 'sni'), domain: 'localhost', appId: (name) => apps.get(name) });
    server = tls.createServer();
    server.on('request', (_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('serves <app>.localhost a certificate the CA vouches for', async () => {
    const cert = await handshake(port, 'web.localhost', tls.ca.certPem);
    assert.equal(cert.subjectaltname, 'DNS:web.localhost');
  });

  it('gives no certificate to a name that is not an app', async () => {
    await assert.rejects(handshake(port, 'nope.localhost', tls.ca.certPem));
    await assert.rejects(handshake(port, 'example.com', tls.ca.certPem));
    await assert.rejects(handshake(port, 'a.b.localhost', tls.ca.certPem));
  });

  it('a certificate for a name outside the domain is refused by clients (name constraints)', async () => {
    const issued = await new LeafIssuer(tls.ca).certificateFor('example.com');
    const { createServer } = await import('node:https');
    const rogue = createServer({ cert: issued.certPem, key: issued.keyPem });
    await new Promise<void>((resolve) => rogue.listen(0, '127.0.0.1', resolve));
    try {
      await assert.rejects(handshake((rogue.address() as AddressInfo).port, 'example.com', tls.ca.certPem), /name constraint|permitted subtree/i);
    } finally {
      await new Promise((resolve) => rogue.close(resolve));
    }
  });

  it('serves an uploaded certificate for its hostnames and routes them to its app', async () => {
    const outside = await makeTestCa('Outside CA');
    const { certPem, keyPem } = await makeTestCert(outside, ['www.example.test', '*.web.example.test']);
    const added = await tls.certificates.add('web', 'id-web', certPem, keyPem, tls.reservedFor('web'));
    assert.deepEqual(added.map((c) => c.hostname).sort(), ['*.web.example.test', 'www.example.test']);
    assert.equal((await stat(join(dir, 'sni', 'certs', 'www.example.test.json'))).mode & 0o777, 0o600);
    for (const name of ['www.example.test', 'api.web.example.test']) {
      const cert = await handshake(port, name, outside.certPem);
      assert.match(cert.subjectaltname ?? '', /DNS:www\.example\.test/);
    }
    assert.equal(tls.appForHostname('www.example.test:443'), 'web');
    assert.equal(tls.appForHostname('API.web.example.test'), 'web');
    assert.equal(tls.appForHostname('a.b.web.example.test'), undefined);

    await assert.rejects(tls.certificates.add('other', 'id-other', certPem, keyPem, tls.reservedFor('other')), (err) => isHangarError(err, 'hostname_taken'));
    const own = await makeTestCert(outside, ['web.localhost']);
    await tls.certificates.add('web', 'id-web', own.certPem, own.keyPem, tls.reservedFor('web'));
    const theirs = await makeTestCert(outside, ['other.localhost']);
    await assert.rejects(tls.certificates.add('web', 'id-web', theirs.certPem, theirs.keyPem, tls.reservedFor('web')), (err) => isHangarError(err, 'hostname_taken'));

    const reopened = await ProxyTls.open({ dir: join(dir, 'sni'), domain: 'localhost', appId: (name) => apps.get(name) });
    assert.deepEqual(reopened.certificates.list('web').map((c) => c.hostname), ['*.web.example.test', 'web.localhost', 'www.example.test']);

    await tls.certificates.remove('web', 'www.example.test');
    assert.equal(tls.appForHostname('www.example.test'), undefined);
    await assert.rejects(handshake(port, 'www.example.test', outside.certPem));
    await assert.rejects(tls.certificates.remove('web', 'www.example.test'), (err) => isHangarError(err, 'certificate_not_found'));
  });

  it('forgets uploaded certificates of an app deleted (or deleted and made again)', async () => {
    const outside = await makeTestCa('Outside CA');
    const { certPem, keyPem } = await makeTestCert(outside, ['gone.example.test']);
    apps.set('gone', 'id-1');
    await tls.certificates.add('gone', 'id-1', certPem, keyPem, tls.reservedFor('gone'));
    assert.equal(tls.appForHostname('gone.example.test'), 'gone');
    apps.set('gone', 'id-2');
    assert.equal(tls.appForHostname('gone.example.test'), undefined);
    assert.deepEqual(tls.certificates.list('gone'), []);
    await new Promise((r) => setTimeout(r, 50));
    await assert.rejects(stat(join(dir, 'sni', 'certs', 'gone.example.test.json')), { code: 'ENOENT' });
  });
});

describe('uploaded certificate checks', () => {
  it('refuses garbage, a key that is not the certificate\'s, an expired certificate and one without hostnames', async () => {
    const ca = await makeTestCa();
    const good = await makeTestCert(ca, ['ok.example.test']);
    const other = await makeTestCert(ca, ['ok.example.test']);
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (err) {
        return isHangarError(err) ? err.code : String(err);
      }
      return 'accepted';
    };
    assert.equal(code(() => parseUpload('hello', good.keyPem)), 'invalid_certificate');
    assert.equal(code(() => parseUpload('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----', good.keyPem)), 'invalid_certificate');
    assert.equal(code(() => parseUpload(good.certPem, 'not a key')), 'invalid_certificate');
    assert.equal(code(() => parseUpload(good.certPem, other.keyPem)), 'certificate_key_mismatch');
    const old = await makeTestCert(ca, ['old.example.test'], { notBefore: new Date(Date.now() - 10 * 86400_000), notAfter: new Date(Date.now() - 86400_000) });
    assert.equal(code(() => parseUpload(old.certPem, old.keyPem)), 'certificate_expired');
    const nameless = await makeTestCert(ca, []);
    assert.equal(code(() => parseUpload(nameless.certPem, nameless.keyPem)), 'invalid_certificate');
    assert.equal(code(() => parseUpload(ca.certPem + good.certPem, good.keyPem)), 'invalid_certificate', 'chain out of order');
    const parsed = parseUpload(good.certPem + ca.certPem, good.keyPem);
    assert.deepEqual(parsed.hostnames, ['ok.example.test']);
    assert.match(parsed.fingerprint, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  });
});
