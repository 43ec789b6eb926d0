import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { request } from 'node:http';
import { withDaemon, HANGAR, type TestDaemon } from './helpers/daemon.ts';
import { waitFor } from './helpers/wait.ts';

// Commands whose output arrives as it is produced, over NDJSON and WebSocket, with stdin, tty,
// timeouts and cancellation; the process list; and `hangar console` driven through tmux.

let d: TestDaemon & { close(): Promise<void> };
let machineId: string;
const APP = 'execs';

type Event = { type: string; data?: string; exit_code?: number; exit_signal?: number; timed_out?: boolean; cancelled?: boolean };

before(async () => {
  d = await withDaemon();
  await d.client.apps.create(APP);
  const m = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] }, env: { WHO: 'robot' } } });
  machineId = m.id;
});
after(async () => {
  await d?.close();
});

function base(id = machineId): string {
  return `${d.url}/v1/apps/${APP}/machines/${id}`;
}

function post(path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(base() + path, {
    method: 'POST',
    headers: { authorization: `Bearer ${d.token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal,
  });
}

/** Reads an NDJSON exec stream, noting when each event arrived. */
async function readEvents(res: Response): Promise<Array<{ at: number; event: Event }>> {
  const t0 = Date.now();
  const out: Array<{ at: number; event: Event }> = [];
  let buffer = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += Buffer.from(chunk).toString('utf8');
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      out.push({ at: Date.now() - t0, event: JSON.parse(buffer.slice(0, nl)) as Event });
      buffer = buffer.slice(nl + 1);
    }
  }
  return out;
}

async function processCount(pattern: RegExp): Promise<number> {
  const ps = await d.client.machines.ps(APP, machineId);
  return ps.filter((p) => pattern.test(p.command)).length;
}

type Socket = { messages: Event[]; closed: Promise<{ code: number; reason: string }>; ws: WebSocket; next: (pred: (e: Event) => boolean) => Promise<Event> };

function openSocket(id = machineId): Promise<Socket> {
  const Ctor = WebSocket as unknown as new (url: string, init: object) => WebSocket;
  const ws = new Ctor(base(id).replace(/^http/, 'ws') + '/exec/ws', { headers: { authorization: `Bearer ${d.token}` } });
  const messages: Event[] = [];
  const listeners: Array<() => void> = [];
  ws.addEventListener('message', (e) => {
    messages.push(JSON.parse(String(e.data)) as Event);
    listeners.splice(0).forEach((l) => l());
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.addEventListener('close', (e) => resolve({ code: e.code, reason: e.reason })));
  const next = async (pred: (e: Event) => boolean) => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const found = messages.find(pred);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no matching message; got ${JSON.stringify(messages)}`);
      await new Promise<void>((r) => {
        listeners.push(r);
        setTimeout(r, 200);
      });
    }
  };
  return new Promise((resolve, reject) => {
    ws.addEventListener('open', () => resolve({ messages, closed, ws, next }));
    ws.addEventListener('error', () => reject(new Error('websocket failed to open')));
  });
}

function output(messages: Event[]): string {
  return messages.filter((m) => m.type === 'stdout' || m.type === 'stderr').map((m) => m.data).join('');
}

