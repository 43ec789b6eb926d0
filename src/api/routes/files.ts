import { Readable } from 'node:stream';
import type { FastifyRequest } from 'fastify';
import { HangarError } from '../../protocol/errors.ts';
import {
  FileListSchema, FilePathQuerySchema, FileRemoveQuerySchema, FileRenameRequestSchema, FileStatSchema, FileWriteQuerySchema,
  FileWriteResponseSchema, TarUploadResponseSchema,
} from '../../protocol/schemas.ts';
import { listDir, openFile, removePath, renamePath, statPath, writeFile } from '../../storage/machine-fs.ts';
import { tarDirectory, untarInto } from '../../storage/machine-fs-tar.ts';
import type { IdShift } from '../../storage/id-shift.ts';
import { HANDLED, route } from '../route.ts';
import type { ApiServices } from '../services.ts';
import { MachineParams, OkSchema } from './params.ts';

// The files API: files inside a machine, started or stopped (Hangar's own; Fly has none).
// Paths are absolute as the machine sees them; storage/machine-fs*.ts keeps every one inside it.

const FILES = '/v1/apps/{app_name}/machines/{machine_id}/files';
const TAG = 'Files';

async function rootfsOf(services: ApiServices, params: { app_name: string; machine_id: string }): Promise<string> {
  return services.runner.rootfs(services.machines.get(params.app_name, params.machine_id));
}

/** The machine's root filesystem, and how its ids map to the host's. */
async function filesOf(services: ApiServices, params: { app_name: string; machine_id: string }): Promise<{ rootfs: string; ids: IdShift }> {
  const m = services.machines.get(params.app_name, params.machine_id);
  return { rootfs: await services.runner.rootfs(m), ids: services.runner.ids(m) };
}

/** The request body as a stream (it arrives unread for application/octet-stream and application/x-tar). */
function uploadBody(req: FastifyRequest, contentType: string): Readable {
  const body = req.body;
  if (body instanceof Readable) return body;
  if (body === undefined || body === null || body === '') return Readable.from([]);
  throw new HangarError('bad_request', `the content must be the raw request body with Content-Type: ${contentType}`, {
    hint: `send the bytes unencoded, e.g. curl -X PUT --data-binary @FILE -H 'content-type: ${contentType}'`,
  });
}

/**
 * One `Range: bytes=…` against a file of `size` bytes: the span to send, undefined for the whole
 * file (no header, another unit, or several ranges, which RFC 9110 lets a server ignore), or
 * 'unsatisfiable'.
 */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec((header ?? '').trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? Infinity : Number(m[2]);
  if (end < start) return undefined; // not a valid range-spec: ignored
  if (start >= size) return 'unsatisfiable';
  return { start, end: Math.min(end, size - 1) };
}

