import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withDaemon, HANGAR, REPO, type TestDaemon } from './helpers/daemon.ts';

// The `hangar` CLI as a person or a robot runs it; it finds the daemon through the data dir.

let d: TestDaemon & { close(): Promise<void> };

before(async () => {
  d = await withDaemon();
});
after(async () => {
  await d?.close();
});

/** The CLI run to its end (stdin empty, as spawnSync gives), leaving the event loop to the tests that run alongside. */
function run(args: string[], env: NodeJS.ProcessEnv, timeout: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(HANGAR, args, { encoding: 'utf8', env, timeout, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
    child.stdin?.end();
  });
}

function hangar(...args: string[]) {
  return run(args, { ...process.env, HANGAR_DATA_DIR: d.dataDir, HANGAR_APP: 'cli' }, 120_000);
}

describe('hangar CLI', () => {
  // Each on apps of its own (only the first makes machines in app cli), and mostly waiting on CLI
  // processes: a few run at once. The base image is rebuilt after them, under no machine's create.
  describe('commands', { concurrency: 4 }, () => {
    it('runs, lists, execs, logs, stops, starts and destroys a machine', async () => {
      const run = await hangar('machines', 'run', 'hangar/busybox', '--name', 'web', '--env', 'WHO=robot', '--', 'sh', '-c', 'echo hi $WHO; exec sleep 3600');
      assert.equal(run.code, 0, run.stderr);
      const id = run.stdout.split(/\s+/)[0]!;
      assert.match(id, /^[0-9a-f]{14}$/);
      assert.match(run.stdout, /started/);

      const list = await hangar('machines', 'list');
      assert.match(list.stdout, /^ID\s+NAME\s+STATE/m);
      assert.match(list.stdout, new RegExp(`${id}\\s+web\\s+started\\s+hangar/busybox`));
      const json = JSON.parse((await hangar('machines', 'list', '--json')).stdout) as Array<{ id: string }>;
      assert.deepEqual(json.map((m) => m.id), [id]);

      const exec = await hangar('machines', 'exec', id, '--', 'sh', '-c', 'echo $WHO; exit 4');
      assert.equal(exec.code, 4, 'exec exits with the command exit code');
      assert.equal(exec.stdout, 'robot\n');

      const logs = await hangar('machines', 'logs', id);
      assert.match(logs.stdout, /hi robot/);

      assert.match((await hangar('machines', 'stop', id)).stdout, /state:\s+stopped/);
      assert.match((await hangar('machines', 'start', 'web')).stdout, /state:\s+started/, 'machines can be named by name');
      const status = await hangar('machines', 'status', id);
      assert.match(status.stdout, /events:/);
      assert.match(status.stdout, /exit\s+stopped/);

      assert.match((await hangar('apps', 'list')).stdout, /cli\s+1/);
      const destroy = await hangar('machines', 'destroy', id);
      assert.equal(destroy.code, 1);
      assert.match(destroy.stderr, new RegExp(`hint: run hangar machines stop ${id} --app cli, or hangar machines destroy ${id} --app cli --force`));
      assert.equal((await hangar('machines', 'destroy', id, '--force')).code, 0);
      assert.match((await hangar('machines', 'list')).stdout, /\(none\)/);
    });

    it('gives a machine a service with --port, as flyctl does, and says where the proxy serves it', async () => {
      const run = await hangar('machines', 'run', 'hangar/busybox', '--app', 'web', '--port', '80:8080/tcp:http', '-p', '443:8080/tcp:http:tls', '--autostop', 'stop',
        '--', 'sh', '-c', 'mkdir -p /srv; echo served > /srv/index.html; exec httpd -f -p 8080 -h /srv');
      assert.equal(run.code, 0, run.stderr);
      const id = run.stdout.split(/\s+/)[0]!;
      const port = (url: string) => new URL(url).port;
      assert.match(run.stdout, new RegExp(`reach it at http://web\\.localhost:${port(d.proxyUrl)}/ and https://web\\.localhost:${port(d.proxyTlsUrl)}/`));
      const machine = JSON.parse((await hangar('machines', 'status', id, '--app', 'web', '--json')).stdout) as { config: { services: unknown } };
      assert.deepEqual(machine.config.services, [{
        internal_port: 8080,
        protocol: 'tcp',
        ports: [{ port: 80, handlers: ['http'] }, { port: 443, handlers: ['http', 'tls'] }],
        autostop: 'stop',
      }]);
      const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        get(d.proxyUrl, { headers: { host: 'web.localhost' } }, (res) => {
          let body = '';
          res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        }).on('error', reject);
      });
      assert.equal(answer.status, 200, answer.body);
      assert.equal(answer.body.trim(), 'served');

      const bad = await hangar('machines', 'run', 'hangar/busybox', '--app', 'web', '--port', '80:99999');
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /--port 80:99999 is not PORT/);
      assert.match(bad.stderr, /hint: --port 80:8080\/tcp:http/);
      const orphan = await hangar('machines', 'run', 'hangar/busybox', '--app', 'web', '--autostop', 'stop');
      assert.equal(orphan.code, 1);
      assert.match(orphan.stderr, /it has none/);
      assert.equal((await hangar('machines', 'destroy', id, '--app', 'web', '--force')).code, 0);
    });

    it('shows the API error and its hint, and exits non-zero', async () => {
      const r = await hangar('machines', 'start', 'no-such-machine');
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^error: no machine no-such-machine in app cli/m);
      assert.match(r.stderr, /^hint: /m);
      assert.match(r.stderr, /^code: machine_not_found/m);
      const usage = await hangar('machines', 'frobnicate');
      assert.equal(usage.code, 1);
      assert.match(usage.stderr, /unknown command/);
    });

    it('answers --help for every command, and --version, with no daemon running', async () => {
      const env: NodeJS.ProcessEnv = { ...process.env, HANGAR_DATA_DIR: join(tmpdir(), 'hangar-no-daemon-here') };
      delete env.HANGAR_TOKEN;
      delete env.HANGAR_API_URL;
      const bare = (...args: string[]) => run(args, env, 30_000);
      for (const [args, usage] of [
        [['serve', '--help'], /^hangar serve \[--data-dir DIR\]/],
        [['mcp', '--help'], /^hangar mcp/],
        [['console', '--help'], /^hangar console ID/],
        [['machines', '--help'], /^hangar machines <command>/],
        [['machines', 'run', '--help'], /^hangar machines <command>/],
        [['m', '-h'], /^hangar machines <command>/],
        [['help', 'checkpoints'], /^hangar checkpoints <command>/],
      ] as const) {
        const r = await bare(...args);
        assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stdout, usage, args.join(' '));
      }
      const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
      assert.equal((await bare('--version')).stdout, `hangar ${pkg.version}\n`);
    });

    it('suggests the nearest option or command for a typo', async () => {
      const flag = await hangar('machines', 'list', '--ap', 'x');
      assert.equal(flag.code, 1);
      assert.match(flag.stderr, /^error: unknown option --ap$/m);
      assert.match(flag.stderr, /^hint: did you mean --app\? `hangar machines --help` lists the options$/m);
      assert.match((await hangar('serve', '--data-dri', '/x')).stderr, /did you mean --data-dir\?/);
      assert.match((await hangar('machnes', 'list')).stderr, /did you mean hangar machines\?/);
      assert.match((await hangar('machines', 'lsit')).stderr, /did you mean hangar machines list\?/);
      assert.match((await hangar('apps', 'creat', 'x')).stderr, /did you mean hangar apps create\?/);
      assert.match((await hangar('serve', '--hlep')).stderr, /did you mean --help\?/);
    });

    it('prints where the token is, not the token, and Try lines that find this daemon', async () => {
      assert.ok(!d.output().includes(d.token), 'the token is not printed');
      assert.match(d.output(), new RegExp(`token: +in ${d.dataDir}/token \\(mode 600\\)`));
      assert.match(d.output(), new RegExp(`HANGAR_DATA_DIR=${d.dataDir} \\./hangar machines list`));
    });

    it('lists no machines, not an error, for an app that does not exist yet', async () => {
      const table = await hangar('machines', 'list', '--app', 'not-made-yet');
      assert.equal(table.code, 0, table.stderr);
      assert.equal(table.stdout, '(none)\n');
      assert.deepEqual(JSON.parse((await hangar('machines', 'list', '--app', 'not-made-yet', '--json')).stdout), []);
    });

    it('updates a machine, keeping the config it does not change', async () => {
      const run = await hangar('machines', 'run', 'hangar/busybox', '--app', 'upd', '--env', 'KEEP=1', '--memory', '128', '--', 'sleep', '3600');
      assert.equal(run.code, 0, run.stderr);
      const id = run.stdout.split(/\s+/)[0]!;
      const r = await hangar('machines', 'update', id, '--app', 'upd', '--env', 'ADDED=2', '--cpus', '2', '--disk', '9', '--json');
      assert.equal(r.code, 0, r.stderr);
      const m = JSON.parse(r.stdout) as { state: string; config: { image: string; env: Record<string, string>; init: { cmd: string[] }; guest: { cpus: number; memory_mb: number }; rootfs: { size_gb: number } } };
      assert.equal(m.config.image, 'hangar/busybox');
      assert.deepEqual(m.config.env, { KEEP: '1', ADDED: '2' });
      assert.deepEqual(m.config.init.cmd, ['sleep', '3600']);
      assert.equal(m.config.guest.cpus, 2);
      assert.equal(m.config.guest.memory_mb, 128);
      assert.equal(m.config.rootfs.size_gb, 9);
      const exec = await hangar('machines', 'exec', id, '--app', 'upd', '--', 'sh', '-c', 'echo $KEEP$ADDED');
      assert.equal(exec.stdout, '12\n', 'a started machine restarts on the new config');
      const nothing = await hangar('machines', 'update', id, '--app', 'upd');
      assert.equal(nothing.code, 1);
      assert.match(nothing.stderr, /needs something to change/);
      assert.equal((await hangar('machines', 'destroy', id, '--app', 'upd', '--force')).code, 0);
    });

    it('says which app a machine is in, and hints with hangar commands, not REST routes', async () => {
      const run = await hangar('machines', 'run', 'hangar/busybox', '--app', 'home', '--', 'sleep', '3600');
      assert.equal(run.code, 0, run.stderr);
      const id = run.stdout.split(/\s+/)[0]!;
      assert.equal((await hangar('apps', 'create', 'away')).code, 0);
      const elsewhere = await hangar('machines', 'status', id, '--app', 'away');
      assert.equal(elsewhere.code, 1);
      assert.match(elsewhere.stderr, new RegExp(`^error: no machine ${id} in app away; it is in app home$`, 'm'));
      assert.match(elsewhere.stderr, new RegExp(`^hint: it is in app home: add --app home, e.g. hangar machines status ${id} --app home$`, 'm'));
      assert.equal((await hangar('machines', 'stop', id, '--app', 'home')).code, 0);
      // ps, not exec: an exec would start the stopped machine (autostart).
      const stopped = await hangar('machines', 'ps', id, '--app', 'home');
      assert.equal(stopped.code, 1);
      assert.match(stopped.stderr, new RegExp(`^hint: run hangar machines start ${id} --app home$`, 'm'));
      const missing = await hangar('machines', 'start', '0123456789abcd', '--app', 'home');
      assert.match(missing.stderr, /^hint: run hangar machines list --app home$/m);
      for (const r of [elsewhere, stopped, missing]) assert.doesNotMatch(r.stderr, /POST|GET|\/v1\//);
      assert.equal((await hangar('machines', 'destroy', id, '--app', 'home')).code, 0);
    });
  });

  it('lists and inspects images, and builds base images with progress', async () => {
    const build = await hangar('images', 'build-base', 'hangar/busybox');
    assert.equal(build.code, 0, build.stderr);
    assert.match(build.stdout, /hangar\/busybox:latest\s+sha256:/);
    assert.match((await hangar('images', 'list')).stdout, /hangar\/busybox:latest/);
    const inspect = JSON.parse((await hangar('images', 'inspect', 'hangar/busybox')).stdout) as { config: { Cmd: string[] } };
    assert.ok(Array.isArray(inspect.config.Cmd));
  });
});
