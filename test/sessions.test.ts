import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { cleanupDataDir, HANGAR, http, makeDataDir, startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { waitFor } from './helpers/wait.ts';
import type { Session } from '../src/sdk/index.ts';

// Sessions: commands that outlive the connection that started them and the daemon itself (a
// kill -9 included), with their output kept and read by byte offset; a tty attached to over a
// WebSocket; kill; a stopped machine ends its sessions. Driven through REST, the SDK, the CLI and MCP.

const APP = 'sessions';
const COUNT_TO_50 = 'for i in $(seq 1 50); do echo $i; sleep 0.1; done';

let dataDir: string;
let d: TestDaemon;
let machineId: string;

before(async () => {
  dataDir = await makeDataDir();
  d = await startDaemon(dataDir);
  await d.client.apps.create(APP);
  machineId = (await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] } } })).id;
});
after(async () => {
  await d?.kill().catch(() => undefined);
  if (dataDir) await cleanupDataDir(dataDir);
});

const sessions = () => d.client.sessions;

async function ended(id: string, timeoutMs = 20_000, machine = machineId): Promise<Session> {
  return waitFor(async () => {
    const s = await sessions().get(APP, machine, id);
    return s.state === 'exited' ? s : undefined;
  }, timeoutMs, `session ${id} to end`);
}

/** The output from `offset` as raw NDJSON events, through plain HTTP. */
async function outputEvents(id: string, q = ''): Promise<any[]> {
  const r = await http(d, 'GET', `/v1/apps/${APP}/machines/${machineId}/sessions/${id}/output${q}`);
  assert.equal(r.status, 200, r.text);
  return r.text.trim().split('\n').map((l) => JSON.parse(l));
}

describe('a session outlives its client', () => {
  it('keeps running when the client hangs up; its output is all there, with offsets, readable from any offset', async () => {
    const s = await sessions().start(APP, machineId, ['sh', '-c', COUNT_TO_50], { name: 'count' });
    assert.equal(s.state, 'running');
    // Follow for a moment, then hang up.
    const abort = new AbortController();
    const seen: string[] = [];
    try {
      for await (const e of sessions().follow(APP, machineId, s.id, { signal: abort.signal })) {
        if (e.type === 'output') seen.push(e.data);
        if (seen.join('').includes('3\n')) abort.abort();
      }
    } catch (err) {
      assert.equal((err as Error).name, 'AbortError');
    }
    assert.ok((await sessions().get(APP, machineId, 'count')).state === 'running', 'still running after the client left');

    const done = await ended(s.id);
    assert.equal(done.exit_code, 0);
    assert.equal(done.end_reason, 'exited');
    const expected = Array.from({ length: 50 }, (_, i) => `${i + 1}\n`).join('');
    assert.deepEqual(done.output, { start: 0, end: expected.length });

    const events = await outputEvents(s.id);
    const pieces = events.filter((e) => e.type === 'output');
    let at = 0;
    for (const p of pieces) {
      assert.equal(p.offset, at, 'pieces are contiguous');
      at += p.size;
    }
    assert.equal(pieces.map((p) => p.data).join(''), expected);
    assert.deepEqual(events.at(-1).type, 'end');
    assert.equal(events.at(-1).offset, expected.length);
    assert.equal(events.at(-1).session.exit_code, 0);

    const from = expected.indexOf('10\n');
    const read = await sessions().read(APP, machineId, s.id, { offset: from });
    assert.equal(read.offset, from);
    assert.equal(read.data, expected.slice(from));
    assert.equal(read.nextOffset, expected.length);
    const bounded = await sessions().read(APP, machineId, s.id, { offset: from, maxBytes: 6 });
    assert.equal(bounded.data, '10\n11\n');
    assert.equal(bounded.nextOffset, from + 6);
    const tail = await sessions().read(APP, machineId, s.id, { tailBytes: 3 });
    assert.equal(tail.data, '50\n');

    const past = await http(d, 'GET', `/v1/apps/${APP}/machines/${machineId}/sessions/${s.id}/output?offset=99999`);
    assert.equal(past.status, 400);
    assert.equal(past.body.code, 'validation_failed');
  });

  it('answers an offset older than the scrollback with where it starts', async () => {
    // 10 MB of output: more than the 8 MiB a session keeps.
    const s = await sessions().start(APP, machineId, ['sh', '-c', 'head -c 10000000 /dev/zero | tr "\\0" a; echo; echo done']);
    const done = await ended(s.id);
    assert.equal(done.exit_code, 0);
    assert.ok(done.output.start > 0 && done.output.start % (2 * 2 ** 20) === 0, `scrollback starts at a chunk: ${JSON.stringify(done.output)}`);
    assert.ok(done.output.end - done.output.start <= 8 * 2 ** 20);
    assert.equal(done.output.end, 10_000_000 + 6);
    const events = await outputEvents(s.id, '?offset=0&max_bytes=10');
    assert.deepEqual(events[0], { type: 'gap', from: 0, to: done.output.start });
    assert.equal(events[1].offset, done.output.start);
    const read = await sessions().read(APP, machineId, s.id, { tailBytes: 5 });
    assert.equal(read.data, 'done\n');
  });

  it('records how a command ended, and one that cannot start says why', async () => {
    const s = await sessions().start(APP, machineId, ['sh', '-c', 'echo bye; exit 3']);
    assert.equal((await ended(s.id)).exit_code, 3);
    const missing = await sessions().start(APP, machineId, ['no-such-program']);
    const gone = await ended(missing.id);
    assert.notEqual(gone.exit_code, 0);
    assert.match((await sessions().read(APP, machineId, missing.id)).data, /no-such-program/);
    const list = await sessions().list(APP, machineId);
    assert.ok(list.some((x) => x.id === s.id && x.exit_code === 3), 'listed with its exit code');
    assert.ok(list.findIndex((x) => x.id === missing.id) < list.findIndex((x) => x.id === s.id), 'newest first');
  });

  it('kill ends it (SIGKILL by default, or the signal given) and says so', async () => {
    const s = await sessions().start(APP, machineId, ['sh', '-c', 'echo up; sleep 1000']);
    const killed = await sessions().kill(APP, machineId, s.id);
    assert.equal(killed.state, 'exited');
    assert.equal(killed.exit_code, 137);
    assert.equal(killed.signal, 'SIGKILL');
    assert.equal(killed.end_reason, 'killed');
    const t = await sessions().start(APP, machineId, ['sleep', '1000']);
    const termed = await sessions().kill(APP, machineId, t.id, 'SIGTERM');
    assert.equal(termed.exit_code, 143);
    const again = await http(d, 'POST', `/v1/apps/${APP}/machines/${machineId}/sessions/nope/kill`, {});
    assert.equal(again.status, 404);
    assert.equal(again.body.code, 'session_not_found');
  });

  it('writes to the stdin of a session started with one', async () => {
    const s = await sessions().start(APP, machineId, ['sh', '-c', 'read a; read b; echo "got $a $b"'], { stdin: true });
    await sessions().write(APP, machineId, s.id, 'one\n');
    await sessions().write(APP, machineId, s.id, 'two\n');
    assert.equal((await ended(s.id)).exit_code, 0);
    assert.equal((await sessions().read(APP, machineId, s.id)).data, 'got one two\n');
    const none = await http(d, 'POST', `/v1/apps/${APP}/machines/${machineId}/sessions/${s.id}/input`, { data: 'x' });
    assert.equal(none.status, 409, 'an ended session takes no input');
  });
});

