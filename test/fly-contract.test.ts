import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Ajv, type ValidateFunction } from 'ajv';
import { withDaemon, http, type TestDaemon } from './helpers/daemon.ts';

// A client written for Fly must work against Hangar unchanged: every request below is valid
// against Fly's published Machines API schemas, and every response must be too.

const spec = JSON.parse(readFileSync(new URL('./fixtures/fly/machines-openapi.json', import.meta.url), 'utf8')) as {
  components: { schemas: Record<string, object> };
};
const ajv = new Ajv({ strict: false, allErrors: true });
ajv.addSchema({ $id: 'fly.json', components: spec.components });
const schema = (name: string): ValidateFunction => ajv.compile({ $ref: `fly.json#/components/schemas/${name}` });
const arrayOf = (name: string): ValidateFunction => ajv.compile({ type: 'array', items: { $ref: `fly.json#/components/schemas/${name}` } });

function conforms(validate: ValidateFunction, value: unknown, what: string): void {
  assert.ok(validate(value), `${what} does not match Fly's schema: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(value).slice(0, 500)}`);
}

async function call(method: string, path: string, body: unknown, requestSchema: string | undefined, responseSchema: ValidateFunction | undefined, status = 200) {
  if (requestSchema && body !== undefined) conforms(schema(requestSchema), body, `request ${method} ${path}`);
  const res = await http(d, method, path, body);
  assert.equal(res.status, status, `${method} ${path}: ${res.text}`);
  if (responseSchema) conforms(responseSchema, res.body, `response ${method} ${path}`);
  return res.body;
}

let d: TestDaemon & { close(): Promise<void> };
before(async () => {
  d = await withDaemon();
});
after(async () => {
  await d?.close();
});

