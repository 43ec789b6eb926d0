import { parseArgs } from 'node:util';
import type { PullProgress } from '../images/image-service.ts';
import { HangarApiError } from '../sdk/index.ts';
import { CliError, connect } from './connect.ts';
import { ago, printJson, printTable } from './output.ts';
import { PullProgressView } from './pull-progress.ts';

export const imagesUsage = `hangar images <command> [--json]
  pull REF | list | inspect REF | remove REF
  build-base [hangar/busybox | hangar/debian:bookworm]   (re)build a built-in base image`;

export async function images(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: { json: { type: 'boolean', default: false }, 'data-dir': { type: 'string' } },
  });
  const client = connect(values['data-dir']);
  const ref = () => positionals[0] ?? fail(`images ${verb} needs an image reference`);
  switch (verb) {
    case 'pull':
    case 'build-base': {
      const image = verb === 'pull' ? ref() : (positionals[0] ?? 'hangar/busybox');
      const view = new PullProgressView(process.stderr);
      const res = await client.raw('POST', '/v1/images/pull', { image }, { accept: 'application/x-ndjson' });
      let result: Record<string, unknown> | undefined;
      const decoder = new TextDecoder();
      let buffer = '';
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const msg = JSON.parse(buffer.slice(0, nl)) as { progress?: PullProgress; image?: Record<string, unknown>; code?: string };
          buffer = buffer.slice(nl + 1);
          if (msg.progress) view.update(msg.progress);
          else if (msg.image) result = msg.image;
          else if (msg.code) {
            view.finish();
            throw new HangarApiError(502, msg as never, 'pull failed');
          }
        }
      }
      view.finish();
      if (values.json) printJson(result);
      else if (result) process.stdout.write(`${String(result.name)}  ${String(result.digest)}\n`);
      return 0;
    }
    case 'list': {
      const list = await client.call<Array<{ name: string; digest: string; size_bytes: number; layers: number; created_at: string }>>('GET', '/v1/images');
      if (values.json) printJson(list);
      else printTable(list.map((i) => ({ name: i.name, digest: i.digest.slice(0, 19), size: `${(i.size_bytes / 2 ** 20).toFixed(1)} MB`, layers: i.layers, created: ago(i.created_at) })), ['name', 'digest', 'size', 'layers', 'created']);
      return 0;
    }
    case 'inspect':
      printJson(await client.call('GET', `/v1/images/inspect?image=${encodeURIComponent(ref())}`));
      return 0;
    case 'remove':
      await client.call('DELETE', `/v1/images?image=${encodeURIComponent(ref())}`);
      if (!values.json) process.stdout.write(`removed ${ref()}\n`);
      return 0;
    default:
      fail(`unknown command: images ${verb ?? ''}`.trim(), imagesUsage);
  }
}

function fail(message: string, hint?: string): never {
  throw new CliError(message, hint);
}
