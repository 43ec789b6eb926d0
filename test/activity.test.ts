import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { cleanupDataDir, makeDataDir, startDaemon, type TestDaemon } from './helpers/daemon.ts';
import type { MachineEvent } from '../src/protocol/schemas.ts';

// Activity as a robot sees it: a command in flight keeps its machine from being stopped as idle,
// a command a stop cuts short says who stopped the machine and why, an exec wakes a stopped
// machine, and config.lifetime stops and destroys machines on time, across daemon restarts.

const APP = 'busy';
let dataDir: string;
let d: TestDaemon;

const IDLE_SERVER = { image: 'hangar/busybox', init: { cmd: ['sh', '-c', 'mkdir -p /srv; exec httpd -f -p 8080 -h /srv'] } };
const SERVICE = { internal_port: 8080, autostop: 'stop', ports: [{ port: 80, handlers: ['http'] }] };
const SLEEPER = { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] }, stop_config: { signal: 'SIGKILL' as const } };

before(async () => {
  dataDir = await makeDataDir();
  d = await startDaemon(dataDir);
  await d.client.apps.create(APP, { settings: { autostop_idle: '2s' } });
});
after(async () => {
  await d?.kill().catch(() => undefined);
  await cleanupDataDir(dataDir);
});

async function stateOf(id: string): Promise<string> {
  const m = (await d.client.machines.list(APP, { includeDeleted: true })).find((x) => x.id === id);
  return m?.state ?? 'destroyed';
}

