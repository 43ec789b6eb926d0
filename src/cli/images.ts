import { CliError, connect } from './connect.ts';
import { ago, printJson, printTable } from './output.ts';
import { PullProgressView } from './pull-progress.ts';
import { parseFlags } from './args.ts';

export const imagesUsage = `hangar images <command> [--json]
  pull REF | list | inspect REF | remove REF
  build-base [hangar/busybox | hangar/debian:bookworm]   (re)build a built-in base image`;

export async function images(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const { values, positionals } = parseFlags('images', {
    args: rest,
    allowPositionals: true,
    options: { json: { type: 'boolean', default: false }, 'data-dir': { type: 'string' } },
  });
  const client = connect(values['data-dir']);
  const ref = () => positionals[0] ?? fail(`images ${verb} needs an image reference`);
  switch (verb) {
    case 'pull':
    case 'build-base': {
      const view = new PullProgressView(process.stderr);
      const image = await client.images
        .pull(verb === 'pull' ? ref() : (positionals[0] ?? 'hangar/busybox'), { onProgress: (p) => view.update(p) })
        .finally(() => view.finish());
      if (values.json) printJson(image);
      else process.stdout.write(`${image.name}  ${image.digest}\n`);
      return 0;
    }
    case 'list': {
      const list = await client.images.list();
      if (values.json) printJson(list);
      else printTable(list.map((i) => ({ name: i.name, digest: i.digest.slice(0, 19), size: `${(i.size_bytes / 2 ** 20).toFixed(1)} MB`, layers: i.layers, created: ago(i.created_at) })), ['name', 'digest', 'size', 'layers', 'created']);
      return 0;
    }
    case 'inspect':
      printJson(await client.images.inspect(ref()));
      return 0;
    case 'remove':
      await client.images.remove(ref());
      if (!values.json) process.stdout.write(`removed ${ref()}\n`);
      return 0;
    default:
      fail(`unknown command: images ${verb ?? ''}`.trim(), imagesUsage);
  }
}

function fail(message: string, hint?: string): never {
  throw new CliError(message, hint);
}
