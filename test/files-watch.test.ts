import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ResourceUpdatedNotificationSchema, type CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { Hangar, HangarApiError, type FileWatch, type FileWatchEvent, type Machine } from '../src/sdk/index.ts';
import { http, withDaemon, type TestDaemon } from './helpers/daemon.ts';

// Watching a machine's files as a robot does: changes made inside the machine (by an exec, as its
// own programs would) arrive as create/modify/delete/rename with paths as the machine sees them;
// no path, symlink or race leads a watch outside the machine.

const APP = 'watch';
let d: TestDaemon & { close(): Promise<void> };
let hangar: Hangar;
let m: Machine;

before(async () => {
  d = await withDaemon();
  hangar = new Hangar({ baseUrl: d.url, token: d.token });
  await hangar.apps.create(APP);
  m = await hangar.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });
});
after(async () => {
  await d?.close();
});

const sh = async (script: string, machine = m) => {
  const r = await d.client.machines.exec(APP, machine.id, ['sh', '-c', script]);
  assert.equal(r.exit_code, 0, `${script}: ${r.stderr}`);
  return r.stdout;
};

/** Events from `watch` until `done` says the wanted ones have come; fails after timeoutMs. */
async function collect(watch: FileWatch, done: (events: FileWatchEvent[]) => boolean, timeoutMs = 10_000): Promise<FileWatchEvent[]> {
  const events: FileWatchEvent[] = [];
  const iterator = watch[Symbol.asyncIterator]();
  const deadline = Date.now() + timeoutMs;
  while (!done(events)) {
    const left = deadline - Date.now();
    const next = await Promise.race([iterator.next(), new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), Math.max(0, left)))]);
    if (next === 'timeout') assert.fail(`timed out; saw ${JSON.stringify(events)}`);
    if (next.done) assert.fail(`the watch ended (${watch.endReason}); saw ${JSON.stringify(events)}`);
    events.push(next.value);
  }
  return events;
}

const has = (type: string, path: string, from?: string) => (events: FileWatchEvent[]) =>
  events.some((e) => e.type === type && 'path' in e && e.path === path && (from === undefined || (e.type === 'rename' && e.from === from)));

async function refused(p: Promise<unknown>, code: string, what: string): Promise<HangarApiError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof HangarApiError, `${what}: ${String(err)}`);
    assert.equal(err.code, code, `${what}: ${err.message}`);
    assert.ok(err.hint, `${what}: has a hint`);
    return err;
  }
  assert.fail(`${what}: was not refused`);
}

