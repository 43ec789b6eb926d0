import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { isHangarError } from '../protocol/errors.ts';
import { createImageService } from './index.ts';

// A hostile registry on loopback (plain HTTP, listed as insecure, as the test registries are)
// tries to aim the daemon's pull at another loopback service, and to push junk into its errors.
// The "bystander" stands for the daemon's own API: it counts every connection made to it.

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
const TOKEN = 'tok-SEKRIT-0123456789';
const CREDS = { username: 'robot', password: 'hunter2-pass' };

async function listen(server: Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as { port: number }).port;
}

describe('a hostile registry', () => {
  let work: string;
  let hostile: Server;
  let hostileHost: string;
  let handler: Handler;
  let bystander: Server;
  let bystanderPort: number;
  let bystanderConnections = 0;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'hangar-hostile-'));
    hostile = createServer((req, res) => handler(req, res));
    hostileHost = `127.0.0.1:${await listen(hostile)}`;
    bystander = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"bystander":"private content"}'));
    bystander.on('connection', () => bystanderConnections++);
    bystanderPort = await listen(bystander);
  });
  beforeEach(() => {
    bystanderConnections = 0;
  });
  after(async () => {
    hostile?.closeAllConnections();
    hostile?.close();
    bystander?.closeAllConnections();
    bystander?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  const pull = async (image = `${hostileHost}/evil/app:1`) => {
    const svc = createImageService({ root: await mkdtemp(join(work, 'store-')), insecureRegistries: [hostileHost], credentials: { [hostileHost]: CREDS } });
    return svc.pull(image);
  };
  const redirectTo = (location: string): Handler => (_req, res) => res.writeHead(307, { location }).end();
  const bearerRealm = (realm: string): Handler => (_req, res) => res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="evil"` }).end();

  test('a redirect to plain HTTP on another port (the daemon API) is refused and never connected to', async () => {
    handler = redirectTo(`http://127.0.0.1:${bystanderPort}/v1/apps`);
    await assert.rejects(pull(), (err) => {
      assert.ok(isHangarError(err, 'registry_redirect_refused'), String(err));
      assert.match(err.message, /only HTTPS redirects/);
      assert.ok(err.hint);
      return true;
    });
    assert.equal(bystanderConnections, 0);
  });

  test('an HTTPS redirect to a loopback name is refused before connecting', async () => {
    handler = redirectTo(`https://localhost:${bystanderPort}/v1/apps`);
    await assert.rejects(pull(), (err) => {
      assert.ok(isHangarError(err, 'registry_redirect_refused'), String(err));
      assert.match(err.message, /loopback/);
      assert.match(err.hint ?? '', new RegExp(`add localhost:${bystanderPort} to insecure_registries`));
      return true;
    });
    assert.equal(bystanderConnections, 0);
  });

  test('an HTTPS redirect to a link-local or mapped-loopback literal is refused', async () => {
    for (const host of ['169.254.169.254', '[::ffff:127.0.0.1]', '[::1]', '0.0.0.0']) {
      handler = redirectTo(`https://${host}:${bystanderPort}/latest/meta-data/`);
      await assert.rejects(pull(), (err) => isHangarError(err, 'registry_redirect_refused'), host);
    }
    assert.equal(bystanderConnections, 0);
  });

  test('a redirect within the same insecure registry is followed', async () => {
    handler = (req, res) => {
      if (req.url?.endsWith('/manifests/1')) res.writeHead(307, { location: '/v2/evil/app/manifests/elsewhere' }).end();
      else res.writeHead(404).end();
    };
    await assert.rejects(pull(), (err) => isHangarError(err, 'image_not_found'), 'the 404 at the redirect target is what the pull saw');
  });

  test('a bearer realm on another loopback service is refused, over HTTP or HTTPS', async () => {
    for (const realm of [`http://127.0.0.1:${bystanderPort}/token`, `http://localhost:${bystanderPort}/token`, `https://localhost:${bystanderPort}/token`]) {
      handler = bearerRealm(realm);
      await assert.rejects(pull(), (err) => {
        assert.ok(isHangarError(err, 'registry_realm_refused'), `${realm}: ${String(err)}`);
        assert.ok(err.hint);
        return true;
      });
    }
    assert.equal(bystanderConnections, 0, 'the credentials went nowhere');
  });

  test('a huge error body with control characters and echoed secrets is cut short and cleaned', async () => {
    const junk = `\x1b[31mboom\x1b[0m\r\n2026-01-01 FORGED log line\x00\x07 you sent Authorization: Bearer ${TOKEN} and password=${CREDS.password} ` + 'A'.repeat(1 << 20);
    let bytesSent = 0;
    handler = (req, res) => {
      if (req.url?.startsWith('/token')) return res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: TOKEN }));
      if (req.headers.authorization !== `Bearer ${TOKEN}`) return bearerRealm(`http://${hostileHost}/token`)(req, res);
      res.writeHead(500, { 'content-type': 'text/plain' });
      // 64 MiB offered; the client must stop reading long before.
      const write = () => {
        while (bytesSent < 64 << 20) {
          bytesSent += junk.length;
          if (!res.write(junk)) return void res.once('drain', write);
        }
        res.end();
      };
      write();
      res.on('error', () => {});
    };
    await assert.rejects(pull(), (err) => {
      assert.ok(isHangarError(err, 'registry_error'), String(err));
      assert.ok(err.message.length < 400, `message of ${err.message.length} chars`);
      assert.doesNotMatch(err.message, /[\x00-\x1f\x7f]/, 'no control characters');
      assert.ok(!err.message.includes(TOKEN), 'the token is not echoed');
      assert.ok(!err.message.includes(CREDS.password), 'the password is not echoed');
      assert.match(err.message, /answered 500/);
      return true;
    });
    assert.ok(bytesSent < 32 << 20, `the body was not read to its end (${bytesSent} bytes offered)`);
  });

  test('a manifest larger than any real one is refused without reading it all', async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' });
      res.end(Buffer.alloc(16 << 20, 0x20));
    };
    await assert.rejects(pull(), (err) => {
      assert.ok(isHangarError(err, 'registry_error'), String(err));
      assert.match(err.message, /larger than/);
      return true;
    });
  });
});
