import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { describe, test } from 'node:test';
import { fetch } from 'undici';
import { isPublicAddress, publicOnlyAgent, realmRefusal, redirectRefusal, RefusedAddressError, resolvePublic, type PullOrigins } from './registry-target.ts';

// The rules of registry-target.ts on their own; registry-hostile.test.ts drives them through a pull.

const insecureLocal: PullOrigins = { registryHost: '127.0.0.1:5000', registryInsecure: true, insecureRegistries: ['127.0.0.1:5000', 'tokens.lan:8080'] };
const hub: PullOrigins = { registryHost: 'registry-1.docker.io', registryInsecure: false, insecureRegistries: [] };

describe('registry targets', () => {
  test('only globally routed addresses are public', () => {
    for (const a of ['127.0.0.1', '10.1.2.3', '172.29.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '224.0.0.1', '255.255.255.255',
      '::1', '::', 'fe80::1', 'fd00::1', '::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:a9fe:a9fe', '64:ff9b::a9fe:a9fe', '2002:7f00:1::1', 'not-an-ip']) {
      assert.equal(isPublicAddress(a), false, a);
    }
    for (const a of ['1.1.1.1', '93.184.216.34', '2606:4700:4700::1111', '::ffff:1.1.1.1']) assert.equal(isPublicAddress(a), true, a);
  });

  test('a name is refused if any of its addresses is not public', async () => {
    await assert.rejects(resolvePublic('localhost'), (err) => err instanceof RefusedAddressError && err.hostname === 'localhost');
    await assert.rejects(resolvePublic('[::1]'), RefusedAddressError);
    assert.deepEqual(await resolvePublic('1.1.1.1'), { address: '1.1.1.1', family: 4 });
  });

  test('redirects go to HTTPS, or over HTTP only to the same insecure registry', () => {
    assert.equal(redirectRefusal(new URL('https://cdn.example.com/blob'), hub), undefined);
    assert.match(redirectRefusal(new URL('http://cdn.example.com/blob'), hub) ?? '', /only HTTPS/);
    assert.equal(redirectRefusal(new URL('http://127.0.0.1:5000/v2/x'), insecureLocal), undefined);
    assert.ok(redirectRefusal(new URL('http://127.0.0.1:4280/v1/apps'), insecureLocal));
    assert.ok(redirectRefusal(new URL('http://tokens.lan:8080/x'), insecureLocal), 'another insecure registry is not the same one');
    assert.ok(redirectRefusal(new URL('file:///etc/passwd'), insecureLocal));
  });

  test('realms are HTTPS, or plain HTTP on a registry listed as insecure', () => {
    assert.equal(realmRefusal(new URL('https://auth.docker.io/token'), hub), undefined);
    assert.ok(realmRefusal(new URL('http://registry-1.docker.io/token'), hub), 'not over HTTP for an HTTPS registry');
    assert.equal(realmRefusal(new URL('http://127.0.0.1:5000/token'), insecureLocal), undefined);
    assert.equal(realmRefusal(new URL('http://tokens.lan:8080/token'), insecureLocal), undefined);
    assert.ok(realmRefusal(new URL('http://127.0.0.1:4280/token'), insecureLocal));
    assert.ok(realmRefusal(new URL('http://localhost:5000/token'), insecureLocal));
  });

  test('the socket goes to the address that was checked, never to a second lookup', async () => {
    const server = createServer((_req, res) => res.end('reached'));
    let connections = 0;
    server.on('connection', () => connections++);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as { port: number }).port;
    const asked: string[] = [];
    // `.invalid` never resolves: reaching the server proves the checked answer was the one used.
    const agent = publicOnlyAgent(async (hostname) => {
      asked.push(hostname);
      if (hostname === 'checked.invalid') return { address: '127.0.0.1', family: 4 };
      throw new RefusedAddressError(hostname, '127.0.0.1');
    });
    try {
      const res = await fetch(`http://checked.invalid:${port}/`, { dispatcher: agent });
      assert.equal(await res.text(), 'reached');
      await assert.rejects(fetch(`http://refused.invalid:${port}/`, { dispatcher: agent }), (err: Error) => err.cause instanceof RefusedAddressError);
      assert.deepEqual(asked, ['checked.invalid', 'refused.invalid']);
      assert.equal(connections, 1, 'the refused name was never connected to');
    } finally {
      await agent.close();
      server.close();
    }
  });
});
