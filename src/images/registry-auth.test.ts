import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createPrivateKey, randomBytes, sign, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { isHangarError } from '../protocol/errors.ts';
import { writeLayout } from '../../test/helpers/oci-layout.ts';
import { pushLayout, startRegistry, type TestRegistry } from '../../test/helpers/registry.ts';
import { createImageService } from './index.ts';
import { parseChallenge } from './registry-auth.ts';

// Bearer-token auth against the real registry configured with distribution's `auth: token`:
// a small token server on loopback checks Basic credentials and signs JWTs with a throwaway
// certificate that the registry trusts.

const run = promisify(execFile);
const USER = { username: 'robot', password: 'hunter2' };
const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

describe('registry bearer-token auth', () => {
  let work: string;
  let registry: TestRegistry;
  let tokenServer: Server;
  let tokenHost: string;
  const tokenRequests: { authorized: boolean; scope: string | null }[] = [];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'hangar-auth-'));
    const keyPath = join(work, 'key.pem');
    const certPath = join(work, 'cert.pem');
    await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '1', '-subj', '/CN=hangar-test-token']);
    const key = createPrivateKey(await readFile(keyPath));
    const certDer = new X509Certificate(await readFile(certPath)).raw;

    tokenServer = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const expected = `Basic ${Buffer.from(`${USER.username}:${USER.password}`).toString('base64')}`;
      const authorized = req.headers.authorization === expected;
      tokenRequests.push({ authorized, scope: url.searchParams.get('scope') });
      if (!authorized) {
        res.writeHead(401).end('{"details":"bad credentials"}');
        return;
      }
      const [, name, actions] = (url.searchParams.get('scope') ?? '').split(':');
      const now = Math.floor(Date.now() / 1000);
      const header = b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', x5c: [certDer.toString('base64')] }));
      const claims = b64url(JSON.stringify({
        iss: 'hangar-test', sub: USER.username, aud: url.searchParams.get('service'), exp: now + 300, nbf: now - 10, iat: now,
        jti: randomBytes(8).toString('hex'),
        access: [{ type: 'repository', name, actions: (actions ?? '').split(',') }],
      }));
      const signature = b64url(sign('sha256', Buffer.from(`${header}.${claims}`), key));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: `${header}.${claims}.${signature}` }));
    });
    tokenServer.listen(0, '127.0.0.1');
    await once(tokenServer, 'listening');
    const port = (tokenServer.address() as { port: number }).port;
    tokenHost = `127.0.0.1:${port}`;
    registry = await startRegistry({
      tokenAuth: { realm: `http://127.0.0.1:${port}/token`, service: 'hangar-test-registry', issuer: 'hangar-test', rootCertBundle: certPath },
    });
    await writeLayout(join(work, 'img'), 'v1', { layers: [{ entries: [{ name: 'hello', content: 'authorized\n' }], compression: 'gzip' }] });
    await pushLayout(join(work, 'img'), `${registry.host}/private/app:v1`, { tag: 'v1', creds: USER });
  });
  after(async () => {
    await registry?.stop();
    tokenServer?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('pulls with credentials through the WWW-Authenticate bearer challenge', async () => {
    tokenRequests.length = 0;
    const svc = createImageService({
      root: await mkdtemp(join(work, 'store-')),
      // The token service is plain HTTP on another port: it must be listed as well.
      insecureRegistries: [registry.host, tokenHost],
      credentials: { [registry.host]: USER },
    });
    const image = await svc.pull(`${registry.host}/private/app:v1`);
    assert.equal(await readFile(join(image.layerDirs[0] as string, 'hello'), 'utf8'), 'authorized\n');
    assert.ok(tokenRequests.length >= 1);
    assert.deepEqual(tokenRequests[0], { authorized: true, scope: 'repository:private/app:pull' });
    assert.equal(tokenRequests.length, 1, 'the token is reused for the following requests');
  });

  test('no credentials or wrong ones are registry_auth_failed', async () => {
    for (const credentials of [{}, { [registry.host]: { username: 'robot', password: 'wrong' } }]) {
      const svc = createImageService({ root: await mkdtemp(join(work, 'store-')), insecureRegistries: [registry.host, tokenHost], credentials });
      await assert.rejects(svc.pull(`${registry.host}/private/app:v1`), (err) => {
        assert.ok(isHangarError(err, 'registry_auth_failed'), String(err));
        assert.ok(err.hint);
        return true;
      });
    }
  });

  test('a plain-HTTP realm that is not a listed registry is refused before the credentials are sent', async () => {
    tokenRequests.length = 0;
    const svc = createImageService({
      root: await mkdtemp(join(work, 'store-')),
      insecureRegistries: [registry.host],
      credentials: { [registry.host]: USER },
    });
    await assert.rejects(svc.pull(`${registry.host}/private/app:v1`), (err) => {
      assert.ok(isHangarError(err, 'registry_realm_refused'), String(err));
      assert.match(err.hint ?? '', new RegExp(`add ${tokenHost.replace(/\./g, '\\.')} to insecure_registries`));
      return true;
    });
    assert.equal(tokenRequests.length, 0, 'the token service was never asked');
  });

  test('challenge parsing handles quoted commas', () => {
    assert.deepEqual(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push"'), {
      scheme: 'bearer',
      params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:a/b:pull,push' },
    });
  });
});
