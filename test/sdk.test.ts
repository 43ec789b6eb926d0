import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Hangar, HangarApiError, type ExecChunk } from '../src/sdk/index.ts';
import { withDaemon, type TestDaemon } from './helpers/daemon.ts';
import { waitFor } from './helpers/wait.ts';

// The robot loop through the SDK: boot, run a long command with live output, edit files while
// stopped, cancel a runaway command, and act on typed errors.

let d: TestDaemon & { close(): Promise<void> };
let hangar: Hangar;

before(async () => {
  d = await withDaemon();
  hangar = new Hangar({ baseUrl: d.url, token: d.token });
  await hangar.apps.create('sdk');
});
after(async () => {
  await d?.close();
});

describe('SDK', () => {
  it('boots a machine and streams a long command\'s output as it runs', async () => {
    // The robot loop's first step (debian-base.test.ts boots hangar/debian:bookworm; one build per run is enough).
    const m = await hangar.machines.create('sdk', { config: { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] } } });
    assert.equal(m.state, 'started');
    const run = m.exec(['sh', '-c', 'for i in 1 2 3; do echo "step $i of $(ls /bin | wc -l) programs"; sleep 0.4; done; echo done >&2']);
    const arrivals: Array<{ at: number; chunk: ExecChunk }> = [];
    const t0 = Date.now();
    for await (const chunk of run) arrivals.push({ at: Date.now() - t0, chunk });
    const result = await run.wait();
    assert.equal(result.exitCode, 0, result.stderr);
    assert.match(result.stdout, /^step 1 of \d+ programs\nstep 2 of \d+ programs\nstep 3 of \d+ programs\n$/);
    assert.equal(result.stderr, 'done\n');
    const first = arrivals.find((a) => a.chunk.data.includes('step 1'))!;
    const last = arrivals.find((a) => a.chunk.data.includes('step 3'))!;
    assert.ok(last.at - first.at >= 600, `output arrived live (${first.at} ms, ${last.at} ms)`);

    const ps = await m.ps();
    assert.ok(ps.some((p) => p.pid === 1 && p.command.includes('sleep inf')), JSON.stringify(ps));

    const shell = m.console({ rows: 20, cols: 70 });
    let seen = '';
    shell.onOutput((_stream, data) => (seen += data));
    shell.write('stty size; exit 3\n');
    const ended = await shell.result;
    assert.equal(ended.exitCode, 3);
    assert.match(seen, /20 70/);
  });

  it('writes files into a stopped machine that the started machine then sees', async () => {
    const m = await hangar.machines.create('sdk', { skip_launch: true, config: { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] } } });
    assert.equal(m.state, 'created');
    await m.files.write('/srv/app/config.json', '{"port": 8080}', { mode: 0o600 });
    const entries = await m.files.list('/srv/app');
    assert.deepEqual(entries.map((e) => [e.name, e.type]), [['config.json', 'file']]);
    await m.start();
    const seen = await m.exec(['sh', '-c', 'cat /srv/app/config.json; stat -c %a /srv/app/config.json']).wait();
    assert.equal(seen.stdout, '{"port": 8080}600\n');
    await m.exec(['sh', '-c', 'echo from inside > /srv/app/out.txt']).wait();
    assert.equal(await m.files.readText('/srv/app/out.txt'), 'from inside\n');
    await m.stop();
    assert.equal(m.state, 'stopped');
    assert.equal(await m.files.readText('/srv/app/out.txt'), 'from inside\n', 'files are readable while stopped');
  });

  it('cancels a runaway command, and rebuilds typed errors from the wire', async () => {
    const m = await hangar.machines.create('sdk', { config: { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] } } });
    const runaway = m.exec(['sh', '-c', 'echo started; exec sleep 600']);
    for await (const chunk of runaway) if (chunk.data.includes('started')) break;
    runaway.kill();
    await assert.rejects(runaway.wait());
    await waitFor(async () => {
      const ps = await m.exec(['sh', '-c', 'ps -o args | grep -c "^sleep 600" || true']).wait();
      return ps.stdout.trim() === '0' ? true : undefined;
    }, 5000, 'the cancelled command is gone');

    const err = await hangar.machines.get('sdk', 'ffffffffffffff').catch((e: unknown) => e);
    assert.ok(err instanceof HangarApiError);
    assert.equal(err.code, 'machine_not_found');
    assert.equal(err.status, 404);
    assert.ok(err.hint);

    // A wait the server holds for up to 30 s; the client gives up after 200 ms.
    const t0 = Date.now();
    const timedOut = await m.wait('stopped', { timeoutS: 30, timeoutMs: 200 }).catch((e: unknown) => e);
    assert.equal((timedOut as Error).name, 'TimeoutError');
    assert.ok(Date.now() - t0 < 5000);
  });
});
