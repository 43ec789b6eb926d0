import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { AppUsage } from '../src/sdk/index.ts';
import { HANGAR, cleanupDataDir, http, makeDataDir, startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { waitFor } from './helpers/wait.ts';

// Usage by the second, from the durable lifecycle transitions: a kill -9 of the daemon while a
// machine runs loses none of its seconds, and a window counts only what fell inside it.

const APP = 'usage';
let dataDir: string;
let d: TestDaemon;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

before(async () => {
  dataDir = await makeDataDir();
  d = await startDaemon(dataDir);
  await d.client.apps.create(APP);
});
after(async () => {
  await d?.kill().catch(() => undefined);
  await cleanupDataDir(dataDir);
});

/** How many processes name `path` on their command line. */
function processesNaming(path: string): number {
  let n = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(path)) n++;
    } catch {
      // gone while we looked
    }
  }
  return n;
}

describe('usage', () => {
  it('bills 3 s + 2 s started (with 5 s stopped between) as 5 started-seconds across a kill -9 of the daemon', async () => {
    const m = await d.client.machines.create(APP, {
      config: { image: 'hangar/busybox', init: { cmd: ['sh', '-c', 'while :; do :; done'] }, guest: { cpus: 1, memory_mb: 256 } },
      skip_launch: true,
    });
    const t0 = performance.now();
    await d.client.machines.start(APP, m.id);
    const t1 = performance.now();
    // The daemon dies while the machine runs; the machine keeps running and its seconds count.
    await d.kill();
    d = await startDaemon(dataDir);
    // On a loaded host the restart itself may take longer than 3 s: the second stretch makes up the 5 s.
    await sleep(Math.max(0, 3000 - (performance.now() - t1)));
    const t2 = performance.now();
    const second = Math.max(500, 5000 - (t2 - t1));
    await d.client.machines.stop(APP, m.id, { signal: 'SIGKILL' });
    const stoppedAt = Date.now();
    await sleep(5000);
    const restartAt = Date.now();
    const t3 = performance.now();
    await d.client.machines.start(APP, m.id);
    const t4 = performance.now();
    await sleep(second);
    const t5 = performance.now();
    await d.client.machines.stop(APP, m.id, { signal: 'SIGKILL' });
    const measured = (t2 - t1 + (t5 - t4)) / 1000;
    const slack = (t1 - t0 + (t4 - t3)) / 1000; // the starts' own time: billed as starting, or started once the answer left

    const u = await d.client.machines.usage(APP, m.id);
    console.log(`# started ${u.seconds.started} s (client measured ${measured.toFixed(3)} s + up to ${slack.toFixed(3)} s of start calls), ` +
      `stopped ${u.seconds.stopped} s, cpu ${u.cpu_seconds} s, memory ${u.memory_mb_seconds} MB·s, rootfs ${u.rootfs_gb_seconds} GB·s`);
    assert.ok(Math.abs(u.seconds.started! - 5) <= 0.5, `started ${u.seconds.started} s, not 5 ± 0.5`);
    assert.ok(u.seconds.started! >= measured - 0.1 && u.seconds.started! <= measured + slack + 0.1);
    assert.ok(Math.abs(u.seconds.stopped! - 5) <= 0.5, `stopped ${u.seconds.stopped} s`);
    // A busy loop on one CPU: up to one CPU-second per second started (less on a busy host).
    assert.ok(u.cpu_seconds > 1 && u.cpu_seconds <= u.seconds.started! + 0.5, `cpu ${u.cpu_seconds} s`);
    assert.ok(Math.abs(u.memory_mb_seconds - 256 * u.seconds.started!) < 1);
    assert.ok(Math.abs(u.cpus_seconds - u.seconds.started!) < 0.01);
    assert.ok(u.rootfs_gb_seconds > 0);

    // The app's report has the same machine, and a window holds only what fell in it.
    const app = await d.client.apps.usage(APP);
    assert.equal(app.machines.find((x) => x.machine_id === m.id)?.seconds.started, u.seconds.started);
    const stoppedStretch = await d.client.machines.usage(APP, m.id, { from: new Date(stoppedAt + 1000), to: new Date(restartAt - 1000) });
    assert.equal(stoppedStretch.seconds.started ?? 0, 0);
    assert.ok(Math.abs(stoppedStretch.seconds.stopped! - 3) < 0.3, JSON.stringify(stoppedStretch.seconds));
  });

  it('ends the started seconds of a machine that exited while the daemon was down at its exit', async () => {
    const m = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sh', '-c', 'sleep 2; exit 0'] }, restart: { policy: 'no' } } });
    await d.kill();
    // Its shim, runtime and log writer all name its dir until its exit is written down.
    await waitFor(async () => (processesNaming(join(dataDir, 'machines', m.id)) === 0 ? true : undefined), 15_000, 'the machine to exit with no daemon');
    d = await startDaemon(dataDir);
    assert.equal((await d.client.machines.get(APP, m.id)).state, 'stopped');
    const u = await d.client.machines.usage(APP, m.id);
    console.log(`# exited while down: started ${u.seconds.started} s, stopping ${u.seconds.stopping} s`);
    assert.ok(Math.abs(u.seconds.started! - 2) <= 0.5, `started ${u.seconds.started} s, not 2 ± 0.5`);
  });

  it('bills the CPU time of a run that ended on its own', async () => {
    // A busy loop until the shell itself has used a CPU-second (utime + stime, in 1/100 s ticks,
    // from its own /proc stat, read without a fork), then exit: crun removes the machine's cgroup
    // as the init ends. CPU time rather than wall time, so a busy host only makes it slower.
    const burn = 'while :; do read -r s < /proc/$$/stat; set -- $s; [ $((${14} + ${15})) -ge 100 ] && exit 0; done';
    const m = await d.client.machines.create(APP, {
      config: { image: 'hangar/busybox', init: { cmd: ['sh', '-c', burn] }, restart: { policy: 'no' } },
    });
    await d.client.machines.wait(APP, m.id, 'stopped', { timeoutS: 60 });
    const u = await d.client.machines.usage(APP, m.id);
    console.log(`# ended on its own: started ${u.seconds.started} s, cpu ${u.cpu_seconds} s`);
    assert.ok(u.cpu_seconds >= 0.8 && u.cpu_seconds <= u.seconds.started! + 0.5, `cpu ${u.cpu_seconds} s`);
  });

  it('counts egress bytes, storage GB-seconds and serves Prometheus counters', async () => {
    const sink = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sh', '-c', 'sleep 3600 | nc -l -p 9000 > /dev/null'] } } });
    const m = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });
    // Bytes to another machine of the app (once it listens; its nc's stdin stays open, or it would hang up at once): egress from this one's eth0, as its metrics count it.
    const sent = await d.client.machines.exec(APP, m.id, ['sh', '-c', `for i in $(seq 50); do head -c 1000000 /dev/zero | nc -w2 ${sink.private_ip} 9000 && exit 0; sleep 0.1; done; exit 1`]);
    assert.equal(sent.exit_code, 0, sent.stderr);
    const counted = (await d.client.machines.metrics(APP, m.id)).network!.tx_bytes;
    assert.ok(counted > 10_000, `the machine sent ${counted} bytes`);
    const v = await d.client.volumes.create(APP, { name: 'data', size_gb: 1 });
    await sleep(1000);
    const before = await d.client.machines.usage(APP, m.id);
    assert.ok(before.egress_bytes >= counted && before.egress_bytes < counted + 5000, `egress ${before.egress_bytes} while it runs; it sent ${counted}`);
    await d.client.machines.stop(APP, m.id);
    const after = await d.client.machines.usage(APP, m.id);
    assert.ok(after.egress_bytes >= before.egress_bytes && after.egress_bytes < before.egress_bytes + 100_000, `egress ${after.egress_bytes}`);
    const app = await d.client.apps.usage(APP);
    assert.ok(app.volume_gb_seconds >= 0.9, `volume ${app.volume_gb_seconds} GB·s`);
    await d.client.volumes.delete(APP, v.id);

    const metrics = await http(d, 'GET', '/metrics');
    assert.match(metrics.text, new RegExp(`hangar_usage_machine_seconds_total\\{app="${APP}",state="started"\\} \\d`));
    assert.match(metrics.text, new RegExp(`hangar_usage_egress_bytes_total\\{app="${APP}"\\} \\d{5,}`));
    const bad = await http(d, 'GET', `/v1/apps/${APP}/usage?from=yesterday`);
    assert.equal(bad.status, 400);
  });

  it('answers `hangar usage` and MCP app_usage', async () => {
    const cli = spawnSync(HANGAR, ['usage', APP], { encoding: 'utf8', env: { ...process.env, HANGAR_DATA_DIR: d.dataDir }, timeout: 60_000 });
    assert.equal(cli.status, 0, cli.stderr);
    assert.match(cli.stdout, /^app usage, .* to .*\n  seconds: .*started [\d.]+/);
    assert.match(cli.stdout, /^MACHINE\s+STARTED-S\s+STOPPED-S\s+CPU-S/m);
    const json = spawnSync(HANGAR, ['usage', APP, '--json', '--from', String(Math.floor(Date.now() / 1000) - 3600)], { encoding: 'utf8', env: { ...process.env, HANGAR_DATA_DIR: d.dataDir }, timeout: 60_000 });
    assert.equal(json.status, 0, json.stderr);
    assert.ok((JSON.parse(json.stdout) as AppUsage).machines.length >= 2);

    const client = new Client({ name: 'hangar-test', version: '1' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${d.token}` } } }));
    try {
      const r = (await client.callTool({ name: 'app_usage', arguments: { app: APP } })) as CallToolResult;
      assert.ok(!r.isError, JSON.stringify(r.content));
      assert.ok((r.structuredContent as { usage: AppUsage }).usage.seconds.started! > 5);
      assert.match((r.content[0] as { text: string }).text, /app usage, .*: [\d.]+ s started, [\d.]+ CPU-s/);
    } finally {
      await client.close();
    }
  });
});
