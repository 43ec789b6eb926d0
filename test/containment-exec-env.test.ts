import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { withDaemon, type TestDaemon } from './helpers/daemon.ts';
import { waitFor } from './helpers/wait.ts';

// A machine's env often holds secrets (API keys, tokens). Every exec carries the machine's env,
// and any host user can read every process's argv in /proc/*/cmdline: the env must reach the
// exec some other way. Each exec below runs long enough to look at the host's processes while it
// is alive, then shows it still got its env.

let d: TestDaemon & { close(): Promise<void> };
let machineId: string;
const APP = 'secrets';
const MACHINE_SECRET = `machine-secret-${randomBytes(12).toString('hex')}`;
const EXEC_SECRET = `exec-secret-${randomBytes(12).toString('hex')}`;

before(async () => {
  d = await withDaemon();
  await d.client.apps.create(APP);
  const m = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] }, env: { API_KEY: MACHINE_SECRET } } });
  machineId = m.id;
});
after(async () => {
  await d?.close();
});

/** Host processes whose command line holds any of `needles`, as `pid: cmdline`. */
function cmdlinesHolding(needles: string[]): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue; // exited while we looked
    }
    if (needles.some((n) => cmdline.includes(n))) found.push(`${pid}: ${cmdline.replace(/\0/g, ' ').slice(0, 300)}`);
  }
  return found;
}

/** Process files left in the data dir (they must not outlive crun's reading them). */
function processFiles(dir = d.dataDir): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name.endsWith('.process.json')) out.push(join(entry.parentPath, entry.name));
  }
  return out;
}

describe('exec env stays out of host command lines', () => {
  it('a streamed exec sees the machine env and its own env; no host argv holds either', async () => {
    const res = await fetch(`${d.url}/v1/apps/${APP}/machines/${machineId}/exec/stream`, {
      method: 'POST',
      headers: { authorization: `Bearer ${d.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command: ['sh', '-c', 'echo "key=$API_KEY extra=$EXTRA"; sleep 4; echo done'], env: { EXTRA: EXEC_SECRET } }),
    });
    assert.equal(res.status, 200);
    let output = '';
    const reading = (async () => {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) output += Buffer.from(chunk).toString('utf8');
    })();
    await waitFor(async () => (output.includes('key=') ? true : undefined), 15_000, 'the exec to print its env');
    assert.deepEqual(cmdlinesHolding([MACHINE_SECRET, EXEC_SECRET]), []);
    assert.deepEqual(processFiles(), [], 'the process file is removed once crun has read it');
    await reading;
    assert.match(output, new RegExp(`key=${MACHINE_SECRET} extra=${EXEC_SECRET}`));
    assert.match(output, /"exit_code":0/);
  });

  it('a tty exec (as hangar console runs) keeps them out too', async () => {
    const session = d.client.machines.execSession(APP, machineId, { command: ['sh', '-c', 'echo "key=$API_KEY"; sleep 4'], tty: true, rows: 24, cols: 80, env: { EXTRA: EXEC_SECRET } });
    let output = '';
    session.onOutput((_stream, data) => (output += data));
    await waitFor(async () => (output.includes('key=') ? true : undefined), 15_000, 'the exec to print its env');
    assert.deepEqual(cmdlinesHolding([MACHINE_SECRET, EXEC_SECRET]), []);
    const result = await session.result;
    assert.equal(result.exitCode, 0);
    assert.match(output, new RegExp(`key=${MACHINE_SECRET}`));
  });

  it('a buffered exec that fails to start leaves no process file behind', async () => {
    const r = await d.client.machines.exec(APP, machineId, ['/no/such/program']);
    assert.notEqual(r.exit_code, 0);
    assert.deepEqual(processFiles(), []);
  });
});