describe("Fly Machines API contract", () => {
  it('apps, machines, actions, leases, metadata, events and errors match Fly\'s schemas', async () => {
    await call('POST', '/v1/apps', { app_name: 'flyapp', org_slug: 'personal' }, 'CreateAppRequest', schema('App'), 201);
    await call('GET', '/v1/apps?org_slug=personal', undefined, undefined, schema('ListAppsResponse'));
    await call('GET', '/v1/apps/flyapp', undefined, undefined, schema('App'));

    const create = {
      name: 'contract',
      region: 'local',
      config: {
        image: 'hangar/busybox',
        env: { A: 'b' },
        guest: { cpus: 1, memory_mb: 256, cpu_kind: 'shared' },
        init: { cmd: ['sh', '-c', 'trap "echo got usr1" USR1; while true; do sleep 1; done'] },
        restart: { policy: 'on-failure', max_retries: 3 },
        metadata: { fly_platform_version: 'v2' },
        services: [{ protocol: 'tcp', internal_port: 8080, ports: [{ port: 80, handlers: ['http'] }] }],
        stop_config: { signal: 'SIGTERM', timeout: { 'time.Duration': 2_000_000_000 } },
      },
    };
    const m = await call('POST', '/v1/apps/flyapp/machines', create, 'CreateMachineRequest', schema('Machine'));
    assert.deepEqual(m.config.services, create.config.services, 'Fly config fields Hangar does not act on round-trip');
    const base = `/v1/apps/flyapp/machines/${m.id}`;
    await call('GET', '/v1/apps/flyapp/machines', undefined, undefined, arrayOf('Machine'));
    await call('GET', base, undefined, undefined, schema('Machine'));
    await call('POST', `${base}/exec`, { command: ['echo', 'hi'], timeout: 10 }, 'MachineExecRequest', schema('flydv1.ExecResponse'));
    await call('POST', `${base}/signal`, { signal: 'SIGUSR1' }, 'SignalRequest', undefined);
    await call('GET', `${base}/events`, undefined, undefined, arrayOf('MachineEvent'));
    await call('GET', `${base}/metadata`, undefined, undefined, ajv.compile({ type: 'object', additionalProperties: { type: 'string' } }));
    await call('POST', `${base}/metadata/owner`, { value: 'robot' }, undefined, undefined, 204);

    const lease = await call('POST', `${base}/lease`, { ttl: 30, description: 'contract' }, 'CreateLeaseRequest', schema('Lease'));
    await call('GET', `${base}/lease`, undefined, undefined, schema('Lease'));
    const released = await http(d, 'DELETE', `${base}/lease`, undefined, { 'fly-machine-lease-nonce': lease.nonce });
    assert.equal(released.status, 200, released.text);

    await call('POST', `${base}/stop`, { signal: 'SIGTERM', timeout: { 'time.Duration': 1_000_000_000 } }, 'StopRequest', undefined);
    await call('GET', `${base}/wait?state=stopped&timeout=10`, undefined, undefined, undefined);
    await call('POST', `${base}/start`, undefined, undefined, undefined);
    await call('GET', `${base}/wait?state=started&timeout=10`, undefined, undefined, undefined);
    const update = { ...create, config: { ...create.config, env: { A: 'c' } } };
    const updated = await call('POST', base, update, 'UpdateMachineRequest', schema('Machine'));
    assert.notEqual(updated.instance_id, m.instance_id);
    await call('POST', `${base}/cordon`, undefined, undefined, undefined);
    await call('POST', `${base}/uncordon`, undefined, undefined, undefined);
    await call('POST', `${base}/restart`, undefined, undefined, undefined);

    const errors = schema('ErrorResponse');
    const conflict = await http(d, 'POST', `${base}/start`);
    assert.equal(conflict.status, 409);
    conforms(errors, conflict.body, 'error response');
    conforms(errors, (await http(d, 'GET', '/v1/apps/flyapp/machines/ffffffffffffff')).body, 'error response');

    await call('DELETE', `${base}?force=true`, undefined, undefined, undefined);
    await call('DELETE', '/v1/apps/flyapp', undefined, undefined, undefined, 202);
  });

  it("volumes: create, list, get, update, extend, snapshots, fork, restore and mount match Fly's schemas", async () => {
    await call('POST', '/v1/apps', { app_name: 'flyvols', org_slug: 'personal' }, 'CreateAppRequest', schema('App'), 201);
    const base = '/v1/apps/flyvols/volumes';
    const v = await call('POST', base, { name: 'data', size_gb: 1, region: 'local', encrypted: false, require_unique_zone: false }, 'CreateVolumeRequest', schema('Volume'));
    await call('GET', base, undefined, undefined, arrayOf('Volume'));
    await call('GET', `${base}/${v.id}`, undefined, undefined, schema('Volume'));
    await call('PUT', `${base}/${v.id}`, { snapshot_retention: 7 }, 'UpdateVolumeRequest', schema('Volume'));
    await call('POST', `${base}/${v.id}`, { auto_backup_enabled: false }, 'UpdateVolumeRequest', schema('Volume'));

    const machine = {
      config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] }, mounts: [{ volume: v.id, path: '/data', name: 'data' }] },
    };
    const m = await call('POST', '/v1/apps/flyvols/machines', machine, 'CreateMachineRequest', schema('Machine'));
    assert.deepEqual(m.config.mounts, machine.config.mounts, 'mounts round-trip');
    const attached = await call('GET', `${base}/${v.id}`, undefined, undefined, schema('Volume'));
    assert.equal(attached.attached_machine_id, m.id);
    const extended = await call('PUT', `${base}/${v.id}/extend`, { size_gb: 2 }, 'ExtendVolumeRequest', schema('ExtendVolumeResponse'));
    assert.equal(extended.volume.size_gb, 2);
    await call('POST', `${base}/${v.id}/snapshots`, undefined, undefined, schema('VolumeSnapshot'));
    const [snapshot] = await call('GET', `${base}/${v.id}/snapshots`, undefined, undefined, arrayOf('VolumeSnapshot'));
    const restored = await call('POST', base, { name: 'restored', snapshot_id: snapshot.id }, 'CreateVolumeRequest', schema('Volume'));
    const forked = await call('POST', base, { name: 'forked', source_volume_id: v.id }, 'CreateVolumeRequest', schema('Volume'));

    const errors = schema('ErrorResponse');
    conforms(errors, (await http(d, 'GET', `${base}/vol_0000000000000000`)).body, 'error response');
    await call('DELETE', `/v1/apps/flyvols/machines/${m.id}?force=true`, undefined, undefined, undefined);
    for (const id of [v.id, restored.id]) await call('DELETE', `${base}/${id}`, undefined, undefined, schema('Volume'));
    // Like Fly, deleting the app deletes the volumes it still has.
    await call('DELETE', '/v1/apps/flyvols', undefined, undefined, undefined, 202);
    assert.equal((await http(d, 'GET', `${base}/${forked.id}`)).status, 404);
  });
});