export const fileRoutes = [
  route({
    access: { action: 'read' },
    method: 'GET', path: FILES, tag: TAG,
    summary: 'Read a file (?path=), streamed as application/octet-stream. One `Range: bytes=a-b` (or a-, -n) answers 206 with Content-Range; a range past the end answers 416',
    params: MachineParams, query: FilePathQuerySchema, produces: 'application/octet-stream',
    handler: async ({ services, params, query, headers, reply }) => {
      const file = await openFile(await rootfsOf(services, params), query.path);
      const range = parseRange(headers.range, file.size);
      if (range === 'unsatisfiable') {
        await file.handle.close();
        void reply.header('content-range', `bytes */${file.size}`);
        throw new HangarError('range_not_satisfiable', `range ${headers.range} is outside ${query.path} (${file.size} bytes)`, {
          hint: `ask for bytes between 0 and ${Math.max(0, file.size - 1)}`,
          details: { path: query.path, size: file.size },
        });
      }
      const start = range?.start ?? 0;
      const end = range?.end ?? file.size - 1;
      const length = Math.max(0, end - start + 1);
      void reply.status(range ? 206 : 200).headers({
        'content-type': 'application/octet-stream',
        'accept-ranges': 'bytes',
        'content-length': String(length),
        'last-modified': file.mtime.toUTCString(),
        ...(range ? { 'content-range': `bytes ${start}-${end}/${file.size}` } : {}),
      });
      if (length === 0) {
        await file.handle.close();
        void reply.send(Buffer.alloc(0));
      } else {
        void reply.send(file.handle.createReadStream({ start, end }));
      }
      return HANDLED;
    },
  }),
  route({
    access: { action: 'write' },
    method: 'PUT', path: FILES, tag: TAG,
    summary: 'Write a file (?path=&mode=0644) from the raw body (Content-Type: application/octet-stream), streamed to disk with no size limit; parent directories are created. 201 when created, 200 when replaced',
    params: MachineParams, query: FileWriteQuerySchema, response: FileWriteResponseSchema, status: 201, consumes: 'application/octet-stream',
    handler: async ({ services, params, query, req, reply, signal }) => {
      const body = uploadBody(req, 'application/octet-stream');
      const mode = query.mode === undefined ? undefined : Number.parseInt(query.mode, 8);
      const { rootfs, ids } = await filesOf(services, params);
      const r = await writeFile(rootfs, query.path, body, { mode, signal, owner: ids.root });
      void reply.status(r.created ? 201 : 200).send({ path: r.path, size: r.size, mode: r.mode });
      return HANDLED;
    },
  }),
  route({
    access: { action: 'write' },
    method: 'DELETE', path: FILES, tag: TAG,
    summary: 'Remove a file or symlink (?path=), or a directory: an empty one, or any with recursive=true',
    params: MachineParams, query: FileRemoveQuerySchema, response: OkSchema,
    handler: async ({ services, params, query }) => {
      await removePath(await rootfsOf(services, params), query.path, { recursive: query.recursive });
      return { ok: true };
    },
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: `${FILES}/list`, tag: TAG,
    summary: 'List a directory (?path=): name, type, size, mode, mtime and link_target of each entry, sorted by name',
    params: MachineParams, query: FilePathQuerySchema, response: FileListSchema,
    handler: async ({ services, params, query }) => listDir(await rootfsOf(services, params), query.path),
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: `${FILES}/stat`, tag: TAG,
    summary: 'One entry (?path=); a symlink is described, not followed (lstat)',
    params: MachineParams, query: FilePathQuerySchema, response: FileStatSchema,
    handler: async ({ services, params, query }) => statPath(await rootfsOf(services, params), query.path),
  }),
  route({
    access: { action: 'write' },
    method: 'POST', path: `${FILES}/rename`, tag: TAG,
    summary: "Move a file or directory; `to`'s parents are created; an existing `to` is replaced only with overwrite (else 409 file_exists)",
    params: MachineParams, body: FileRenameRequestSchema, response: OkSchema,
    handler: async ({ services, params, body }) => {
      await renamePath(await rootfsOf(services, params), body.from, body.to, { overwrite: body.overwrite });
      return { ok: true };
    },
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: `${FILES}/tar`, tag: TAG,
    summary: 'Download a directory (?path=) as an application/x-tar stream (symlinks stored as links, numeric owners)',
    params: MachineParams, query: FilePathQuerySchema, produces: 'application/x-tar',
    handler: async ({ services, params, query, reply, signal }) => {
      const { rootfs, ids } = await filesOf(services, params);
      const stream = await tarDirectory(rootfs, query.path, { signal, ids });
      void reply.status(200).header('content-type', 'application/x-tar').send(stream);
      return HANDLED;
    },
  }),
  route({
    access: { action: 'write' },
    method: 'PUT', path: `${FILES}/tar`, tag: TAG,
    summary: 'Unpack a tar stream (Content-Type: application/x-tar, uncompressed) into a directory (?path=, created if missing). Members with "..", absolute names, or written through symlinks refuse the whole archive',
    params: MachineParams, query: FilePathQuerySchema, response: TarUploadResponseSchema, consumes: 'application/x-tar',
    handler: async ({ services, params, query, req, signal }) => {
      const body = uploadBody(req, 'application/x-tar');
      const { rootfs, ids } = await filesOf(services, params);
      return untarInto(rootfs, query.path, body, { signal, ids });
    },
  }),
];