describe('streaming exec over HTTP (NDJSON)', () => {
  it('delivers stdout and stderr as they are produced, then the exit event', async () => {
    const res = await post('/exec/stream', {
      command: ['sh', '-c', 'for i in 1 2 3; do echo out $i; echo err $i >&2; sleep 0.4; done; echo $WHO $EXTRA; pwd; exit 3'],
      env: { EXTRA: 'x1' },
      cwd: '/tmp',
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/x-ndjson');
    const events = await readEvents(res);
    const text = (type: string) => events.filter((e) => e.event.type === type).map((e) => e.event.data).join('');
    assert.equal(text('stdout'), 'out 1\nout 2\nout 3\nrobot x1\n/tmp\n');
    assert.equal(text('stderr'), 'err 1\nerr 2\nerr 3\n');
    assert.deepEqual(events.at(-1)!.event, { type: 'exit', exit_code: 3, timed_out: false, cancelled: false });
    const first = events.find((e) => e.event.data === 'out 1\n')!;
    const last = events.find((e) => e.event.data?.startsWith('out 3'))!;
    assert.ok(last.at - first.at >= 600, `output arrived as produced (${first.at} ms, then ${last.at} ms)`);
  });

  it('feeds stdin and keeps multi-byte characters whole', async () => {
    const events = await readEvents(await post('/exec/stream', { command: ['sh', '-c', 'cat; printf "\\303"; sleep 0.2; printf "\\251\\n"'], stdin: 'héllo → wörld\n' }));
    assert.equal(events.filter((e) => e.event.type === 'stdout').map((e) => e.event.data).join(''), 'héllo → wörld\né\n');
  });

  it('kills a command at its timeout and says so', async () => {
    const t0 = Date.now();
    const events = await readEvents(await post('/exec/stream', { command: ['sh', '-c', 'echo begun; sleep 4242; echo never'], timeout: 1 }));
    const exit = events.at(-1)!.event;
    assert.equal(exit.type, 'exit');
    assert.equal(exit.timed_out, true);
    assert.equal(exit.exit_signal, 9);
    assert.ok(Date.now() - t0 < 5000, 'killed at the timeout, not later');
    assert.ok(!events.some((e) => e.event.data?.includes('never')));
    assert.equal(await processCount(/sleep 4242/), 0, 'the command and its children are gone');
  });

  it('kills the command when the client goes away', async () => {
    const abort = new AbortController();
    const res = await post('/exec/stream', { command: ['sh', '-c', 'echo begun; exec sleep 4343'] }, abort.signal);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    assert.equal(await processCount(/sleep 4343/), 1);
    abort.abort();
    await waitFor(async () => ((await processCount(/sleep 4343/)) === 0 ? true : undefined), 5000, 'the abandoned command is killed');
  });

  it('refuses bad requests with a code and a hint before streaming', async () => {
    const noCommand = await post('/exec/stream', { command: [] });
    assert.equal(noCommand.status, 400);
    assert.equal(((await noCommand.json()) as { code: string }).code, 'validation_failed');

    const stopped = await d.client.machines.create(APP, { skip_launch: true, config: { image: 'hangar/busybox' } });
    const res = await fetch(`${base(stopped.id)}/exec/stream`, {
      method: 'POST',
      headers: { authorization: `Bearer ${d.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command: ['true'] }),
    });
    assert.equal(res.status, 409);
    const body = (await res.json()) as { code: string; hint: string };
    assert.equal(body.code, 'invalid_state');
    assert.match(body.hint, /start/);

    const ps = await fetch(`${base(stopped.id)}/ps`, { headers: { authorization: `Bearer ${d.token}` } });
    assert.equal(ps.status, 409);
  });
});

describe('exec over WebSocket', () => {
  it('sends stdin, closes it, and ends with the exit event and a normal close', async () => {
    const s = await openSocket();
    s.ws.send(JSON.stringify({ type: 'start', command: ['sh', '-c', 'while read l; do echo "got $l"; done; echo eof; exit 5'] }));
    s.ws.send(JSON.stringify({ type: 'stdin', data: 'one\n' }));
    await s.next((m) => m.data === 'got one\n');
    s.ws.send(JSON.stringify({ type: 'stdin', data: 'two\n' }));
    s.ws.send(JSON.stringify({ type: 'stdin_close' }));
    const exit = await s.next((m) => m.type === 'exit');
    assert.deepEqual(exit, { type: 'exit', exit_code: 5, timed_out: false, cancelled: false });
    assert.equal(output(s.messages), 'got one\ngot two\neof\n');
    assert.equal((await s.closed).code, 1000);
  });

  it('kills the command on request', async () => {
    const s = await openSocket();
    s.ws.send(JSON.stringify({ type: 'start', command: ['sh', '-c', 'echo begun; exec sleep 4444'] }));
    await s.next((m) => m.data === 'begun\n');
    s.ws.send(JSON.stringify({ type: 'kill' }));
    const exit = await s.next((m) => m.type === 'exit');
    assert.equal(exit.cancelled, true);
    assert.equal(await processCount(/sleep 4444/), 0);
  });

  it('gives a tty its size, resizes it, passes Ctrl-C through and returns the exit code', async () => {
    const s = await openSocket();
    s.ws.send(JSON.stringify({ type: 'start', command: ['sh'], tty: true, rows: 33, cols: 101 }));
    await s.next(() => output(s.messages).includes('# '));
    s.ws.send(JSON.stringify({ type: 'stdin', data: 'stty size; tty\n' }));
    await s.next(() => /33 101\r\n\/dev\/pts\/\d+/.test(output(s.messages)));
    assert.equal(output(s.messages).match(/stty size; tty/g)?.length, 1, 'what is typed is echoed once');
    s.ws.send(JSON.stringify({ type: 'resize', rows: 50, cols: 150 }));
    await new Promise((r) => setTimeout(r, 200));
    s.ws.send(JSON.stringify({ type: 'stdin', data: 'stty size; sleep 4545\n' }));
    await s.next(() => output(s.messages).includes('50 150'));
    await waitFor(async () => ((await processCount(/sleep 4545/)) === 1 ? true : undefined), 5000, 'sleep runs');
    s.ws.send(JSON.stringify({ type: 'stdin', data: '\x03' }));
    await waitFor(async () => ((await processCount(/sleep 4545/)) === 0 ? true : undefined), 5000, 'Ctrl-C interrupts the foreground command');
    s.ws.send(JSON.stringify({ type: 'stdin', data: 'exit 7\n' }));
    const exit = await s.next((m) => m.type === 'exit');
    assert.equal(exit.exit_code, 7);
  });

  it('answers a bad start with an error message and close code 1008, and plain GETs with a hint', async () => {
    const s = await openSocket();
    s.ws.send(JSON.stringify({ type: 'start' }));
    const err = (await s.next((m) => m.type === 'error')) as Event & { code: string; hint: string };
    assert.equal(err.code, 'validation_failed');
    assert.ok(err.hint);
    assert.equal((await s.closed).code, 1008);

    const plain = await fetch(`${base()}/exec/ws`, { headers: { authorization: `Bearer ${d.token}` } });
    assert.equal(plain.status, 400);
    assert.match(((await plain.json()) as { hint: string }).hint, /WebSocket/);

    const noToken = await new Promise<number>((resolve, reject) => {
      const req = request(`${base()}/exec/ws`, { headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' } });
      req.on('response', (res) => resolve(res.statusCode ?? 0));
      req.on('upgrade', () => reject(new Error('upgraded without a token')));
      req.on('error', reject);
      req.end();
    });
    assert.equal(noToken, 401);
  });
});

describe('GET …/ps', () => {
  it('lists processes with machine pids, memory and listening sockets, sorted as asked', async () => {
    const started = await d.client.machines.exec(APP, machineId, ['sh', '-c', '(httpd -f -p 127.0.0.1:9191 </dev/null >/dev/null 2>&1 &) ; sleep 0.3']);
    assert.equal(started.exit_code, 0, started.stderr);
    const ps = await d.client.machines.ps(APP, machineId);
    const init = ps.find((p) => p.pid === 1)!;
    assert.match(init.command, /sleep inf/);
    assert.ok(init.rss > 0);
    assert.equal(init.directory, '/');
    const httpd = ps.find((p) => p.command.startsWith('httpd'))!;
    assert.deepEqual(httpd.listen_sockets, [{ proto: 'tcp', address: '127.0.0.1:9191' }]);
    const byRss = await d.client.machines.ps(APP, machineId, { sortBy: 'rss', order: 'desc' });
    assert.deepEqual(byRss.map((p) => p.rss), [...byRss.map((p) => p.rss)].sort((a, b) => b - a));
  });
});

describe('hangar console (under tmux)', () => {
  const socket = `hangar-test-${process.pid}`;
  const tmux = (...args: string[]) => execFileSync('tmux', ['-L', socket, ...args], { encoding: 'utf8' });
  const screen = () => tmux('capture-pane', '-p', '-t', 'console');
  const until = async (what: string, pred: (s: string) => boolean) => {
    await waitFor(async () => (pred(screen()) ? true : undefined), 10_000, what).catch((err: Error) => {
      throw new Error(`${err.message}; screen:\n${screen()}`);
    });
  };
  after(() => {
    // Our own tmux server, on its own socket: ending it ends nothing else.
    try {
      tmux('kill-server');
    } catch {
      // already gone
    }
  });

  it('runs a shell with the window size, follows resizes, passes Ctrl-C and exits with the code', async () => {
    const cmd = `HANGAR_DATA_DIR=${d.dataDir} HANGAR_APP=${APP} ${HANGAR} console ${machineId}; echo "console-exit=$?"; sleep 600`;
    tmux('new-session', '-d', '-s', 'console', '-x', '100', '-y', '30', cmd);
    tmux('set-option', '-t', 'console', 'window-size', 'manual');
    await until('the shell prompt', (s) => /# ?$/m.test(s));
    tmux('send-keys', '-t', 'console', 'stty size', 'Enter');
    await until('the first size', (s) => s.includes('30 100'));
    tmux('resize-window', '-t', 'console', '-x', '120', '-y', '40');
    await new Promise((r) => setTimeout(r, 300));
    tmux('send-keys', '-t', 'console', 'stty size; sleep 4646', 'Enter');
    await until('the new size', (s) => s.includes('40 120'));
    await waitFor(async () => ((await processCount(/sleep 4646/)) === 1 ? true : undefined), 5000, 'sleep runs');
    tmux('send-keys', '-t', 'console', 'C-c');
    await waitFor(async () => ((await processCount(/sleep 4646/)) === 0 ? true : undefined), 5000, 'Ctrl-C interrupts it');
    tmux('send-keys', '-t', 'console', 'exit 9', 'Enter');
    await until('the exit code', (s) => s.includes('console-exit=9'));
  });
});
