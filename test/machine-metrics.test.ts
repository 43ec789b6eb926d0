import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { Hangar, type Machine, type MachineMetrics } from '../src/sdk/index.ts';
import { HANGAR, http, withDaemon, type TestDaemon } from './helpers/daemon.ts';
import { waitFor } from './helpers/wait.ts';

// Per-machine resource use as a robot reads it: REST/SDK, Prometheus, MCP and `hangar machines
// top`. The figures must move when the machine does something: allocate memory, burn CPU, write
// to its disk, send packets.

const APP = 'metrics';
const MiB = 1024 * 1024;
let d: TestDaemon & { close(): Promise<void> };
let hangar: Hangar;
let m: Machine;

before(async () => {
  d = await withDaemon();
  hangar = new Hangar({ baseUrl: d.url, token: d.token });
  await hangar.apps.create(APP);
  m = await hangar.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] }, guest: { cpus: 1, memory_mb: 256 } } });
});
after(async () => {
  await d?.close();
});

const sh = async (script: string) => {
  const r = await d.client.machines.exec(APP, m.id, ['sh', '-c', script], { timeoutS: 60 });
  assert.equal(r.exit_code, 0, `${script}: ${r.stderr}`);
  return r.stdout;
};

/** The value of a Prometheus series of this machine in /metrics text. */
function promValue(text: string, name: string, machine: string): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) || !line.includes(`machine="${machine}"`)) continue;
    assert.match(line, new RegExp(`app="${APP}"`));
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