describe('a session outlives the daemon', () => {
  it('keeps running across kill -9 and restart of the daemon; its output continues and its exit is recorded', async () => {
    const s = await sessions().start(APP, machineId, ['sh', '-c', 'for i in $(seq 1 100); do echo $i; sleep 0.1; done; exit 5']);
    await waitFor(async () => ((await sessions().read(APP, machineId, s.id)).data.includes('5\n') ? true : undefined), 10_000, 'first lines');
    await d.kill();
    await new Promise((r) => setTimeout(r, 500)); // it goes on writing with no daemon at all
    d = await startDaemon(dataDir);
    assert.match(d.output(), /sessions: 1 still running/);
    const during = await sessions().get(APP, machineId, s.id);
    assert.equal(during.state, 'running');
    const read = await sessions().read(APP, machineId, s.id);
    const follow: string[] = [read.data];
    let last: any;
    for await (const e of sessions().follow(APP, machineId, s.id, { offset: read.nextOffset })) {
      if (e.type === 'output') follow.push(e.data);
      last = e;
    }
    assert.equal(last.type, 'end');
    assert.equal(last.session.exit_code, 5);
    assert.equal(last.session.end_reason, 'exited');
    assert.equal(follow.join(''), Array.from({ length: 100 }, (_, i) => `${i + 1}\n`).join(''));
  });

  it('one that ended while no daemon ran is recorded as ended with its exit code', async () => {
    const s = await sessions().start(APP, machineId, ['sh', '-c', 'sleep 0.5; exit 4']);
    await d.kill();
    await new Promise((r) => setTimeout(r, 1000));
    d = await startDaemon(dataDir);
    const done = await ended(s.id, 5_000);
    assert.equal(done.exit_code, 4);
    assert.equal(done.end_reason, 'exited');
  });
});

