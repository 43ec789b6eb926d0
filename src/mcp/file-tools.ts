import { z } from 'zod';
import { HangarApiError, MachineFiles } from '../sdk/index.ts';
import { appArg, CHANGES, DESTROYS, machineArg, pathArg, READ_ONLY, tool, type ToolContext } from './tool-def.ts';

// Files inside a machine, through the files API; it works whether the machine is started or not.

const DEFAULT_READ_BYTES = 256 * 1024;
const MAX_READ_BYTES = 4 * 1024 * 1024;

/** Reads bytes [offset, offset+length) of a file, plus one byte past it to learn whether more follows. */
async function readSpan(ctx: ToolContext, app: string, id: string, path: string, offset: number, length: number): Promise<{ bytes: Uint8Array; more: boolean }> {
  const files = new MachineFiles(ctx.client, app, id);
  try {
    const bytes = await files.read(path, { range: { start: offset, end: offset + length }, signal: ctx.signal });
    return { bytes: bytes.subarray(0, Math.min(bytes.length, length)), more: bytes.length > length };
  } catch (err) {
    // An empty file has no byte 0 to range over; anything else past the end is the caller's mistake.
    if (offset === 0 && err instanceof HangarApiError && err.code === 'range_not_satisfiable') return { bytes: new Uint8Array(0), more: false };
    throw err;
  }
}

/** The bytes as text when they are UTF-8 without NULs; a character cut at the end is left for the next read. */
function asText(bytes: Uint8Array): { text: string; used: number } | undefined {
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(bytes, { stream: true });
    if (text.includes('\0') || (text === '' && bytes.length > 0)) return undefined;
    return { text, used: new TextEncoder().encode(text).length };
  } catch {
    return undefined;
  }
}

export const fileTools = [
  tool({
    name: 'file_read',
    description:
      'Read a file from a machine (started or stopped). Returns UTF-8 text, or base64 with encoding "base64" for binary content. ' +
      `Reads at most length bytes (default ${DEFAULT_READ_BYTES}); when more follows, next_offset says where to continue.`,
    input: {
      app: appArg,
      id: machineArg,
      path: pathArg,
      offset: z.int().min(0).default(0).meta({ description: 'Byte offset to start at' }),
      length: z.int().min(1).max(MAX_READ_BYTES).default(DEFAULT_READ_BYTES).meta({ description: `Bytes to read, at most ${MAX_READ_BYTES}` }),
    },
    annotations: READ_ONLY,
    run: async ({ app, id, path, offset, length }, ctx) => {
      const { bytes, more } = await readSpan(ctx, app, id, path, offset, length);
      const text = asText(bytes);
      const used = text?.used ?? bytes.length;
      const data = {
        path,
        offset,
        length: used,
        encoding: text ? 'utf8' : 'base64',
        content: text ? text.text : Buffer.from(bytes).toString('base64'),
        eof: !more && used === bytes.length,
        ...(more || used < bytes.length ? { next_offset: offset + used } : {}),
      };
      return { summary: `${path}: ${used} byte(s) from offset ${offset}${data.encoding === 'base64' ? ' (binary, base64)' : ''}${data.eof ? '' : ', more follows'}`, data };
    },
  }),
  tool({
    name: 'file_write',
    description:
      'Write a whole file in a machine, replacing it if it exists. Works on stopped and created machines too: put files in place before machine_start. ' +
      'For binary content send base64 with encoding "base64".',
    input: {
      app: appArg,
      id: machineArg,
      path: pathArg,
      content: z.string().meta({ description: 'The file content, as text or base64 per encoding' }),
      encoding: z.enum(['utf8', 'base64']).default('utf8'),
      mode: z.string().regex(/^[0-7]{3,4}$/, 'octal digits such as 0644').optional().meta({ description: 'Permission bits in octal, e.g. "0755"; default 0644' }),
    },
    annotations: CHANGES,
    run: async ({ app, id, path, content, encoding, mode }, { client, signal }) => {
      const bytes = encoding === 'base64' ? new Uint8Array(Buffer.from(content, 'base64')) : new TextEncoder().encode(content);
      const r = await new MachineFiles(client, app, id).write(path, bytes, { signal, ...(mode ? { mode: parseInt(mode, 8) } : {}) });
      // Modes read as they are written: octal, the same in the text and the data.
      const octal = r.mode.toString(8);
      return { summary: `wrote ${r.size} byte(s) to ${r.path} (mode ${octal})`, data: { ...r, mode: octal } };
    },
  }),
  tool({
    name: 'file_list',
    description: 'List a directory in a machine (started or stopped): name, type, size, mode, mtime of each entry.',
    input: { app: appArg, id: machineArg, path: pathArg },
    annotations: READ_ONLY,
    run: async ({ app, id, path }, { client, signal }) => {
      const entries = await new MachineFiles(client, app, id).list(path, { signal });
      const names = entries.slice(0, 50).map((e) => e.name + (e.type === 'dir' ? '/' : '')).join(' ');
      return { summary: `${entries.length} entr${entries.length === 1 ? 'y' : 'ies'} in ${path}: ${names}${entries.length > 50 ? ' …' : ''}`, data: { path, entries } };
    },
  }),
  tool({
    name: 'file_remove',
    description: 'Remove a file, or a directory with recursive=true, in a machine (started or stopped).',
    input: { app: appArg, id: machineArg, path: pathArg, recursive: z.boolean().optional().meta({ description: 'Remove a directory and everything in it' }) },
    annotations: DESTROYS,
    run: async ({ app, id, path, recursive }, { client, signal }) => {
      await new MachineFiles(client, app, id).remove(path, { signal, recursive });
      return { summary: `removed ${path}`, data: { ok: true } };
    },
  }),
];
