import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Machine, MachineFiles } from '../src/sdk/index.ts';
import { withDaemon, http, HANGAR, type TestDaemon } from './helpers/daemon.ts';

// Checkpoints as a robot uses them: capture a machine, break it, roll it back, and find it
// working again; through REST, the SDK, the CLI and MCP. A started machine is captured while it
// writes, and what comes back is whole.

const APP = 'ckpt';
let d: TestDaemon & { close(): Promise<void> };

const sh = (id: string, script: string) => d.client.machines.exec(APP, id, ['sh', '-c', script]);
const busybox = { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] }, rootfs: { size_gb: 2 }, restart: { policy: 'no' as const } };

function hangar(...args: string[]) {
  const r = spawnSync(HANGAR, args, { encoding: 'utf8', env: { ...process.env, HANGAR_DATA_DIR: d.dataDir, HANGAR_APP: APP }, timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function checkpointFiles(machineId: string): Promise<string[]> {
  const dir = join(d.dataDir, 'storage');
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile() && e.parentPath.endsWith(join('checkpoints', machineId))).map((e) => e.name);
}

before(async () => {
  d = await withDaemon();
  await d.client.apps.create(APP);
});

after(async () => {
  await d?.close();
});

describe('checkpoints', () => {
  it('roll a broken machine back to working, and keep the checkpoints taken after', async () => {
    const m = await d.client.machines.create(APP, { config: busybox });
    await sh(m.id, 'mkdir -p /work && echo v1 > /work/state && head -c 5242880 /dev/urandom > /work/blob && md5sum /work/blob > /work/blob.md5');
    const before = await d.client.checkpoints.create(APP, m.id, { name: 'before-upgrade', comment: 'about to wipe /bin' });
    assert.match(before.id, /^ck[0-9a-f]{12}$/);
    assert.equal(before.name, 'before-upgrade');
    assert.equal(before.comment, 'about to wipe /bin');
    assert.equal(before.machine_id, m.id);
    assert.equal(before.parent_id, null);
    assert.ok(before.size_bytes > 5 * 2 ** 20, `size_bytes counts what the machine wrote (${before.size_bytes})`);

    // The robot breaks the machine: no shell, no busybox.
    await sh(m.id, 'echo v2 > /work/state; rm -rf /bin');
    const broken = await d.client.machines.exec(APP, m.id, ['sh', '-c', 'true']).catch((err: Error) => err);
    assert.ok(broken instanceof Error || broken.exit_code !== 0, 'the machine is broken');
    const after = await d.client.checkpoints.create(APP, m.id, { name: 'broken' });
    assert.equal(after.parent_id, before.id, 'a checkpoint names the one before it as parent');

    const restored = await d.client.checkpoints.restore(APP, m.id, 'before-upgrade');
    assert.equal(restored.state, 'started', 'a started machine restarts on the restored disk');
    assert.equal((await sh(m.id, 'cat /work/state')).stdout, 'v1\n');
    assert.equal((await sh(m.id, 'md5sum -c /work/blob.md5')).exit_code, 0);
    const events = await d.client.machines.events(APP, m.id);
    assert.ok(events.some((e) => e.type === 'restore'), 'the restore is in the events');

    const list = await d.client.checkpoints.list(APP, m.id);
    assert.deepEqual(list.map((c) => c.name), ['broken', 'before-upgrade'], 'newest first, later ones kept');
    assert.equal((await d.client.checkpoints.create(APP, m.id)).parent_id, before.id, 'after a restore, the next one descends from it');

    // And forward again: the broken state is one restore away (its init is gone, so it stops).
    await d.client.checkpoints.restore(APP, m.id, after.id);
    await d.client.machines.wait(APP, m.id, 'stopped', { timeoutS: 30 });
    const back = await d.client.checkpoints.restore(APP, m.id, before.id);
    assert.equal(back.state, 'stopped');
    await d.client.machines.start(APP, m.id);
    assert.equal((await sh(m.id, 'cat /work/state')).stdout, 'v1\n');
    await d.client.machines.destroy(APP, m.id, { force: true });
    assert.deepEqual(await checkpointFiles(m.id), [], 'destroy frees the checkpoints too');
  });

  it('capture a machine mid-write whole, leave a stopped machine stopped, and answer errors a robot can act on', async () => {
    const m = await d.client.machines.create(APP, {
      config: { ...busybox, init: { cmd: ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i > /n.tmp; mv /n.tmp /n; done'] } },
    });
    await sh(m.id, 'while [ ! -s /n ]; do sleep 0.05; done');
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await d.client.checkpoints.create(APP, m.id)).id);
    const running = await sh(m.id, 'cat /n');
    assert.ok(Number(running.stdout) > 0, 'the writer kept running through the captures');
    await d.client.machines.stop(APP, m.id);
    for (const id of ids) {
      const restored = await d.client.checkpoints.restore(APP, m.id, id);
      assert.equal(restored.state, 'stopped', 'a stopped machine stays stopped');
      const counter = await new MachineFiles(d.client, APP, m.id).readText('/n');
      assert.match(counter, /^\d+\n$/, `checkpoint ${id} holds a whole counter file`);
    }

    const dup = await http(d, 'POST', `/v1/apps/${APP}/machines/${m.id}/checkpoints`, { name: ids[0] });
    assert.equal(dup.status, 409);
    assert.equal(dup.body.code, 'checkpoint_name_taken');
    const missing = await http(d, 'POST', `/v1/apps/${APP}/machines/${m.id}/checkpoints/nope/restore`);
    assert.equal(missing.status, 404);
    assert.equal(missing.body.code, 'checkpoint_not_found');
    assert.match(missing.body.hint, /checkpoints/);
    const badName = await http(d, 'POST', `/v1/apps/${APP}/machines/${m.id}/checkpoints`, { name: '../x' });
    assert.equal(badName.status, 400);

    await d.client.checkpoints.delete(APP, m.id, ids[0]!);
    assert.equal((await d.client.checkpoints.list(APP, m.id)).length, 4);
    assert.ok(!(await checkpointFiles(m.id)).includes(`${ids[0]}.ext4`), 'delete removes its image');
    await d.client.machines.destroy(APP, m.id, { force: true });
  });

  it('work from the CLI and from MCP', async () => {
    const m = await d.client.machines.create(APP, { config: busybox });
    await sh(m.id, 'echo one > /f');
    const created = hangar('checkpoints', 'create', m.id, '--name', 'cli-one', '--comment', 'from the CLI');
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /cli-one/);
    await sh(m.id, 'echo two > /f');

    const mcp = new Client({ name: 'checkpoint-test', version: '1.0.0' });
    await mcp.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${d.token}` } } }));
    try {
      const listed = await mcp.callTool({ name: 'checkpoint_list', arguments: { app: APP, id: m.id } });
      assert.match(JSON.stringify(listed.content), /cli-one/);
      const taken = await mcp.callTool({ name: 'checkpoint_create', arguments: { app: APP, id: m.id, name: 'mcp-two' } });
      assert.ok(!taken.isError, JSON.stringify(taken.content));
      const restored = await mcp.callTool({ name: 'checkpoint_restore', arguments: { app: APP, id: m.id, checkpoint: 'cli-one' } });
      assert.ok(!restored.isError, JSON.stringify(restored.content));
      const missing = await mcp.callTool({ name: 'checkpoint_restore', arguments: { app: APP, id: m.id, checkpoint: 'nope' } });
      assert.equal(missing.isError, true);
      assert.match(JSON.stringify(missing.content), /checkpoint_not_found/);
    } finally {
      await mcp.close();
    }
    assert.equal((await sh(m.id, 'cat /f')).stdout, 'one\n');

    const list = hangar('checkpoints', 'list', m.id);
    assert.match(list.stdout, /^ID\s+NAME\s+SIZE/m);
    assert.match(list.stdout, /mcp-two[\s\S]*cli-one/);
    const back = hangar('checkpoints', 'restore', m.id, 'mcp-two');
    assert.equal(back.code, 0, back.stderr);
    assert.equal((await sh(m.id, 'cat /f')).stdout, 'two\n');
    const undoable = hangar('machines', 'exec', m.id, '--checkpoint-first', '--', 'sh', '-c', 'echo three > /f');
    assert.equal(undoable.code, 0, undoable.stderr);
    const undo = /undo with: (hangar checkpoints restore \S+ (ck[0-9a-f]{12}) --app \S+)/.exec(undoable.stderr);
    assert.ok(undo, `the CLI says how to undo the command: ${undoable.stderr}`);
    assert.equal(hangar(...undo[1]!.split(' ').slice(1)).code, 0);
    assert.equal((await sh(m.id, 'cat /f')).stdout, 'two\n');
    const usage = hangar('checkpoints', 'restore', m.id);
    assert.equal(usage.code, 1);
    assert.match(usage.stderr, /needs a machine ID and a checkpoint/);
    await d.client.machines.destroy(APP, m.id, { force: true });
    assert.ok(!existsSync(join(d.dataDir, 'machines', m.id)));
  });

  it('fork a running machine into copies that diverge, and fork from a checkpoint', async () => {
    const src = await d.client.machines.create(APP, { config: busybox, name: 'src' });
    await sh(src.id, 'echo base > /which && head -c 3145728 /dev/urandom > /blob && md5sum /blob > /blob.md5');
    const base = await d.client.checkpoints.create(APP, src.id, { name: 'base' });
    await sh(src.id, 'echo later > /which');

    const { machines: forks } = await d.client.machines.fork(APP, src.id, { count: 8, name: 'try' });
    assert.deepEqual(forks.map((f) => f.name), [1, 2, 3, 4, 5, 6, 7, 8].map((i) => `try-${i}`));
    assert.ok(forks.every((f) => f.state === 'started'));
    assert.equal(new Set([src.private_ip, ...forks.map((f) => f.private_ip)]).size, 9, 'each fork has an address of its own');
    for (const [i, f] of forks.entries()) {
      assert.equal((await sh(f.id, 'cat /which')).stdout, 'later\n', 'a fork has the source as it is now');
      assert.equal((await sh(f.id, 'md5sum -c /blob.md5')).exit_code, 0);
      await sh(f.id, `echo fork-${i} > /which`);
    }
    for (const [i, f] of forks.entries()) assert.equal((await sh(f.id, 'cat /which')).stdout, `fork-${i}\n`, 'forks diverge');
    assert.equal((await sh(src.id, 'cat /which')).stdout, 'later\n', 'the source is untouched');

    const cli = hangar('machines', 'fork', src.id, '--checkpoint', 'base', '--skip-launch', '--name', 'from-base');
    assert.equal(cli.code, 0, cli.stderr);
    const fromBase = (await d.client.machines.list(APP)).find((m) => m.name === 'from-base')!;
    assert.equal(fromBase.state, 'created');
    await d.client.machines.start(APP, fromBase.id);
    assert.equal((await sh(fromBase.id, 'cat /which')).stdout, 'base\n', `a fork from checkpoint ${base.id} has what it held`);

    const tooMany = await http(d, 'POST', `/v1/apps/${APP}/machines/${src.id}/fork`, { count: 17 });
    assert.equal(tooMany.status, 400);
    assert.equal(tooMany.body.code, 'validation_failed');
    for (const m of [src, fromBase, ...forks]) await d.client.machines.destroy(APP, m.id, { force: true });
    assert.deepEqual(await readdir(join(d.dataDir, 'storage', 'pool', 'forks')).catch(() => []), [], 'no fork snapshot is left behind');
  });

  it('show what changed: a checkpoint since its parent, or between any two points, with text diffs on request', async () => {
    const m = await d.client.machines.create(APP, { config: busybox });
    await sh(m.id, 'mkdir -p /srv/app /srv/old && printf "one\\ntwo\\n" > /srv/app/config && echo bye > /srv/old/f && echo x > /etc/motd-extra');
    const first = await d.client.checkpoints.create(APP, m.id, { name: 'first' });
    const sinceImage = await d.client.checkpoints.diff(APP, m.id, 'first');
    assert.equal(sinceImage.from, null, 'the first checkpoint compares with the image');
    const added = sinceImage.changes.filter((c) => c.change === 'added').map((c) => c.path);
    for (const p of ['/srv', '/srv/app', '/srv/app/config', '/srv/old/f', '/etc/motd-extra']) assert.ok(added.includes(p), `${p} added: ${added}`);
    assert.equal(sinceImage.changes.find((c) => c.path === '/srv/app/config')?.size, 8);

    await sh(m.id, 'printf "one\\nTWO\\n" > /srv/app/config && rm -r /srv/old && rm /bin/ls && mkdir /srv/new && head -c 2000 /dev/zero > /srv/new/bin');
    const second = await d.client.checkpoints.create(APP, m.id, { name: 'second' });
    const step = await d.client.checkpoints.diff(APP, m.id, 'second', { content: true });
    assert.equal(step.from, first.id);
    assert.equal(step.to, second.id);
    const byPath = new Map(step.changes.map((c) => [c.path, c]));
    assert.equal(byPath.get('/srv/app/config')?.change, 'modified');
    assert.match(byPath.get('/srv/app/config')?.diff ?? '', /-two\n\+TWO/);
    assert.equal(byPath.get('/srv/old')?.change, 'deleted');
    assert.equal(byPath.get('/srv/old')?.type, 'directory');
    assert.ok(!byPath.has('/srv/old/f'), 'a deleted directory is one entry');
    assert.equal(byPath.get('/bin/ls')?.change, 'deleted', 'deleting an image file shows');
    assert.equal(byPath.get('/srv/new/bin')?.size, 2000);
    assert.ok(!byPath.has('/etc/motd-extra'), 'what the step did not touch is not listed');
    assert.equal(byPath.get('/srv/new/bin')?.diff, undefined, 'binary files get no text diff');

    // Against the live filesystem, and bounded.
    await sh(m.id, 'echo live > /srv/live');
    const live = await d.client.checkpoints.diffMachine(APP, m.id, { from: 'second' });
    assert.equal(live.to, 'live');
    assert.deepEqual(live.changes.map((c) => [c.path, c.change]), [['/srv/live', 'added']]);
    const bounded = await d.client.checkpoints.diffMachine(APP, m.id, { limit: 2 });
    assert.equal(bounded.changes.length, 2);
    assert.equal(bounded.truncated, true);

    // A link the machine plants is compared as a link, never followed out of the machine.
    await sh(m.id, 'ln -s /proc/1/root/etc /srv/escape && ln -s ../../../../../../etc /srv/rel');
    const links = await d.client.checkpoints.diffMachine(APP, m.id, { from: 'second' });
    assert.deepEqual(links.changes.filter((c) => c.type === 'symlink').map((c) => c.path), ['/srv/escape', '/srv/rel']);

    const cli = hangar('checkpoints', 'diff', m.id, 'second');
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /^M \/srv\/app\/config/m);
    assert.match(cli.stdout, /^D \/srv\/old\//m);
    await d.client.machines.destroy(APP, m.id, { force: true });
    assert.ok(!existsSync(join(d.dataDir, 'machines', m.id)), 'the views a diff mounted are gone with the machine');
  });

  it('come with an exec that asks for one, so one call can be rolled back', async () => {
    const m = await d.client.machines.create(APP, { config: busybox });
    await sh(m.id, 'echo safe > /state');
    const rest = await d.client.machines.exec(APP, m.id, ['sh', '-c', 'echo broken > /state'], { checkpoint: true });
    assert.match(rest.checkpoint_id ?? '', /^ck[0-9a-f]{12}$/);
    assert.match((await d.client.checkpoints.get(APP, m.id, rest.checkpoint_id!)).comment, /^before: sh -c echo broken/);
    await d.client.checkpoints.restore(APP, m.id, rest.checkpoint_id!);
    assert.equal((await sh(m.id, 'cat /state')).stdout, 'safe\n');

    const streamed = await new Machine(d.client, APP, m).exec(['sh', '-c', 'rm /state; echo gone'], { checkpoint: true }).wait();
    assert.equal(streamed.stdout, 'gone\n');
    assert.ok(streamed.checkpointId, 'the streamed exec reports its checkpoint');

    const mcp = new Client({ name: 'checkpoint-test', version: '1.0.0' });
    await mcp.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${d.token}` } } }));
    try {
      const r = await mcp.callTool({ name: 'machine_exec', arguments: { app: APP, id: m.id, command: ['sh', '-c', 'echo mcp > /state'], checkpoint: true } });
      const data = r.structuredContent as { checkpoint_id?: string };
      assert.equal(data.checkpoint_id, (await d.client.checkpoints.list(APP, m.id))[0]!.id);
      assert.match(JSON.stringify(r.content), /checkpoint_restore/);
    } finally {
      await mcp.close();
    }
    await d.client.checkpoints.restore(APP, m.id, streamed.checkpointId!);
    assert.equal((await sh(m.id, 'cat /state')).stdout, 'safe\n');
    await d.client.machines.destroy(APP, m.id, { force: true });
  });
});
