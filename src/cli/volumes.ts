import { parseArgs } from 'node:util';
import type { Volume } from '../sdk/index.ts';
import { CliError, connect } from './connect.ts';
import { ago, printJson, printTable } from './output.ts';

export const volumesUsage = `hangar volumes <command> [--app APP] [--json]
  create NAME [--size GB] [--from VOLUME] [--snapshot SNAPSHOT]
                             a volume (default 1 GB): empty, a copy of another, or of a snapshot;
                             mount it with config.mounts [{"volume": ID, "path": "/data"}]
  list                       the app's volumes
  show VOLUME
  extend VOLUME --size GB    grow it (a machine using it keeps running and sees the new size)
  snapshot VOLUME            snapshot it, even while a machine writes
  snapshots VOLUME           its snapshots, newest first
  destroy VOLUME             (refused while a machine has it)`;

export async function volumes(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      app: { type: 'string', default: process.env.HANGAR_APP ?? 'default' },
      json: { type: 'boolean', default: false },
      'data-dir': { type: 'string' },
      size: { type: 'string' },
      from: { type: 'string' },
      snapshot: { type: 'string' },
    },
  });
  const [target] = positionals;
  const app = values.app;
  const needs = (what: string, usage: string): never => {
    throw new CliError(`volumes ${verb} needs ${what}`, `hangar volumes ${usage} --app ${app}`);
  };
  const size = (): number | undefined => {
    if (values.size === undefined) return undefined;
    const n = Number(values.size);
    if (!Number.isInteger(n) || n < 1) throw new CliError(`--size ${values.size} is not a whole number of GB`, 'give --size 1 or more');
    return n;
  };
  const client = connect(values['data-dir']);
  const show = (v: Volume) => (values.json ? printJson(v) : process.stdout.write(`${v.id}  ${v.name}  ${v.size_gb} GB${v.attached_machine_id ? `  attached to ${v.attached_machine_id}` : ''}\n`));
  switch (verb) {
    case 'create': {
      if (!target) needs('a NAME', 'create NAME [--size GB]');
      const sizeGb = size();
      show(await client.volumes.create(app, {
        name: target!,
        ...(sizeGb ? { size_gb: sizeGb } : {}),
        ...(values.from ? { source_volume_id: values.from } : {}),
        ...(values.snapshot ? { snapshot_id: values.snapshot } : {}),
      }));
      return 0;
    }
    case 'list':
    case 'ls': {
      const list = await client.volumes.list(app);
      if (values.json) printJson(list);
      else printTable(list.map((v) => ({ ID: v.id, NAME: v.name, SIZE: `${v.size_gb} GB`, ATTACHED: v.attached_machine_id ?? '', CREATED: ago(v.created_at) })), ['ID', 'NAME', 'SIZE', 'ATTACHED', 'CREATED']);
      return 0;
    }
    case 'show': {
      if (!target) needs('a VOLUME id', 'show VOLUME');
      const v = await client.volumes.get(app, target!);
      if (values.json) printJson(v);
      else {
        show(v);
        if (v.blocks !== undefined) process.stdout.write(`  ${(((v.blocks - v.blocks_free!) * v.block_size!) / 2 ** 20).toFixed(0)} MiB used of ${((v.blocks * v.block_size!) / 2 ** 20).toFixed(0)} MiB\n`);
      }
      return 0;
    }
    case 'extend': {
      const sizeGb = size();
      if (!target || !sizeGb) needs('a VOLUME id and --size GB', 'extend VOLUME --size GB');
      const { volume } = await client.volumes.extend(app, target!, sizeGb!);
      show(volume);
      return 0;
    }
    case 'snapshot': {
      if (!target) needs('a VOLUME id', 'snapshot VOLUME');
      const s = await client.volumes.snapshots.create(app, target!);
      if (values.json) printJson(s);
      else process.stdout.write(`${s.id}  of ${target}, ${s.size} bytes\n`);
      return 0;
    }
    case 'snapshots': {
      if (!target) needs('a VOLUME id', 'snapshots VOLUME');
      const list = await client.volumes.snapshots.list(app, target!);
      if (values.json) printJson(list);
      else printTable(list.map((s) => ({ ID: s.id, SIZE: s.size, CREATED: ago(s.created_at) })), ['ID', 'SIZE', 'CREATED']);
      return 0;
    }
    case 'destroy':
    case 'delete':
    case 'rm': {
      if (!target) needs('a VOLUME id', 'destroy VOLUME');
      const v = await client.volumes.delete(app, target!);
      if (values.json) printJson(v);
      else process.stdout.write(`destroyed ${v.id} (${v.name})\n`);
      return 0;
    }
    default:
      throw new CliError(verb ? `unknown volumes command ${verb}` : 'volumes needs a command', volumesUsage);
  }
}
