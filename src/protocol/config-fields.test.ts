import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { isHangarError } from './errors.ts';
import { checkFields, fieldTreeOf, type FieldTree } from './config-fields.ts';
import { FLY_MACHINE_REQUEST_FIELDS } from './fly-machine-fields.ts';
import { checkMachineRequestFields } from './machine-request-fields.ts';

const FLY_DOC = join(import.meta.dirname, '../../test/fixtures/fly/machines-openapi.json');

test("Fly's field tree is the one in Fly's OpenAPI document", () => {
  const doc = JSON.parse(readFileSync(FLY_DOC, 'utf8'));
  const resolve = (ref: string) => doc.components.schemas[ref.split('/').pop()!];
  assert.deepEqual(fieldTreeOf(doc.components.schemas.UpdateMachineRequest, resolve), FLY_MACHINE_REQUEST_FIELDS);
});

test('fields of neither schema are refused with the nearest known one; Fly-only ones are warnings', () => {
  const hangar: FieldTree = { config: { image: true, init: { cmd: true }, services: { internal_port: true }, env: true } };
  const fly: FieldTree = { config: { image: true, init: { cmd: true, swap_size_mb: true }, mounts: { path: true }, processes: { cmd: true } } };
  const r = checkFields({ config: { image: 'x', cmd: ['a'], init: { command: ['a'], swap_size_mb: 5 }, mounts: [{ path: '/d' }], services: [{ internal_pot: 1 }], env: { ANY: 'x' } } }, hangar, fly);
  assert.deepEqual(r.unknown, [
    { path: 'config.cmd', suggestion: 'config.init.cmd' },
    { path: 'config.init.command', suggestion: 'config.init.cmd' },
    { path: 'config.services[0].internal_pot', suggestion: 'config.services.internal_port' },
  ]);
  assert.deepEqual(r.unimplemented, ['config.init.swap_size_mb', 'config.mounts']);
  assert.deepEqual(checkFields({ config: { zzzzzz: 1 } }, hangar, fly).unknown, [{ path: 'config.zzzzzz' }]);
});

test("machine requests: Hangar's own fields pass, Fly's unimplemented ones warn, typos are refused", () => {
  assert.deepEqual(checkMachineRequestFields({ name: 'a', config: { image: 'x', rootfs: { size_gb: 2 }, files: [{ guest_path: '/a', mode: 0o600 }], guest: { cpus: 1 } } }), []);
  const warned = checkMachineRequestFields({ config: { image: 'x', dns: { nameservers: ['1.1.1.1'] }, guest: { gpus: 1 }, mounts: [{ volume: 'vol_1', path: '/data', encrypted: true }] } });
  assert.deepEqual(warned.map((w) => w.split(' ')[0]), ['config.dns', 'config.guest.gpus', 'config.mounts[0].encrypted']);
  assert.throws(() => checkMachineRequestFields({ config: { image: 'x', cmd: ['sleep', '1'] } }), (err) =>
    isHangarError(err, 'validation_failed') && /config\.cmd \(did you mean config\.init\.cmd\?\)/.test(err.message));
});
