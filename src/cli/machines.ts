import type { Machine } from '../protocol/schemas.ts';
import { HangarApiError, type HangarClient } from '../sdk/index.ts';
import { CliError, connect, proxyUrls } from './connect.ts';
import { ago, printJson, printTable } from './output.ts';
import { servicesFromFlags } from './service-flags.ts';
import { CommitProgressView } from './commit-progress.ts';
import { nearest, parseFlags } from './args.ts';
import { top } from './machines-top.ts';
import { showEgress } from './machines-egress.ts';
import { followUntilInterrupted } from './follow.ts';
import { parseDurationMs } from '../protocol/duration.ts';

export const machinesUsage = `hangar machines <command> [--app APP] [--json]
  run IMAGE [--name N] [--env K=V]... [--memory MB] [--cpus N] [--disk GB] [--restart no|always|on-failure]
            [--port PORT[:INTERNAL][/tcp[:HANDLER...]]]... [--autostop off|stop|suspend] [--no-autostart]
            [--volume VOLUME:/PATH]... [--skip-launch] [-- CMD...]
                                           create (and start) a machine; the app is created if needed.
                                           --volume mounts a volume (hangar volumes create) at PATH.
                                           --port gives it a service the edge proxy routes
                                           http://<app>.localhost to, as flyctl's does:
                                           --port 80:8080/tcp:http --port 443:8080/tcp:http:tls
  list [--all]                             machines of the app (--all includes destroyed)
  status ID                                one machine with its recent events
  update ID [--image IMAGE] [--env K=V]... [--memory MB] [--cpus N] [--disk GB] [--restart POLICY] [-- CMD...]
                                           change those and keep the rest of its config; a started
                                           machine restarts on the new config
  start ID | stop ID [--signal S] [--timeout 10s] | restart ID
  exec ID [--timeout S] [--checkpoint-first] -- CMD...
                                           run a command, its output live; exits with its code (Ctrl-C kills it);
                                           --checkpoint-first captures the machine before, to roll the command back
  ps ID                                    the machine's processes and the ports they listen on
  top [ID...] [--once] [--interval 2s]     started machines' CPU, memory, processes, disk and network, redrawn
                                           every interval until Ctrl-C (--once: one table; --json: the figures)
  logs ID [-f] [--tail N]                  the machine's stdout and stderr
  egress ID [-f] [--tail N]                names it looked up outside its app, connections it opened
                                           (bytes when they end), attempts its egress policy refused
  fork ID [--count N] [--checkpoint C] [--name N] [--skip-launch]
                                           new machines on copies of its filesystem (now, or a checkpoint's)
  commit ID IMAGE [--push] [--checkpoint C]
                                           an image of its filesystem (now, or a checkpoint's), its command
                                           and env; stored as IMAGE (REGISTRY/REPO:TAG), pushed with --push
  destroy ID [--force]
The app is --app, else $HANGAR_APP, else "default".`;

const common = {
  app: { type: 'string', default: process.env.HANGAR_APP ?? 'default' },
  json: { type: 'boolean', default: false },
  'data-dir': { type: 'string' },
} as const;