describe('machine metrics', () => {
  it('reports CPU, memory, processes, disk and network of a started machine', async () => {
    const first = await m.metrics();
    assert.equal(first.machine_id, m.id);
    assert.equal(first.state, 'started');
    assert.ok(first.cpu && first.memory && first.pids && first.disk && first.network, JSON.stringify(first));
    assert.equal(first.cpu.limit_cpus, 1);
    assert.equal(first.memory.limit_bytes, 256 * MiB);
    assert.ok(first.pids.current >= 1, 'the init and sleep run');
    assert.ok(first.disk.size_bytes > 1024 * MiB, 'the default 8 GB disk');
  });

  it('memory moves when the machine allocates it, and its peak stays after it frees it', async () => {
    const before = (await m.metrics()).memory!;
    await sh('dd if=/dev/zero of=/dev/shm/fill bs=1M count=40 2>/dev/null');
    const inShm = (await m.metrics()).memory!;
    assert.ok(inShm.current_bytes >= before.current_bytes + 35 * MiB, `memory grew by ${(inShm.current_bytes - before.current_bytes) / MiB} MiB`);
    await sh('rm /dev/shm/fill');
    assert.ok((await m.metrics()).memory!.current_bytes < inShm.current_bytes - 35 * MiB, 'freed when the file goes');
    // Held by a process: tail keeps its newline-free input whole until the pipe ends.
    await sh('{ (head -c 30m /dev/zero; exec sleep 3600) | tail; } >/dev/null 2>&1 </dev/null &');
    const held = await waitFor(async () => {
      const mem = (await m.metrics()).memory!;
      return mem.current_bytes > before.current_bytes + 25 * MiB ? mem : undefined;
    }, 15_000, 'a process holding 30 MiB shows');
    await sh('killall tail');
    const after = await waitFor(async () => {
      const mem = (await m.metrics()).memory!;
      return mem.current_bytes < held.current_bytes - 25 * MiB ? mem : undefined;
    }, 15_000, 'memory comes back when the process ends');
    assert.ok(after.peak_bytes! >= inShm.current_bytes, 'the peak remembers the most it held');
  });

  it('CPU seconds move by what its processes used', async () => {
    const before = (await m.metrics()).cpu!.usage_seconds;
    // A fixed amount of work, so a busy host only makes it take longer; `time` says what it cost.
    const r = await d.client.machines.exec(APP, m.id, ['sh', '-c', 'time sh -c "i=0; while [ \\$i -lt 200000 ]; do i=\\$((i+1)); done"']);
    assert.equal(r.exit_code, 0, r.stderr);
    const seconds = (name: string) => {
      const [, min, sec] = new RegExp(`^${name}\\s+(\\d+)m ([\\d.]+)s`, 'm').exec(r.stderr) ?? assert.fail(`no ${name} time in ${r.stderr}`);
      return Number(min) * 60 + Number(sec);
    };
    const used = seconds('user') + seconds('sys');
    const after = (await m.metrics()).cpu!;
    assert.ok(used > 0.05, `the loop used ${used}s: ${r.stderr}`);
    assert.ok(after.usage_seconds - before >= used - 0.02, `CPU seconds grew by ${after.usage_seconds - before}s; the loop used ${used}s`);
    assert.ok(after.user_seconds >= seconds('user') - 0.02);
  });

  it('network bytes move when it talks to its gateway, disk after a write', async () => {
    const before = await m.metrics();
    // busybox's ping wants a raw socket the machine's root does not have; HTTP and DNS to the gateway do.
    await sh('for i in 1 2 3; do wget -q -O /dev/null http://_api.internal:4280/health; done; dd if=/dev/urandom of=/blob bs=1M count=16 2>/dev/null; sync');
    const after = await m.metrics();
    assert.ok(after.network!.tx_bytes - before.network!.tx_bytes >= 600, `sent ${after.network!.tx_bytes - before.network!.tx_bytes} bytes`);
    assert.ok(after.network!.rx_bytes - before.network!.rx_bytes >= 600, `received ${after.network!.rx_bytes - before.network!.rx_bytes} bytes`);
    assert.ok(after.network!.tx_packets - before.network!.tx_packets >= 9, 'three TCP connections');
    assert.ok(after.disk!.used_bytes - before.disk!.used_bytes >= 15 * MiB, `disk grew by ${(after.disk!.used_bytes - before.disk!.used_bytes) / MiB} MiB`);
  });

  it('serves the figures as Prometheus series labelled app and machine', async () => {
    const res = await http(d, 'GET', '/metrics');
    assert.equal(res.status, 200);
    const rest = await m.metrics();
    const mem = promValue(res.text, 'hangar_machine_memory_bytes', m.id);
    assert.ok(mem !== undefined && Math.abs(mem - rest.memory!.current_bytes) < 8 * MiB, `hangar_machine_memory_bytes ${mem}, REST ${rest.memory!.current_bytes}`);
    assert.ok(promValue(res.text, 'hangar_machine_memory_peak_bytes', m.id)! >= 35 * MiB);
    const cpu = promValue(res.text, 'hangar_machine_cpu_seconds_total', m.id)!;
    assert.ok(cpu > 0.05 && cpu <= rest.cpu!.usage_seconds, `hangar_machine_cpu_seconds_total ${cpu}`);
    assert.ok(promValue(res.text, 'hangar_machine_pids', m.id)! >= 2);
    assert.ok(promValue(res.text, 'hangar_machine_disk_used_bytes', m.id)! >= 15 * MiB);
    assert.ok(promValue(res.text, 'hangar_machine_network_transmit_bytes_total', m.id)! >= 600);
    assert.ok(promValue(res.text, 'hangar_machine_memory_limit_bytes', m.id) === 256 * MiB);
    assert.match(res.text, /# TYPE hangar_machine_cpu_seconds_total counter/);
  });

  it('answers MCP machine_metrics, and `hangar machines top --once` prints a table', async () => {
    const client = new Client({ name: 'hangar-test', version: '1' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${d.token}` } } }));
    try {
      const r = (await client.callTool({ name: 'machine_metrics', arguments: { app: APP, id: m.id } })) as CallToolResult;
      assert.ok(!r.isError, JSON.stringify(r.content));
      const data = r.structuredContent as MachineMetrics;
      assert.ok(data.memory!.current_bytes > 0);
      assert.match((r.content[0] as { text: string }).text, new RegExp(`${m.id}: started, cpu [\\d.]+s, memory [\\d.]+ MiB of 256.0 MiB`));
    } finally {
      await client.close();
    }

    const run = (...args: string[]) => spawnSync(HANGAR, ['machines', 'top', '--once', ...args], { encoding: 'utf8', env: { ...process.env, HANGAR_DATA_DIR: d.dataDir, HANGAR_APP: APP }, timeout: 60_000 });
    const top = run();
    assert.equal(top.status, 0, top.stderr);
    assert.match(top.stdout, /^ID\s+NAME\s+STATE\s+CPU%\s+CPU TIME\s+MEM\s+PEAK\s+LIMIT\s+PIDS\s+DISK\s+RX\s+TX$/m);
    assert.match(top.stdout, new RegExp(`^${m.id}\\s+\\S+\\s+started\\s+[\\d.]+\\s+[\\d.]+s\\s+[\\d.]+ MiB`, 'm'));
    const json = run('--json');
    assert.equal(json.status, 0, json.stderr);
    assert.deepEqual((JSON.parse(json.stdout) as MachineMetrics[]).map((x) => x.machine_id), [m.id]);
  });

  it('a stopped machine has no CPU, memory or processes, and leaves the Prometheus series', async () => {
    await m.stop();
    const stopped = await m.metrics();
    assert.equal(stopped.state, 'stopped');
    assert.equal(stopped.cpu, null);
    assert.equal(stopped.memory, null);
    assert.equal(stopped.pids, null);
    assert.ok(stopped.disk && stopped.disk.used_bytes >= 15 * MiB, 'its disk keeps what it wrote');
    assert.ok(stopped.network, 'its network is kept across stop/start');
    const res = await http(d, 'GET', '/metrics');
    assert.equal(promValue(res.text, 'hangar_machine_memory_bytes', m.id), undefined);

    await m.start();
    const again = (await m.metrics()).memory!;
    assert.ok(again.peak_bytes! < 35 * MiB, `a new run starts a new peak (${again.peak_bytes! / MiB} MiB)`);
  });
});
