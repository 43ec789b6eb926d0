import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { FIXTURE_PORT, nodeServerConfig, waitForPort, withNodeDaemon } from '../test/helpers/node-image.ts';
import { freePort } from '../test/helpers/registry.ts';

// Proxy throughput: wrk (keep-alive connections, 100-byte responses from the Node fixture server
// in a machine) against the machine directly, through Hangar's edge proxy, and through nginx set
// up as a plain reverse proxy to the same machine, interleaved in one run. Goals
// (DESIGN.md): Hangar at least 0.6× nginx's requests/s, and under 2 ms of p99 added to direct.
// Runs alone too: `scripts/with-node.sh bench/proxy-throughput.ts`.

const run = promisify(execFile);
const APP = 'bench-proxy';
const CONNECTIONS = 32;
const THREADS = 2;
const ROUNDS = 3;
const ROUND_SECONDS = Number(process.env.BENCH_PROXY_ROUND_SECONDS ?? 4);
const WARMUP_SECONDS = 2;

export type ThroughputRow = { name: string; rps: number; p50Ms: number; p99Ms: number; errors: number };

// wrk's own report (and its --latency table) rounds and mixes units; its done() hook hands over
// the exact figures, latencies in microseconds.
const REPORT_LUA = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"duration_us":%d,"p50_us":%.1f,"p99_us":%.1f,"errors":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
`;

type WrkReport = { requests: number; duration_us: number; p50_us: number; p99_us: number; errors: number };

async function wrk(url: string, seconds: number, script: string, host?: string): Promise<WrkReport> {
  const args = ['-t', String(THREADS), '-c', String(CONNECTIONS), '-d', `${seconds}s`, '-s', script, ...(host ? ['-H', `Host: ${host}`] : []), url];
  const { stdout } = await run('wrk', args, { timeout: (seconds + 30) * 1000 });
  const line = stdout.split('\n').find((l) => l.startsWith('{'));
  if (!line) throw new Error(`wrk printed no report:\n${stdout}`);
  return JSON.parse(line) as WrkReport;
}

type Target = { name: string; url: string; host?: string };

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

// This host is shared, and a burst of load elsewhere can spoil any one window. So each target
// runs ROUNDS times, the three interleaved, and each figure is the median over its rounds.
async function measure(targets: Target[], script: string): Promise<ThroughputRow[]> {
  const reports = targets.map(() => [] as WrkReport[]);
  for (const t of targets) await wrk(t.url, WARMUP_SECONDS, script, t.host); // fills pools and JIT caches
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [i, t] of targets.entries()) {
      const r = await wrk(t.url, ROUND_SECONDS, script, t.host);
      reports[i]!.push(r);
      process.stderr.write(`bench: round ${round}/${ROUNDS}: ${t.name}: ${(r.requests / (r.duration_us / 1e6)).toFixed(0)} req/s, p99 ${(r.p99_us / 1000).toFixed(2)} ms\n`);
    }
  }
  return targets.map((t, i) => ({
    name: t.name,
    rps: median(reports[i]!.map((r) => r.requests / (r.duration_us / 1e6))),
    p50Ms: median(reports[i]!.map((r) => r.p50_us)) / 1000,
    p99Ms: median(reports[i]!.map((r) => r.p99_us)) / 1000,
    errors: reports[i]!.reduce((n, r) => n + r.errors, 0),
  }));
}

/** nginx from a config in `dir` on a loopback port, proxying to `upstream` over kept-alive connections. */
async function startNginx(dir: string, upstream: string): Promise<{ url: string; workers: string; stop(): Promise<void> }> {
  const port = await freePort();
  // One worker, as Hangar's proxy is one event loop. Here that is also nginx's best: with wrk and
  // the backend on the same two cores, a second worker (`auto`) only contends, at half the rate.
  const workers = process.env.BENCH_NGINX_WORKERS ?? '1';
  const temp = (kind: string) => `${kind}_temp_path ${join(dir, kind)};`;
  await writeFile(join(dir, 'nginx.conf'), `worker_processes ${workers};
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events { worker_connections 1024; }
http {
  access_log off;
  ${['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map(temp).join('\n  ')}
  upstream machine {
    server ${upstream};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://machine;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
    }
  }
}
`);
  // daemon off: the spawned process is nginx's master, killed by its PID; it ends its workers.
  const child: ChildProcess = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log'), '-g', 'daemon off;'], { stdio: 'ignore' });
  const exited = once(child, 'exit');
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    process.kill(child.pid, 'SIGTERM');
    const timer = setTimeout(() => child.pid && process.kill(child.pid, 'SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  try {
    await waitForPort('127.0.0.1', port, 5000);
  } catch (err) {
    await stop();
    throw new Error(`nginx did not start: ${await readFile(join(dir, 'error.log'), 'utf8').catch(() => '')}`, { cause: err });
  }
  return { url: `http://127.0.0.1:${port}/`, workers, stop };
}

/** Runs the three measurements on a daemon, machine and nginx of its own, and removes them all. */
export async function proxyThroughput(): Promise<ThroughputRow[]> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-proxy-'));
  const d = await withNodeDaemon();
  let nginx: Awaited<ReturnType<typeof startNginx>> | undefined;
  try {
    const script = join(dir, 'report.lua');
    await writeFile(script, REPORT_LUA);
    await d.client.apps.create(APP);
    const m = await d.client.machines.create(APP, { config: nodeServerConfig(d.nodeImage, 'http') });
    await waitForPort(m.private_ip, FIXTURE_PORT);
    const direct = `http://${m.private_ip}:${FIXTURE_PORT}/`;
    nginx = await startNginx(dir, `${m.private_ip}:${FIXTURE_PORT}`);
    return await measure([
      { name: 'direct to the machine', url: direct },
      { name: "through Hangar's edge proxy", url: `${d.proxyUrl}/`, host: `${APP}.localhost` },
      { name: `through nginx (worker_processes ${nginx.workers})`, url: nginx.url },
    ], script);
  } finally {
    await nginx?.stop();
    await d.close();
    await rm(dir, { recursive: true, force: true });
  }
}

export function printThroughput(rows: ThroughputRow[]): void {
  const [direct, hangar, nginx] = rows as [ThroughputRow, ThroughputRow, ThroughputRow];
  const line = (cells: string[]) => '| ' + cells.join(' | ') + ' |';
  console.log(`\nProxy throughput: wrk, ${THREADS} threads, ${CONNECTIONS} keep-alive connections, 100-byte responses from Node in a machine; median of ${ROUNDS} interleaved rounds of ${ROUND_SECONDS} s\n`);
  console.log(line(['path', 'requests/s', 'p50 ms', 'p99 ms', 'p99 added ms', 'errors']));
  console.log(line(['---', '---:', '---:', '---:', '---:', '---:']));
  for (const r of rows) {
    console.log(line([r.name, r.rps.toFixed(0), r.p50Ms.toFixed(2), r.p99Ms.toFixed(2), r === direct ? '—' : (r.p99Ms - direct.p99Ms).toFixed(2), String(r.errors)]));
  }
  const ratio = hangar.rps / nginx.rps;
  const added = hangar.p99Ms - direct.p99Ms;
  console.log(`\ngoals: Hangar ≥ 0.6× nginx requests/s → ${ratio.toFixed(2)}× ${ratio >= 0.6 ? 'met' : 'NOT met'}; p99 added < 2 ms → ${added.toFixed(2)} ms ${added < 2 ? 'met' : 'NOT met'}${hangar.errors > 0 ? ` (Hangar had ${hangar.errors} errors)` : ''}`);
}

if (import.meta.main) printThroughput(await proxyThroughput());