async function until(id: string, state: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while ((await stateOf(id)) !== state) {
    if (Date.now() > deadline) throw new Error(`machine ${id} not ${state} within ${timeoutMs} ms (it is ${await stateOf(id)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return Date.now();
}

function eventBy(events: MachineEvent[], type: string, source: string): MachineEvent | undefined {
  return events.find((e) => e.type === type && e.source === source);
}

describe('activity', () => {
  // Each on machines of its own and mostly waiting on the daemon's clocks: they run at once. Only
  // the kill -9 below needs the daemon to itself.
  describe('while the daemon runs', { concurrency: true }, () => {
    it('an exec longer than autostop_idle completes, and autostop then stops the machine saying so', async () => {
      const m = await d.client.machines.create(APP, { config: { ...IDLE_SERVER, services: [SERVICE] } as never });
      const r = await d.client.machines.exec(APP, m.id, ['sh', '-c', 'sleep 8; echo done'], { timeoutS: 20 });
      assert.equal(r.exit_code, 0, JSON.stringify(r));
      assert.equal(r.stdout, 'done\n');
      assert.equal(r.stopped, undefined);
      // Idle from now on: autostop goes ahead and says it was autostop.
      await until(m.id, 'stopped', 6_000);
      const stop = eventBy(await d.client.machines.events(APP, m.id), 'stop', 'autostop');
      assert.ok(stop, 'the stop event names autostop');
      assert.equal(stop.request?.limit, '2s');
      assert.equal(eventBy(await d.client.machines.events(APP, m.id), 'stop', 'user'), undefined);
    });

    it('a command cut short by a stop says who stopped the machine', async () => {
      const m = await d.client.machines.create(APP, { config: SLEEPER });
      const run = d.client.machines.execStream(APP, m.id, { command: ['sleep', '30'] });
      await new Promise((r) => setTimeout(r, 1_000));
      await d.client.machines.stop(APP, m.id);
      const r = await run.wait();
      assert.notEqual(r.exitCode, 0);
      assert.equal(r.stopped?.by, 'user');
      assert.equal(r.stopped?.action, 'stop');
      assert.match(r.stopped?.message ?? '', /stopped .* while the command ran/);
      assert.match(r.stopped?.hint ?? '', /run the command again/);
    });

    it('an exec on a stopped machine starts it first and says so; autostart off refuses', async () => {
      const m = await d.client.machines.create(APP, { config: SLEEPER, skip_launch: true } as never);
      await d.client.machines.start(APP, m.id);
      await d.client.machines.stop(APP, m.id);
      const r = await d.client.machines.exec(APP, m.id, ['echo', 'awake']);
      assert.deepEqual([r.exit_code, r.stdout, r.started], [0, 'awake\n', true]);
      assert.equal(await stateOf(m.id), 'started');
      const again = await d.client.machines.exec(APP, m.id, ['true']);
      assert.equal(again.started, undefined, 'no wake when it was started');

      // The streaming exec and the WebSocket console wake it too.
      await d.client.machines.stop(APP, m.id);
      const res = await d.client.raw('POST', `/v1/apps/${APP}/machines/${m.id}/exec/stream`, { command: ['echo', 'streamed'] }, { accept: 'application/x-ndjson' });
      assert.equal(res.headers.get('x-hangar-machine-started'), 'true');
      const exit = JSON.parse((await res.text()).trim().split('\n').at(-1)!);
      assert.deepEqual([exit.type, exit.exit_code, exit.started], ['exit', 0, true]);
      await d.client.machines.stop(APP, m.id);
      const session = d.client.machines.execSession(APP, m.id, { command: ['echo', 'console'] });
      const out = await session.result;
      assert.deepEqual([out.exitCode, out.started], [0, true]);

      const locked = await d.client.machines.create(APP, { config: { ...IDLE_SERVER, services: [{ ...SERVICE, autostop: 'off', autostart: false }] } as never });
      await d.client.machines.stop(APP, locked.id);
      await assert.rejects(d.client.machines.exec(APP, locked.id, ['true']), (err: Error & { code?: string; hint?: string }) => {
        assert.equal(err.code, 'invalid_state');
        assert.match(err.hint ?? '', /start/);
        return true;
      });
    });

    it('idle_stop counts execs as activity, then stops the machine naming the rule', async () => {
      const m = await d.client.machines.create(APP, { config: { ...SLEEPER, lifetime: { idle_stop: '2s' } } as never });
      const r = await d.client.machines.exec(APP, m.id, ['sh', '-c', 'sleep 4; echo ok'], { timeoutS: 20 });
      assert.deepEqual([r.exit_code, r.stdout], [0, 'ok\n']);
      const done = Date.now();
      const stoppedAt = await until(m.id, 'stopped', 6_000);
      assert.ok(stoppedAt - done >= 1_500, `stopped ${stoppedAt - done} ms after the exec, before idle_stop`);
      const stop = eventBy(await d.client.machines.events(APP, m.id), 'stop', 'lifetime');
      assert.deepEqual(stop?.request, { rule: 'idle_stop', limit: '2s' });
    });

    it('a running session holds off idle_stop; a session on a stopped machine starts it', async () => {
      const m = await d.client.machines.create(APP, { config: { ...SLEEPER, lifetime: { idle_stop: '2s' } } as never });
      const s = await d.client.sessions.start(APP, m.id, ['sleep', '4']);
      await new Promise((r) => setTimeout(r, 3_000));
      assert.equal(await stateOf(m.id), 'started', 'kept while the session runs');
      await until(m.id, 'stopped', 8_000);
      const ended = (await d.client.sessions.list(APP, m.id)).find((x) => x.id === s.id);
      assert.equal(ended?.state, 'exited', JSON.stringify(ended));

      const res = await d.client.raw('POST', `/v1/apps/${APP}/machines/${m.id}/sessions`, { command: ['true'] });
      assert.equal(res.status, 201, await res.clone().text());
      assert.equal(res.headers.get('x-hangar-machine-started'), 'true');
    });

    it('max_run stops a busy machine; its MCP exec is an error saying why', async () => {
      const m = await d.client.machines.create(APP, { config: { ...SLEEPER, lifetime: { max_run: '3s' } } as never });
      const mcp = new Client({ name: 'activity-test', version: '1' });
      await mcp.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${d.token}` } } }));
      try {
        const res = (await mcp.callTool({ name: 'machine_exec', arguments: { app: APP, id: m.id, command: ['sleep', '30'] } })) as CallToolResult;
        assert.equal(res.isError, true, JSON.stringify(res));
        const data = res.structuredContent as { stopped?: { by: string; rule: string; message: string } };
        assert.deepEqual([data.stopped?.by, data.stopped?.rule], ['lifetime', 'max_run']);
        assert.match(String((res.content[0] as { text: string }).text), /max_run/);
      } finally {
        await mcp.close();
      }
      await until(m.id, 'stopped', 5_000);
      const stop = eventBy(await d.client.machines.events(APP, m.id), 'stop', 'lifetime');
      assert.deepEqual(stop?.request, { rule: 'max_run', limit: '3s' });
    });

    it('destroy_after_stopped destroys a stopped machine naming the rule', async () => {
      const m = await d.client.machines.create(APP, { config: { ...SLEEPER, lifetime: { destroy_after_stopped: '2s' } } as never });
      await d.client.machines.stop(APP, m.id);
      const stoppedAt = Date.now();
      const goneAt = await until(m.id, 'destroyed', 5_000);
      assert.ok(goneAt - stoppedAt >= 1_500, `destroyed ${goneAt - stoppedAt} ms after the stop`);
      const destroy = eventBy(await d.client.machines.events(APP, m.id), 'destroy', 'lifetime');
      assert.deepEqual(destroy?.request, { rule: 'destroy_after_stopped', limit: '2s' });
    });
  });

  it('lifetime rules keep their clocks across a daemon kill -9', async () => {
    const maxRun = await d.client.machines.create(APP, { config: { ...SLEEPER, lifetime: { max_run: '6s' } } as never });
    const idle = await d.client.machines.create(APP, { config: { ...SLEEPER, lifetime: { idle_stop: '2s' } } as never });
    const doomed = await d.client.machines.create(APP, { config: { ...SLEEPER, lifetime: { destroy_after_stopped: '5s' } } as never });
    await d.client.machines.stop(APP, doomed.id);
    const stoppedAt = Date.now();
    const startedAt = (await d.client.machines.events(APP, maxRun.id)).find((e) => e.status === 'started')!.timestamp;
    await d.kill();
    await new Promise((r) => setTimeout(r, 1_500));
    d = await startDaemon(dataDir);

    const goneAt = await until(doomed.id, 'destroyed', 8_000);
    assert.ok(goneAt - stoppedAt < 7_000, `destroyed ${goneAt - stoppedAt} ms after its stop: the clock restarted`);
    assert.ok(eventBy(await d.client.machines.events(APP, doomed.id), 'destroy', 'lifetime'));
    await until(idle.id, 'stopped', 5_000);
    assert.deepEqual(eventBy(await d.client.machines.events(APP, idle.id), 'stop', 'lifetime')?.request, { rule: 'idle_stop', limit: '2s' });
    await until(maxRun.id, 'stopped', 8_000);
    const stop = eventBy(await d.client.machines.events(APP, maxRun.id), 'stop', 'lifetime')!;
    assert.deepEqual(stop.request, { rule: 'max_run', limit: '6s' });
    assert.ok(stop.timestamp - startedAt < 7_500, `stopped ${stop.timestamp - startedAt} ms after it started: the clock restarted`);
  });
});