export async function machines(argv: string[]): Promise<number> {
  const dashes = argv.indexOf('--');
  const [verb, ...rest] = dashes >= 0 ? argv.slice(0, dashes) : argv;
  const command = dashes >= 0 ? argv.slice(dashes + 1) : [];
  const { values, positionals } = parseFlags('machines', {
    args: rest,
    allowPositionals: true,
    allowNegative: true,
    options: {
      ...common,
      name: { type: 'string' },
      port: { type: 'string', short: 'p', multiple: true, default: [] },
      autostop: { type: 'string' },
      autostart: { type: 'boolean' },
      env: { type: 'string', multiple: true, default: [] },
      volume: { type: 'string', short: 'v', multiple: true, default: [] },
      image: { type: 'string' },
      memory: { type: 'string' },
      disk: { type: 'string' },
      cpus: { type: 'string' },
      restart: { type: 'string' },
      count: { type: 'string' },
      checkpoint: { type: 'string' },
      'checkpoint-first': { type: 'boolean', default: false },
      'skip-launch': { type: 'boolean', default: false },
      all: { type: 'boolean', default: false },
      signal: { type: 'string' },
      timeout: { type: 'string' },
      force: { type: 'boolean', default: false },
      push: { type: 'boolean', default: false },
      follow: { type: 'boolean', short: 'f', default: false },
      tail: { type: 'string', default: '100' },
      once: { type: 'boolean', default: false },
      interval: { type: 'string', default: '2s' },
    },
  });
  if (!VERBS.includes(verb ?? '')) {
    const guess = nearest(verb ?? '', VERBS);
    fail(`unknown command: machines ${verb ?? ''}`.trim(), guess ? `did you mean hangar machines ${guess}?` : machinesUsage);
  }
  const client = connect(values['data-dir']);
  const app = values.app;
  const id = () => positionals[0] ?? fail(`machines ${verb} needs a machine ID`, `hangar machines ${verb} ID`);
  const show = (m: Machine) => (values.json ? printJson(m) : printMachine(m));

  switch (verb) {
    case 'run': {
      const image = positionals[0] ?? fail('machines run needs an IMAGE', 'hangar machines run hangar/busybox -- sleep 3600');
      await ensureApp(client, app);
      const env = envFlags(values.env);
      const services = servicesFromFlags({ ports: values.port, autostop: values.autostop, autostart: values.autostart });
      const mounts = values.volume.map((spec) => {
        const colon = spec.indexOf(':');
        return colon > 0 ? { volume: spec.slice(0, colon), path: spec.slice(colon + 1) } : fail(`--volume ${spec} is not VOLUME:/PATH`, '--volume vol_abc123:/data');
      });
      const m = await client.machines.create(app, {
        ...(values.name ? { name: values.name } : {}),
        skip_launch: values['skip-launch'],
        config: {
          image,
          ...(Object.keys(env).length ? { env } : {}),
          ...(command.length ? { init: { cmd: command } } : {}),
          ...(values.disk ? { rootfs: { size_gb: Number(values.disk) } } : {}),
          ...(values.memory || values.cpus ? { guest: { ...(values.memory ? { memory_mb: Number(values.memory) } : {}), ...(values.cpus ? { cpus: Number(values.cpus) } : {}) } } : {}),
          ...(values.restart ? { restart: { policy: values.restart as 'no' | 'always' | 'on-failure' } } : {}),
          ...(services ? { services } : {}),
          ...(mounts.length ? { mounts } : {}),
        },
      });
      if (values.json) printJson(m);
      else {
        process.stdout.write(`${m.id}  ${m.state}  (app ${app}, image ${m.config.image})\n`);
        const urls = services ? proxyUrls(values['data-dir'], app) : [];
        if (urls.length) process.stdout.write(`reach it at ${urls.join(' and ')}\n`);
      }
      return 0;
    }
    case 'list': {
      // An app that does not exist yet (the default one on a fresh daemon) has no machines.
      const list = await client.machines.list(app, { includeDeleted: values.all }).catch((err: unknown) => {
        if (err instanceof HangarApiError && err.code === 'app_not_found') return [];
        throw err;
      });
      if (values.json) printJson(list);
      else printTable(list.map((m) => ({ id: m.id, name: m.name, state: m.state, image: m.config.image, created: ago(m.created_at) })), ['id', 'name', 'state', 'image', 'created']);
      return 0;
    }
    case 'status':
      show(await client.machines.get(app, id()));
      return 0;
    case 'update': {
      const { config } = await client.machines.get(app, id());
      const env = envFlags(values.env);
      const changed = {
        ...(values.image ? { image: values.image } : {}),
        ...(Object.keys(env).length ? { env: { ...config.env, ...env } } : {}),
        ...(command.length ? { init: { ...config.init, cmd: command } } : {}),
        ...(values.disk ? { rootfs: { ...config.rootfs, size_gb: Number(values.disk) } } : {}),
        ...(values.memory || values.cpus
          ? { guest: { ...config.guest, ...(values.memory ? { memory_mb: Number(values.memory) } : {}), ...(values.cpus ? { cpus: Number(values.cpus) } : {}) } }
          : {}),
        ...(values.restart ? { restart: { ...config.restart, policy: values.restart as 'no' | 'always' | 'on-failure' } } : {}),
      };
      if (Object.keys(changed).length === 0) fail('machines update needs something to change', 'e.g. hangar machines update ID --memory 512 --env KEY=value');
      show(await client.machines.update(app, id(), { config: { ...config, ...changed } }));
      return 0;
    }
    case 'start':
      await client.machines.start(app, id());
      show(await client.machines.get(app, id()));
      return 0;
    case 'stop':
      await client.machines.stop(app, id(), { ...(values.signal ? { signal: values.signal } : {}), ...(values.timeout ? { timeout: values.timeout } : {}) });
      show(await client.machines.get(app, id()));
      return 0;
    case 'restart':
      await client.machines.restart(app, id());
      show(await client.machines.get(app, id()));
      return 0;
    case 'fork': {
      const { machines: made } = await client.machines.fork(app, id(), {
        ...(values.count ? { count: Number(values.count) } : {}),
        ...(values.checkpoint ? { checkpoint: values.checkpoint } : {}),
        ...(values.name ? { name: values.name } : {}),
        ...(values['skip-launch'] ? { skip_launch: true } : {}),
      });
      if (values.json) printJson(made);
      else for (const m of made) process.stdout.write(`${m.id} ${m.name} ${m.state} ${m.private_ip}\n`);
      return 0;
    }
    case 'commit': {
      const image = positionals[1] ?? fail('machines commit needs an IMAGE to store it as', 'hangar machines commit ID 127.0.0.1:5000/team/app:v2 [--push]');
      const view = new CommitProgressView(process.stderr);
      const made = await client.machines
        .commit(app, id(), { image, ...(values.push ? { push: true } : {}), ...(values.checkpoint ? { checkpoint: values.checkpoint } : {}) }, { onProgress: (p) => view.update(p) })
        .finally(() => view.finish());
      if (values.json) printJson(made);
      else {
        process.stdout.write(`${made.image}  ${made.digest}${made.pushed ? '  (pushed)' : ''}\n`);
        for (const s of made.skipped) process.stderr.write(`left out ${s.path} (${s.type}: an image cannot carry it)\n`);
      }
      return 0;
    }
    case 'destroy':
      await client.machines.destroy(app, id(), { force: values.force });
      if (!values.json) process.stdout.write(`destroyed ${id()}\n`);
      return 0;
    case 'exec': {
      if (command.length === 0) fail('machines exec needs a command after --', 'hangar machines exec ID -- ls -l /');
      const run = client.machines.execStream(app, id(), {
        command, ...(values.timeout ? { timeout: Number.parseInt(values.timeout, 10) } : {}), ...(values['checkpoint-first'] ? { checkpoint: true } : {}),
      });
      process.once('SIGINT', () => run.kill());
      if (!values.json) for await (const chunk of run) (chunk.stream === 'stdout' ? process.stdout : process.stderr).write(chunk.data);
      const res = await run.wait().catch((err: unknown) => {
        if (err instanceof Error && err.name === 'AbortError') fail('the command was cancelled');
        throw err;
      });
      if (values.json) {
        printJson(res);
        return 0;
      }
      if (res.timedOut) process.stderr.write('hangar: the command was killed at its timeout\n');
      if (res.checkpointId) process.stderr.write(`hangar: checkpoint ${res.checkpointId} was taken before it; undo with: hangar checkpoints restore ${id()} ${res.checkpointId} --app ${app}\n`);
      if (res.stopped) process.stderr.write(`hangar: ${res.stopped.message}\nhint: ${res.stopped.hint}\n`);
      return res.exitCode;
    }
    case 'ps': {
      const list = await client.machines.ps(app, id());
      if (values.json) printJson(list);
      else {
        printTable(list.map((p) => ({
          pid: p.pid, rss: `${Math.round(p.rss / 1024)}K`, cpu: `${p.cpu}%`,
          listen: p.listen_sockets.map((s) => `${s.proto}/${s.address}`).join(','), command: p.command,
        })), ['pid', 'rss', 'cpu', 'listen', 'command']);
      }
      return 0;
    }
    case 'top':
      return top(client, { app, ids: positionals, once: values.once, intervalMs: parseDurationMs(values.interval) ?? fail(`--interval ${values.interval} is not a duration`, '--interval 2s'), json: values.json });
    case 'logs': {
      if (!values.follow) {
        const { lines } = await client.machines.logs(app, id(), { tail: Number(values.tail) });
        for (const line of lines) process.stdout.write(line + '\n');
        return 0;
      }
      return followUntilInterrupted((signal) => client.machines.followLogs(app, id(), { tail: Number(values.tail), signal }), (line) => {
        process.stdout.write(line + '\n');
      });
    }
    case 'egress':
      return showEgress(client, app, id(), { follow: values.follow, tail: Number(values.tail), json: values.json });
    default:
      fail(`unknown command: machines ${verb ?? ''}`.trim(), machinesUsage);
  }
}