describe('watching files', () => {
  it('sees a file an exec writes, modifies, renames and deletes', async () => {
    await sh('mkdir -p /w && echo old > /w/kept');
    const watch = await m.files.watch('/w');
    try {
      assert.equal(watch.path, '/w');
      await sh('echo hi > /w/a.txt');
      const created = await collect(watch, has('create', '/w/a.txt'));
      assert.deepEqual(created.find((e) => e.type === 'create'), { type: 'create', path: '/w/a.txt', kind: 'file' });
      await sh('echo more >> /w/kept');
      await collect(watch, has('modify', '/w/kept'));
      await sh('mv /w/a.txt /w/b.txt');
      const renamed = await collect(watch, has('rename', '/w/b.txt', '/w/a.txt'));
      assert.deepEqual(renamed.filter((e) => e.type !== 'modify'), [{ type: 'rename', path: '/w/b.txt', from: '/w/a.txt', kind: 'file' }], 'one rename, not a delete and a create');
      await sh('rm /w/b.txt');
      assert.deepEqual(await collect(watch, has('delete', '/w/b.txt')), [{ type: 'delete', path: '/w/b.txt', kind: 'file' }]);
      // Written elsewhere, then moved in; and a temp file renamed over a file, as editors save.
      await sh('echo x > /tmp-in && mv /tmp-in /w/moved-in && echo new > /w/.kept.tmp && mv /w/.kept.tmp /w/kept');
      const saved = await collect(watch, has('rename', '/w/kept', '/w/.kept.tmp'));
      assert.ok(has('create', '/w/moved-in')(saved), JSON.stringify(saved));
    } finally {
      watch.close();
    }
  });

  it('watches recursively, including directories made after it started', async () => {
    await sh('mkdir -p /r/old');
    const watch = await m.files.watch('/r', { recursive: true });
    try {
      assert.equal(watch.directories, 2);
      await sh('echo 1 > /r/old/f');
      await collect(watch, has('create', '/r/old/f'));
      // mkdir -p and the write come faster than a new directory's watch: what it holds is reported too.
      await sh('mkdir -p /r/new/deep && echo 2 > /r/new/deep/g');
      const made = await collect(watch, has('create', '/r/new/deep/g'));
      assert.ok(has('create', '/r/new')(made) && has('create', '/r/new/deep')(made), JSON.stringify(made));
      await sh('echo 3 > /r/new/deep/h');
      await collect(watch, has('create', '/r/new/deep/h'));
      // A renamed directory keeps its watch under its new name.
      await sh('mv /r/new /r/renamed');
      await collect(watch, has('rename', '/r/renamed', '/r/new'));
      await sh('echo 4 > /r/renamed/deep/i');
      await collect(watch, has('create', '/r/renamed/deep/i'));
      await sh('rm -r /r/renamed');
      await collect(watch, has('delete', '/r/renamed'));
    } finally {
      watch.close();
    }
  });

  it('reports renames of files that came with the image', async () => {
    const watch = await m.files.watch('/etc');
    try {
      // Moving a file of the image copies it up to the machine's own layer; it is still one rename.
      await sh('mv /etc/group /etc/group.moved');
      await collect(watch, has('rename', '/etc/group.moved', '/etc/group'));
      await sh('mv /etc/group.moved /etc/group');
      await collect(watch, has('rename', '/etc/group', '/etc/group.moved'));
    } finally {
      watch.close();
    }
  });

  it('cannot be led outside the machine by a symlink', async () => {
    const host = join(tmpdir(), `hangar-watch-host-${process.pid}`);
    await mkdir(host, { recursive: true });
    try {
      await sh(`mkdir -p /s/inside && ln -s / /s/abs && ln -s ${host} /s/host && ln -s ../../../../../../../../..${host} /s/climb && ln -s inside /s/rel`);
      for (const path of ['/s/abs', '/s/host', '/s/climb', '/s/climb/x', `/s/host/`]) await refused(m.files.watch(path), 'path_escapes_root', `watch ${path}`);
      // A relative link inside the machine is followed, and the watch reports where it really is.
      const viaLink = await m.files.watch('/s/rel');
      assert.equal(viaLink.path, '/s/inside');
      viaLink.close();

      // A recursive watch does not go down links: the host dir changing is never reported.
      const watch = await m.files.watch('/s', { recursive: true });
      try {
        await writeFile(join(host, 'secret'), 'host file');
        await sh('echo mine > /s/inside/mine');
        const events = await collect(watch, has('create', '/s/inside/mine'));
        assert.ok(events.every((e) => !('path' in e) || !e.path.includes('secret')), JSON.stringify(events));
        // A directory swapped for a link to the host after the watch began is not followed either.
        await sh(`rm -r /s/inside && ln -s ${host} /s/inside`);
        await writeFile(join(host, 'secret2'), 'host file');
        await sh('echo 1 > /s/after');
        const later = await collect(watch, has('create', '/s/after'));
        assert.ok(has('delete', '/s/inside')(later) && has('create', '/s/inside')(later), JSON.stringify(later));
        assert.ok(later.every((e) => !('path' in e) || !e.path.includes('secret')), JSON.stringify(later));
      } finally {
        watch.close();
      }
    } finally {
      await rm(host, { recursive: true, force: true });
    }
  });

  it('streams server-sent events and WebSocket messages, and refuses what it cannot watch', async () => {
    const url = `/v1/apps/${APP}/machines/${m.id}/files/watch?path=/w&recursive=true`;
    const res = await fetch(d.url + url, { headers: { authorization: `Bearer ${d.token}`, accept: 'text/event-stream' } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type')!, /^text\/event-stream/);
    const reader = res.body!.getReader();
    let text = '';
    const readUntil = async (pattern: RegExp) => {
      while (!pattern.test(text)) {
        const { value, done } = await reader.read();
        if (done) assert.fail(`stream ended: ${text}`);
        text += new TextDecoder().decode(value);
      }
    };
    await readUntil(/event: ready\ndata: \{"type":"ready","path":"\/w","recursive":true,"directories":1\}\n\n/);
    await sh('touch /w/sse');
    await readUntil(/event: create\ndata: \{"type":"create","path":"\/w\/sse","kind":"file"\}\n\n/);
    await reader.cancel();

    const ws = new WebSocket(`${d.url.replace(/^http/, 'ws')}${url}`, { headers: { authorization: `Bearer ${d.token}` } });
    const messages: Array<Record<string, unknown>> = [];
    ws.on('message', (data) => messages.push(JSON.parse(String(data))));
    const until = async (pred: () => boolean) => {
      for (let i = 0; i < 100 && !pred(); i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(pred(), JSON.stringify(messages));
    };
    await until(() => messages.some((x) => x.type === 'ready'));
    await sh('touch /w/ws');
    await until(() => messages.some((x) => x.type === 'create' && x.path === '/w/ws'));
    ws.close();

    await refused(m.files.watch('/w/kept'), 'not_a_directory', 'a file');
    await refused(m.files.watch('/nowhere'), 'file_not_found', 'a missing directory');
    assert.equal((await http(d, 'GET', `/v1/apps/${APP}/machines/${m.id}/files/watch`)).status, 400, 'no path');
  });

  it('holds at most 16 watches per machine', async () => {
    const held: FileWatch[] = [];
    try {
      // Watches whose clients went away are freed; the two above are gone by now.
      for (let i = 0; i < 16; i++) held.push(await m.files.watch('/w'));
      const err = await refused(m.files.watch('/w'), 'over_capacity', 'a 17th watch');
      assert.equal(err.status, 503);
    } finally {
      for (const w of held) w.close();
    }
    // Closing frees them (the daemon sees the client go).
    for (let i = 0; i < 50; i++) {
      try {
        (await m.files.watch('/w')).close();
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    assert.fail('closed watches were not freed');
  });

  it('refuses a recursive watch of more than 4096 directories, and watches it without recursive', async () => {
    await sh('mkdir -p /big && cd /big && seq 4100 | xargs mkdir');
    const err = await refused(m.files.watch('/big', { recursive: true }), 'over_capacity', 'a watch of 4101 directories');
    assert.match(err.hint!, /narrower path/);
    const flat = await m.files.watch('/big');
    try {
      assert.equal(flat.directories, 1);
      await sh('rmdir /big/17');
      await collect(flat, has('delete', '/big/17'));
    } finally {
      flat.close();
    }
  });

  it('collects events for a while through MCP file_watch', async () => {
    const client = new Client({ name: 'hangar-test', version: '1' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${d.token}` } } }));
    try {
      const call = client.callTool({ name: 'file_watch', arguments: { app: APP, id: m.id, path: '/w', duration_s: 3 } }) as Promise<CallToolResult>;
      await new Promise((r) => setTimeout(r, 1000));
      await sh('echo mcp > /w/mcp && rm /w/mcp');
      const r = await call;
      assert.ok(!r.isError, JSON.stringify(r.content));
      const data = r.structuredContent as { path: string; events: FileWatchEvent[]; truncated: boolean };
      assert.equal(data.path, '/w');
      assert.ok(has('create', '/w/mcp')(data.events) && has('delete', '/w/mcp')(data.events), JSON.stringify(data.events));
      assert.match((r.content[0] as { text: string }).text, /change\(s\) in \/w over 3s\ncreate \/w\/mcp/);
    } finally {
      await client.close();
    }
  });

  it('tells an MCP client subscribed to a file resource when the file changes, and reads it', async () => {
    const client = new Client({ name: 'hangar-test', version: '1' });
    const updated: string[] = [];
    client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => void updated.push(n.params.uri));
    await client.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${d.token}` } } }));
    try {
      assert.equal(client.getServerCapabilities()?.resources?.subscribe, true);
      const uri = `hangar://apps/${APP}/machines/${m.id}/files/w/build.log`;
      await client.subscribeResource({ uri });
      await sh('echo compiling >> /w/build.log && echo unrelated > /w/other');
      for (let i = 0; i < 100 && !updated.includes(uri); i++) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual([...new Set(updated)], [uri], 'one update, for the file subscribed to only');
      const read = await client.readResource({ uri });
      assert.equal((read.contents[0] as { text: string }).text, 'compiling\n');
      await client.unsubscribeResource({ uri });
      updated.length = 0;
      await sh('echo linking >> /w/build.log');
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(updated, [], 'no update after unsubscribing');
      const missing = await client.readResource({ uri: `hangar://apps/${APP}/machines/${m.id}/files/w/nope` }).catch((e: Error) => e);
      assert.match(String(missing), /file_not_found/);
    } finally {
      await client.close();
    }
  });

  it('ends when the machine stops, and is refused on a stopped machine', async () => {
    const watch = await m.files.watch('/w');
    await m.stop();
    const events: FileWatchEvent[] = [];
    for await (const e of watch) events.push(e);
    assert.match(watch.endReason!, /is (stopping|stopped)/);
    const err = await refused(m.files.watch('/w'), 'invalid_state', 'a stopped machine');
    assert.equal(err.status, 409);
  });
});