describe('a tty session', () => {
  it('is attached to over a WebSocket: scrollback, then live, with stdin and resize', async () => {
    const s = await d.client.sessions.start(APP, machineId, ['sh'], { tty: true, rows: 30, cols: 100 });
    assert.equal(s.tty, true);
    await sessions().write(APP, machineId, s.id, 'echo before-attach\n');
    await waitFor(async () => ((await sessions().read(APP, machineId, s.id)).data.includes('before-attach\r\n') ? true : undefined), 5000, 'the echo');

    const a = sessions().attach(APP, machineId, s.id);
    let screen = '';
    a.onOutput((data) => (screen += data));
    const until = (re: RegExp) => waitFor(async () => (re.test(screen) ? true : undefined), 5000, `${re} on the screen; got ${JSON.stringify(screen)}`);
    await until(/before-attach\r\n/); // the scrollback came first
    a.write('stty size\n');
    await until(/30 100/);
    a.resize(40, 120);
    await new Promise((r) => setTimeout(r, 200));
    a.write('stty size\n');
    await until(/40 120/);
    a.detach();
    await assert.rejects(a.ended);
    assert.equal((await sessions().get(APP, machineId, s.id)).state, 'running', 'detaching leaves it running');

    const b = sessions().attach(APP, machineId, s.id, { tailBytes: 0 });
    b.write('exit 7\n');
    const end = await b.ended;
    assert.equal(end.exit_code, 7);
  });
});

describe('a stopped machine', () => {
  it('ends its sessions, and says so', async () => {
    const m = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] } } });
    const s = await sessions().start(APP, m.id, ['sleep', '1000']);
    const t = await sessions().start(APP, m.id, ['sh'], { tty: true });
    await d.client.machines.stop(APP, m.id, { timeout: '1s' });
    for (const id of [s.id, t.id]) {
      const done = await ended(id, 10_000, m.id);
      assert.equal(done.end_reason, 'machine_stopped');
    }
    // A new session starts the machine again (autostart), and says so.
    const woke = await http(d, 'POST', `/v1/apps/${APP}/machines/${m.id}/sessions`, { command: ['true'] });
    assert.equal(woke.status, 201);
    assert.equal(woke.headers.get('x-hangar-machine-started'), 'true');
  });
});

describe('the CLI and MCP', () => {
  const cli = async (verb: string, ...args: string[]) =>
    promisify(execFile)(HANGAR, ['sessions', verb, '--app', APP, ...args], { env: { ...process.env, HANGAR_API_URL: d.url, HANGAR_TOKEN: d.token } });

  it('hangar sessions start | list | output [-f] | kill', async () => {
    const started = await cli('start', machineId, '--name', 'cli-count', '--', 'sh', '-c', 'for i in 1 2 3; do echo line$i; sleep 0.2; done');
    const id = started.stdout.trim().split(/\s+/)[0]!;
    assert.match(id, /^ses_/);
    const followed = await cli('output', machineId, id, '-f');
    assert.equal(followed.stdout, 'line1\nline2\nline3\n');
    const listed = await cli('list', machineId);
    assert.match(listed.stdout, new RegExp(`${id}\\s+cli-count\\s+exited\\s+0`));
    const sleeper = (await cli('start', machineId, '--', 'sleep', '1000')).stdout.trim().split(/\s+/)[0]!;
    const killed = await cli('kill', machineId, sleeper);
    assert.match(killed.stdout, /exited.*137/);
  });

  it('MCP: session_start, then session_output polled by offset, session_list, session_kill', async () => {
    const client = new Client({ name: 'hangar-test', version: '1' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${d.token}` } } }));
    try {
      const call = async (name: string, args: Record<string, unknown>) => {
        const r = (await client.callTool({ name, arguments: args })) as CallToolResult;
        assert.ok(!r.isError, `${name}: ${JSON.stringify(r.content)}`);
        return r.structuredContent as any;
      };
      const s = await call('session_start', { app: APP, id: machineId, command: ['sh', '-c', 'echo one; sleep 1; echo two'] });
      let offset = 0;
      let text = '';
      for (let i = 0; i < 20; i++) {
        const out = await call('session_output', { app: APP, id: machineId, session: s.id, offset, wait_s: 2 });
        text += out.output;
        offset = out.next_offset;
        if (out.state === 'exited') {
          assert.equal(out.exit_code, 0);
          break;
        }
      }
      assert.equal(text, 'one\ntwo\n');
      const big = await call('session_start', { app: APP, id: machineId, command: ['sh', '-c', 'seq 1 200000; sleep 1000'] });
      await new Promise((r) => setTimeout(r, 1000));
      const bounded = await call('session_output', { app: APP, id: machineId, session: big.id });
      assert.ok(Buffer.byteLength(bounded.output) <= 16 * 1024, 'a bounded answer by default');
      assert.match(bounded.output, /200000\n$/, 'the latest output when no offset is given');
      const list = await call('session_list', { app: APP, id: machineId });
      assert.ok(list.sessions.some((x: Session) => x.id === big.id && x.state === 'running'));
      const killed = await call('session_kill', { app: APP, id: machineId, session: big.id });
      assert.equal(killed.end_reason, 'killed');
    } finally {
      await client.close();
    }
  });
});
