import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyStartExtras, NO_EXTRAS } from './start-extras.ts';

// What a start adds to a bundle comes out again at a later start without it, leaving the bundle
// as create wrote it: a variable the machine had of its own gets its value back.

async function withBundle(fn: (dir: string, read: () => Promise<{ env: string[]; mounts: Array<{ destination: string }>; annotations: Record<string, string> }>) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-extras-'));
  try {
    await writeFile(join(dir, 'config.json'), JSON.stringify({
      annotations: { keep: 'me' },
      process: { env: ['PATH=/bin', 'GH_TOKEN=mine', 'SSL_CERT_FILE=/my/bundle'] },
      mounts: [{ destination: '/proc', type: 'proc', source: 'proc' }],
    }));
    await fn(dir, async () => {
      const c = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
      return { env: c.process.env, mounts: c.mounts, annotations: c.annotations };
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('start extras', () => {
  it('adds env and binds, keeps what the machine set for defaults, and undoes all of it', async () => {
    await withBundle(async (dir, read) => {
      const original = await readFile(join(dir, 'config.json'), 'utf8');
      const extras = {
        env: { GH_TOKEN: 'hangar-sealed-1', NEW: 'hangar-sealed-2' },
        envDefaults: { SSL_CERT_FILE: '/etc/ssl/certs/ca-certificates.crt', NODE_EXTRA_CA_CERTS: '/etc/ssl/certs/ca-certificates.crt' },
        binds: [{ source: join(dir, 'bundle.crt'), destination: '/etc/ssl/certs/ca-certificates.crt' }],
      };
      await applyStartExtras(dir, extras);
      const on = await read();
      assert.deepEqual(on.env.sort(), ['GH_TOKEN=hangar-sealed-1', 'NEW=hangar-sealed-2', 'NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt', 'PATH=/bin', 'SSL_CERT_FILE=/my/bundle']);
      assert.deepEqual(on.mounts.map((m) => m.destination), ['/proc', '/etc/ssl/certs/ca-certificates.crt']);
      assert.equal(on.annotations.keep, 'me');
      // The same extras again write nothing.
      const before = (await stat(join(dir, 'config.json'))).mtimeMs;
      await new Promise((r) => setTimeout(r, 20));
      await applyStartExtras(dir, extras);
      assert.equal((await stat(join(dir, 'config.json'))).mtimeMs, before);
      // Other extras (a secret replaced while the machine was stopped) are written.
      await applyStartExtras(dir, { ...extras, env: { ...extras.env, NEW: 'hangar-sealed-3' } });
      assert.ok((await read()).env.includes('NEW=hangar-sealed-3'));
      await applyStartExtras(dir, NO_EXTRAS);
      assert.deepEqual(JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')), JSON.parse(original));
    });
  });
});
