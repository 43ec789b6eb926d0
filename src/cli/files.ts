import { createReadStream, createWriteStream } from 'node:fs';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { MachineFiles } from '../sdk/index.ts';
import { CliError, connect } from './connect.ts';
import { printJson, printTable } from './output.ts';
import { parseFlags } from './args.ts';

// `hangar files …`: files inside a machine, started or stopped, through the files API.

export const filesUsage = `hangar files <command> [--app APP] [--json]
  ls ID PATH                          list a directory
  stat ID PATH                        one entry (a symlink is shown, not followed)
  cat ID PATH                         print a file's bytes
  put ID PATH [LOCALFILE|-] [--mode 0644]
                                      write a file from LOCALFILE or stdin; parent dirs are created
  rm ID PATH [-r]                     remove a file, or a directory with -r
  mv ID FROM TO [--force]             move; --force replaces an existing TO
  get-tar ID PATH [OUT.tar|-]         download a directory as a tar archive (default: stdout)
  put-tar ID PATH [IN.tar|-]          unpack a tar archive (default: stdin) into a directory
Paths are absolute inside the machine. The app is --app, else $HANGAR_APP, else "default".`;

export async function files(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  if (verb === undefined || verb === 'help' || verb === '--help') {
    process.stdout.write(filesUsage + '\n');
    return verb === undefined ? 2 : 0;
  }
  const { values, positionals } = parseFlags('files', {
    args: rest,
    allowPositionals: true,
    options: {
      app: { type: 'string', default: process.env.HANGAR_APP ?? 'default' },
      json: { type: 'boolean', default: false },
      'data-dir': { type: 'string' },
      mode: { type: 'string' },
      recursive: { type: 'boolean', short: 'r', default: false },
      force: { type: 'boolean', short: 'f', default: false },
    },
  });
  const arg = (i: number, name: string): string => positionals[i] ?? fail(`files ${verb} needs ${name}`, filesUsage);
  const id = arg(0, 'a machine ID');
  const fs = new MachineFiles(connect(values['data-dir']), values.app, id);

  switch (verb) {
    case 'ls': {
      const entries = await fs.list(arg(1, 'a PATH'));
      if (values.json) printJson(entries);
      else {
        printTable(entries.map((e) => ({
          mode: e.mode.toString(8).padStart(4, '0'),
          size: e.size,
          mtime: e.mtime.slice(0, 19).replace('T', ' '),
          name: e.name + (e.type === 'dir' ? '/' : '') + (e.link_target !== undefined ? ` -> ${e.link_target}` : ''),
        })), ['mode', 'size', 'mtime', 'name']);
      }
      return 0;
    }
    case 'stat': {
      const s = await fs.stat(arg(1, 'a PATH'));
      if (values.json) printJson(s);
      else process.stdout.write(`${s.path}  ${s.type}  ${s.size} bytes  mode ${s.mode.toString(8).padStart(4, '0')}  ${s.mtime}${s.link_target !== undefined ? `  -> ${s.link_target}` : ''}\n`);
      return 0;
    }
    case 'cat':
      await pipeline(fromWeb(await fs.readStream(arg(1, 'a PATH'))), process.stdout);
      return 0;
    case 'put': {
      const path = arg(1, 'a PATH');
      if (values.mode !== undefined && !/^[0-7]{1,4}$/.test(values.mode)) fail(`--mode ${values.mode} is not octal`, '--mode 0644');
      const r = await fs.write(path, toWeb(positionals[2]), values.mode !== undefined ? { mode: Number.parseInt(values.mode, 8) } : {});
      if (values.json) printJson(r);
      else process.stdout.write(`wrote ${r.size} bytes to ${r.path} (mode ${r.mode.toString(8).padStart(4, '0')})\n`);
      return 0;
    }
    case 'rm':
      await fs.remove(arg(1, 'a PATH'), { recursive: values.recursive });
      if (!values.json) process.stdout.write(`removed ${positionals[1]}\n`);
      return 0;
    case 'mv':
      await fs.rename(arg(1, 'FROM'), arg(2, 'TO'), { overwrite: values.force });
      if (!values.json) process.stdout.write(`moved ${positionals[1]} to ${positionals[2]}\n`);
      return 0;
    case 'get-tar': {
      const out = positionals[2];
      await pipeline(fromWeb(await fs.downloadTar(arg(1, 'a PATH'))), out === undefined || out === '-' ? process.stdout : (createWriteStream(out) as Writable));
      return 0;
    }
    case 'put-tar': {
      const r = await fs.uploadTar(arg(1, 'a PATH'), toWeb(positionals[2]));
      if (values.json) printJson(r);
      else process.stdout.write(`unpacked ${r.members} members into ${r.path}\n`);
      return 0;
    }
    default:
      fail(`unknown command: files ${verb ?? ''}`.trim(), filesUsage);
  }
}

/** A local file, or stdin for '-' or nothing, as the web stream the SDK sends. */
function toWeb(local: string | undefined): ReadableStream<Uint8Array> {
  const source = local === undefined || local === '-' ? process.stdin : createReadStream(local);
  return Readable.toWeb(source) as unknown as ReadableStream<Uint8Array>;
}

function fromWeb(stream: ReadableStream<Uint8Array>): Readable {
  return Readable.fromWeb(stream as unknown as WebReadableStream<Uint8Array>);
}

function fail(message: string, hint: string): never {
  throw new CliError(message, hint);
}
