import { parseArgs } from 'node:util';
import type { Session } from '../sdk/index.ts';
import { CliError, connect } from './connect.ts';
import { ago, printJson, printTable } from './output.ts';
import { followUntilInterrupted } from './follow.ts';

// `hangar sessions`: commands that outlive the call that started them (and the daemon). Start
// one, come back later for its output, follow it, attach to its terminal, kill it.

export const sessionsUsage = `hangar sessions <command> [--app APP] [--json]
  start ID [--name N] [--tty] [--stdin] [--env K=V]... [--cwd DIR] -- CMD...
                                           start CMD in the machine; it keeps running after this
                                           returns (and across daemon restarts); prints its id
  list ID                                  the machine's sessions, running and recent, with exit codes
  output ID SESSION [-f] [--offset N] [--tail BYTES]
                                           its output (the last 6-8 MiB are kept); -f follows it
                                           until it ends and exits with its exit code
  attach ID SESSION [--offset N] [--tail BYTES]
                                           its output (all kept, or from an offset), then its
                                           terminal here: keys go to it, Ctrl-] detaches (it
                                           keeps running); exits with its exit code
  write ID SESSION TEXT                    write TEXT to its stdin (started with --stdin or --tty)
  kill ID SESSION [--signal S]             signal it (default SIGKILL)
SESSION is a session id or name.`;

/** Ctrl-]: the key that leaves an attach without touching the session, as telnet's escape. */
const DETACH_KEY = '\x1d';

export async function sessions(argv: string[]): Promise<number> {
  const dashes = argv.indexOf('--');
  const [verb, ...rest] = dashes >= 0 ? argv.slice(0, dashes) : argv;
  const command = dashes >= 0 ? argv.slice(dashes + 1) : [];
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      app: { type: 'string', default: process.env.HANGAR_APP ?? 'default' },
      json: { type: 'boolean', default: false },
      'data-dir': { type: 'string' },
      name: { type: 'string' },
      tty: { type: 'boolean', default: false },
      stdin: { type: 'boolean', default: false },
      env: { type: 'string', multiple: true, default: [] },
      cwd: { type: 'string' },
      follow: { type: 'boolean', short: 'f', default: false },
      offset: { type: 'string' },
      tail: { type: 'string' },
      signal: { type: 'string' },
    },
  });
  const client = connect(values['data-dir']);
  const app = values.app;
  const machine = () => positionals[0] ?? fail(`sessions ${verb} needs a machine ID`, `hangar sessions ${verb} ID`);
  const session = () => positionals[1] ?? fail(`sessions ${verb} needs a SESSION (id or name)`, `hangar sessions list ${machine()}`);

  switch (verb) {
    case 'start': {
      if (command.length === 0) fail('sessions start needs a command after --', 'hangar sessions start ID -- sh -c "npm run dev"');
      const env = Object.fromEntries(values.env.map((kv) => {
        const eq = kv.indexOf('=');
        return eq > 0 ? [kv.slice(0, eq), kv.slice(eq + 1)] : fail(`--env ${kv} is not K=V`, '--env KEY=value');
      }));
      const tty = values.tty && process.stdout.isTTY ? { rows: process.stdout.rows, cols: process.stdout.columns } : {};
      const s = await client.sessions.start(app, machine(), command, {
        ...(values.name ? { name: values.name } : {}),
        ...(values.tty ? { tty: true, ...tty } : {}),
        ...(values.stdin ? { stdin: true } : {}),
        ...(Object.keys(env).length ? { env } : {}),
        ...(values.cwd ? { cwd: values.cwd } : {}),
      });
      if (values.json) printJson(s);
      else process.stdout.write(`${s.id}  ${describe(s)}\n`);
      return 0;
    }
    case 'list': {
      const list = await client.sessions.list(app, machine());
      if (values.json) printJson(list);
      else {
        printTable(list.map((s) => ({
          id: s.id, name: s.name, state: s.state, exit: s.exit_code ?? '', reason: s.end_reason ?? '', created: ago(s.created_at), command: s.command.join(' '),
        })), ['id', 'name', 'state', 'exit', 'reason', 'created', 'command']);
      }
      return 0;
    }
    case 'output': {
      const from = {
        ...(values.offset !== undefined ? { offset: Number(values.offset) } : {}),
        ...(values.tail !== undefined ? { tailBytes: Number(values.tail) } : {}),
      };
      if (!values.follow) {
        const read = await client.sessions.read(app, machine(), session(), from);
        if (values.json) printJson(read);
        else {
          if (read.gap) process.stderr.write(`hangar: bytes ${read.gap.from}-${read.gap.to} are no longer kept\n`);
          process.stdout.write(read.data);
        }
        return 0;
      }
      return followUntilInterrupted((signal) => client.sessions.follow(app, machine(), session(), { ...from, signal }), (e) => {
        if (values.json) process.stdout.write(JSON.stringify(e) + '\n');
        else if (e.type === 'output') process.stdout.write(e.data);
        else if (e.type === 'gap') process.stderr.write(`hangar: bytes ${e.from}-${e.to} are no longer kept\n`);
        else return e.session.exit_code ?? 1;
      });
    }
    case 'attach':
      return attach(client, app, machine(), session(), {
        ...(values.offset !== undefined ? { offset: Number(values.offset) } : {}),
        ...(values.tail !== undefined ? { tailBytes: Number(values.tail) } : {}),
      });
    case 'write':
      await client.sessions.write(app, machine(), session(), positionals[2] ?? fail('sessions write needs TEXT', 'hangar sessions write ID SESSION "ls\\n"'));
      return 0;
    case 'kill': {
      const s = await client.sessions.kill(app, machine(), session(), values.signal);
      if (values.json) printJson(s);
      else process.stdout.write(`${s.id}  ${describe(s)}\n`);
      return 0;
    }
    default:
      fail(`unknown command: sessions ${verb ?? ''}`.trim(), sessionsUsage);
  }
}

async function attach(client: ReturnType<typeof connect>, app: string, machine: string, session: string, from: { offset?: number; tailBytes?: number }): Promise<number> {
  const { stdin, stdout } = process;
  const a = client.sessions.attach(app, machine, session, from);
  a.onOutput((data) => stdout.write(data));
  a.onError((err) => process.stderr.write(`\r\nhangar: ${err.message}\r\n`));
  const onResize = () => a.resize(stdout.rows, stdout.columns);
  const s = await client.sessions.get(app, machine, session);
  if (s.tty && stdout.isTTY) {
    onResize();
    stdout.on('resize', onResize);
  }
  if (stdin.isTTY) stdin.setRawMode(true);
  stdin.setEncoding('utf8');
  let detached = false;
  stdin.on('data', (data: string) => {
    const at = data.indexOf(DETACH_KEY);
    if (at < 0) return a.write(data);
    if (at > 0) a.write(data.slice(0, at));
    detached = true;
    a.detach();
  });
  try {
    const end = await a.ended;
    return end.exit_code ?? 1;
  } catch (err) {
    if (!detached) throw err;
    process.stderr.write(`\r\nhangar: detached; session ${s.id} keeps running\r\n`);
    return 0;
  } finally {
    if (stdin.isTTY) stdin.setRawMode(false);
    stdin.pause();
    stdout.off('resize', onResize);
  }
}

function describe(s: Session): string {
  if (s.state === 'running') return 'running';
  return `exited  exit_code=${s.exit_code ?? 'unknown'}${s.signal ? ` (${s.signal})` : ''}  ${s.end_reason ?? ''}`.trimEnd();
}

function fail(message: string, hint?: string): never {
  throw new CliError(message, hint);
}
