import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isHangarError } from '../protocol/errors.ts';
import { writeLayout, type TarEntry } from '../../test/helpers/oci-layout.ts';
import { freePort, pushLayout, registryBlobPath, startRegistry, type TestRegistry } from '../../test/helpers/registry.ts';
import { createImageService } from './index.ts';
import type { PullProgress } from './image-service.ts';

// Pulls from a real registry (docker-registry on loopback) images pushed with skopeo.

const base: TarEntry[] = [
  { name: 'etc/', type: 'directory' },
  { name: 'etc/os-release', content: 'NAME=test\n' },
];

describe('pull from a registry', () => {
  let registry: TestRegistry;
  let work: string;
  const fresh = async () => createImageService({ root: await mkdtemp(join(work, 'store-')), insecureRegistries: [registry.host] });

  before(async () => {
    registry = await startRegistry();
    work = await mkdtemp(join(tmpdir(), 'hangar-pull-'));
  });
  after(async () => {
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('pulls a gzip and a zstd image through an image index, sharing a common layer', async () => {
    const shared = { entries: base, compression: 'gzip' as const };
    const gz = await writeLayout(join(work, 'gz'), 'v1', {
      index: true,
      config: { Cmd: ['/bin/app'], Env: ['A=1'], Labels: { team: 'x' } },
      layers: [shared, { entries: [{ name: 'app.txt', content: 'gzip app\n' }], compression: 'gzip' }],
    });
    const zs = await writeLayout(join(work, 'zs'), 'v1', {
      index: true,
      layers: [shared, { entries: [{ name: 'app.txt', content: 'zstd app\n' }], compression: 'zstd' }],
    });
    await pushLayout(join(work, 'gz'), `${registry.host}/t/gz:v1`, { tag: 'v1' });
    await pushLayout(join(work, 'zs'), `${registry.host}/t/zs:v1`, { tag: 'v1' });

    const svc = await fresh();
    const events: PullProgress[] = [];
    let t = performance.now();
    const a = await svc.pull(`${registry.host}/t/gz:v1`, { onProgress: (p) => events.push(p) });
    const gzMs = performance.now() - t;
    t = performance.now();
    const b = await svc.pull(`${registry.host}/t/zs:v1`, { onProgress: (p) => events.push(p) });
    console.log(`pull gzip image ${gzMs.toFixed(0)} ms, zstd image ${(performance.now() - t).toFixed(0)} ms`);

    assert.equal(a.manifestDigest, gz.manifestDigest, 'the linux/amd64 manifest is chosen from the index');
    assert.equal(b.manifestDigest, zs.manifestDigest);
    assert.deepEqual(a.config.Cmd, ['/bin/app']);
    assert.deepEqual(a.ref, { registry: registry.host, repository: 't/gz', tag: 'v1', digest: gz.manifestDigest, labels: { team: 'x' } });
    assert.equal(await readFile(join(a.layerDirs[1] as string, 'app.txt'), 'utf8'), 'gzip app\n');
    assert.equal(await readFile(join(b.layerDirs[1] as string, 'app.txt'), 'utf8'), 'zstd app\n');
    assert.equal(a.layerDirs[0], b.layerDirs[0], 'the shared layer is one directory');
    const unpacks = events.filter((e) => e.phase === 'unpack' && e.digest === gz.layerDigests[0]);
    assert.equal(unpacks.length, 1, 'the shared layer is unpacked once');
    assert.ok(events.some((e) => e.phase === 'done' && e.name === `${registry.host}/t/zs:v1`));

    assert.deepEqual(await svc.get(`${registry.host}/t/gz:v1`), a);
    assert.deepEqual((await svc.list()).map((i) => i.name), [`${registry.host}/t/gz:v1`, `${registry.host}/t/zs:v1`]);

    await svc.remove(`${registry.host}/t/gz:v1`);
    assert.equal(await svc.get(`${registry.host}/t/gz:v1`), undefined);
    await assert.rejects(stat(a.layerDirs[1] as string), 'the layer only the removed image used is deleted');
    await stat(b.layerDirs[0] as string);
    const inspected = await svc.inspect(`${registry.host}/t/zs:v1`);
    assert.deepEqual(inspected.layerDirs, b.layerDirs);
    await svc.remove(`${registry.host}/t/zs:v1`);
    const root = join(a.layerDirs[0] as string, '..', '..');
    assert.deepEqual(await readdir(join(root, 'layers')), []);
    assert.deepEqual(await readdir(join(root, 'blobs', 'sha256')), []);
  });

  test('a corrupted blob in the registry fails with digest_mismatch and stores nothing', async () => {
    const img = await writeLayout(join(work, 'bad'), 'v1', { layers: [{ entries: [{ name: 'x', content: 'original' }], compression: 'gzip' }] });
    await pushLayout(join(work, 'bad'), `${registry.host}/t/bad:v1`, { tag: 'v1' });
    const blob = registryBlobPath(registry, img.layerDigests[0] as string);
    const bytes = await readFile(blob);
    bytes[bytes.length - 5] = (bytes[bytes.length - 5] as number) ^ 0xff;
    await writeFile(blob, bytes);
    const svc = await fresh();
    await assert.rejects(svc.pull(`${registry.host}/t/bad:v1`), (err) => isHangarError(err, 'digest_mismatch'));
    assert.equal(await svc.get(`${registry.host}/t/bad:v1`), undefined);
  });

  test('a partial download is continued with a Range request and verified', async () => {
    const big = Buffer.alloc(2_000_000);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7919) % 251;
    const img = await writeLayout(join(work, 'big'), 'v1', { layers: [{ entries: [{ name: 'big.bin', content: big }], compression: 'none' }] });
    await pushLayout(join(work, 'big'), `${registry.host}/t/big:v1`, { tag: 'v1' });
    const root = await mkdtemp(join(work, 'store-'));
    const svc = createImageService({ root, insecureRegistries: [registry.host] });
    await svc.list(); // creates the store's directories
    const digest = img.layerDigests[0] as string;
    const seeded = 1_234_567;
    await writeFile(join(root, 'ingest', digest.slice(7)), (img.layerBlobs[0] as Buffer).subarray(0, seeded));
    const downloads: number[] = [];
    const image = await svc.pull(`${registry.host}/t/big:v1`, {
      onProgress: (p) => p.phase === 'download' && downloads.push(p.doneBytes),
    });
    assert.equal(downloads[0], seeded, 'the download starts where the partial file ends');
    assert.equal(downloads.at(-1), img.layerBlobs[0]?.length);
    assert.ok(downloads.every((n) => n >= seeded), 'no byte before the partial end was fetched again');
    assert.deepEqual(await readFile(join(image.layerDirs[0] as string, 'big.bin')), big);
  });

  test('a wrong partial download is thrown away and fetched again from the start', async () => {
    const img = await writeLayout(join(work, 'redo'), 'v1', { layers: [{ entries: [{ name: 'r', content: 'redo'.repeat(1000) }], compression: 'gzip' }] });
    await pushLayout(join(work, 'redo'), `${registry.host}/t/redo:v1`, { tag: 'v1' });
    const root = await mkdtemp(join(work, 'store-'));
    const svc = createImageService({ root, insecureRegistries: [registry.host] });
    await svc.list();
    await writeFile(join(root, 'ingest', (img.layerDigests[0] as string).slice(7)), Buffer.from('garbage'));
    const image = await svc.pull(`${registry.host}/t/redo:v1`);
    assert.equal(await readFile(join(image.layerDirs[0] as string, 'r'), 'utf8'), 'redo'.repeat(1000));
  });

  test('an unknown tag is image_not_found', async () => {
    const svc = await fresh();
    await assert.rejects(svc.pull(`${registry.host}/t/gz:nope`), (err) => {
      assert.ok(isHangarError(err, 'image_not_found'));
      assert.match(err.hint ?? '', /check the tag exists/);
      return true;
    });
    await assert.rejects(svc.pull(`${registry.host}/t/never-pushed:1`), (err) => isHangarError(err, 'image_not_found'));
  });

  test('a closed port is registry_unreachable', async () => {
    const port = await freePort();
    const svc = createImageService({ root: await mkdtemp(join(work, 'store-')), insecureRegistries: [`127.0.0.1:${port}`] });
    await assert.rejects(svc.pull(`127.0.0.1:${port}/t/x:1`), (err) => isHangarError(err, 'registry_unreachable'));
  });

  test('a plain-HTTP registry not listed as insecure gets an error telling how to allow it', async () => {
    const svc = createImageService({ root: await mkdtemp(join(work, 'store-')) });
    await assert.rejects(svc.pull(`${registry.host}/t/gz:v1`), (err) => {
      assert.ok(isHangarError(err, 'registry_unreachable'), String(err));
      assert.match(err.hint ?? '', new RegExp(`add ${registry.host.replace(/\./g, '\\.')} to insecure registries`));
      return true;
    });
  });

  test('bad references are invalid_image_ref', async () => {
    const svc = await fresh();
    for (const ref of ['UPPER/case', 'a b', 'x@sha256:123', 'host:5000/re..po:1', '']) {
      await assert.rejects(svc.pull(ref), (err) => isHangarError(err, 'invalid_image_ref'), ref);
    }
  });
});
