import type { Checkpoint } from '../sdk/index.ts';
import { CliError, connect } from './connect.ts';
import { ago, printJson, printTable } from './output.ts';
import { parseFlags } from './args.ts';

export const checkpointsUsage = `hangar checkpoints <command> MACHINE [--app APP] [--json]
  create MACHINE [--name N] [--comment C]  capture the machine's disk, stopped or started
  list MACHINE                             its checkpoints, newest first
  restore MACHINE CHECKPOINT               roll the disk back (a started machine restarts on it)
  delete MACHINE CHECKPOINT
  diff MACHINE [CHECKPOINT] [--from C] [--to C] [--content]
                                           what a checkpoint changed since the one before it; or
                                           from --from (default: the image) to --to (default: now)
CHECKPOINT is an id or a name.`;

export async function checkpoints(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const { values, positionals } = parseFlags('checkpoints', {
    args: rest,
    allowPositionals: true,
    options: {
      app: { type: 'string', default: process.env.HANGAR_APP ?? 'default' },
      json: { type: 'boolean', default: false },
      'data-dir': { type: 'string' },
      name: { type: 'string' },
      comment: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      content: { type: 'boolean', default: false },
    },
  });
  const [machine, checkpoint] = positionals;
  const needs = (what: string, usage: string): never => {
    throw new CliError(`checkpoints ${verb} needs ${what}`, `hangar checkpoints ${usage} --app ${values.app}`);
  };
  const client = connect(values['data-dir']);
  const app = values.app;
  const show = (c: Checkpoint) => (values.json ? printJson(c) : process.stdout.write(`${c.id}  ${c.name}  ${formatBytes(c.size_bytes)}\n`));
  switch (verb) {
    case 'create': {
      if (!machine) needs('a machine ID', 'create MACHINE');
      show(await client.checkpoints.create(app, machine!, { ...(values.name ? { name: values.name } : {}), ...(values.comment ? { comment: values.comment } : {}) }));
      return 0;
    }
    case 'list':
    case 'ls': {
      if (!machine) needs('a machine ID', 'list MACHINE');
      const list = await client.checkpoints.list(app, machine!);
      if (values.json) printJson(list);
      else printTable(list.map((c) => ({ ID: c.id, NAME: c.name, SIZE: formatBytes(c.size_bytes), CREATED: ago(c.created_at), PARENT: c.parent_id ?? '', COMMENT: c.comment })), ['ID', 'NAME', 'SIZE', 'CREATED', 'PARENT', 'COMMENT']);
      return 0;
    }
    case 'restore': {
      if (!machine || !checkpoint) needs('a machine ID and a checkpoint', 'restore MACHINE CHECKPOINT');
      const m = await client.checkpoints.restore(app, machine!, checkpoint!);
      if (values.json) printJson(m);
      else process.stdout.write(`${m.id} restored to ${checkpoint}; it is ${m.state}\n`);
      return 0;
    }
    case 'delete':
    case 'rm': {
      if (!machine || !checkpoint) needs('a machine ID and a checkpoint', 'delete MACHINE CHECKPOINT');
      await client.checkpoints.delete(app, machine!, checkpoint!);
      return 0;
    }
    case 'diff': {
      if (!machine) needs('a machine ID', 'diff MACHINE [CHECKPOINT]');
      const opts = { ...(values.content ? { content: true } : {}), limit: 10_000 };
      const diff = checkpoint
        ? await client.checkpoints.diff(app, machine!, checkpoint, opts)
        : await client.checkpoints.diffMachine(app, machine!, { ...opts, ...(values.from ? { from: values.from } : {}), ...(values.to ? { to: values.to } : {}) });
      if (values.json) {
        printJson(diff);
        return 0;
      }
      for (const c of diff.changes) {
        const mark = c.change === 'added' ? 'A' : c.change === 'deleted' ? 'D' : 'M';
        process.stdout.write(`${mark} ${c.path}${c.type === 'directory' ? '/' : ''}${c.size !== undefined ? `  ${formatBytes(c.size)}` : ''}\n`);
        if (c.diff) process.stdout.write(c.diff);
      }
      if (diff.truncated) process.stderr.write('(more changes than listed; narrow the range with --from/--to)\n');
      return 0;
    }
    default:
      throw new CliError(verb ? `unknown checkpoints command ${verb}` : 'checkpoints needs a command', checkpointsUsage);
  }
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  for (; v >= 1024 && i < units.length - 1; i++) v /= 1024;
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}