async function ensureApp(client: HangarClient, app: string): Promise<void> {
  try {
    await client.apps.get(app);
  } catch (err) {
    if (!(err instanceof HangarApiError && err.code === 'app_not_found')) throw err;
    await client.apps.create(app);
  }
}

function printMachine(m: Machine): void {
  const lines = [
    `id:          ${m.id}`,
    `name:        ${m.name}`,
    `state:       ${m.state}`,
    `image:       ${m.config.image}  (${m.image_ref.digest})`,
    `instance_id: ${m.instance_id}`,
    `created:     ${m.created_at} (${ago(m.created_at)})`,
    `events:`,
    ...m.events.slice(0, 8).map((e) => `  ${new Date(e.timestamp).toISOString()}  ${e.type.padEnd(7)} ${e.status.padEnd(9)} ${e.source}${exitNote(e.request)}`),
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

function exitNote(request: Record<string, unknown> | undefined): string {
  const exit = request?.exit_event as { exit_code?: number; oom_killed?: boolean } | undefined;
  if (!exit) return request?.error ? `  (${String(request.error)})` : '';
  return `  exit_code=${exit.exit_code}${exit.oom_killed ? ' oom_killed' : ''}`;
}

const VERBS = ['run', 'list', 'status', 'update', 'start', 'stop', 'restart', 'exec', 'ps', 'top', 'logs', 'egress', 'fork', 'commit', 'destroy'];

/** `--env K=V` flags as an env object. */
function envFlags(flags: string[]): Record<string, string> {
  return Object.fromEntries(flags.map((kv) => {
    const eq = kv.indexOf('=');
    return eq > 0 ? [kv.slice(0, eq), kv.slice(eq + 1)] : fail(`--env ${kv} is not K=V`, '--env KEY=value');
  }));
}

function fail(message: string, hint?: string): never {
  throw new CliError(message, hint);
}
