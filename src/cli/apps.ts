import { parseArgs } from 'node:util';
import { CliError, connect } from './connect.ts';
import { printJson, printTable } from './output.ts';

export const appsUsage = `hangar apps <command> [--json]
  list | create NAME | show NAME | destroy NAME   (destroy also destroys the app's machines)`;

export async function apps(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: { json: { type: 'boolean', default: false }, 'data-dir': { type: 'string' } },
  });
  const client = connect(values['data-dir']);
  const name = () => positionals[0] ?? fail(`apps ${verb} needs an app NAME`);
  switch (verb) {
    case 'list': {
      const { apps } = await client.apps.list();
      if (values.json) printJson(apps);
      else printTable(apps.map((a) => ({ name: a.name, machines: a.machine_count })), ['name', 'machines']);
      return 0;
    }
    case 'create': {
      const app = await client.apps.create(name());
      if (values.json) printJson(app);
      else process.stdout.write(`created app ${app.name}\n`);
      return 0;
    }
    case 'show':
      printJson(await client.apps.get(name()));
      return 0;
    case 'destroy':
      await client.apps.delete(name());
      if (!values.json) process.stdout.write(`destroyed app ${name()}\n`);
      return 0;
    default:
      fail(`unknown command: apps ${verb ?? ''}`.trim(), appsUsage);
  }
}

function fail(message: string, hint?: string): never {
  throw new CliError(message, hint);
}
