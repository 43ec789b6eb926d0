import { z } from 'zod';
import type { PullProgress, ResolvedImage } from '../../images/image-service.ts';
import { HangarError } from '../../protocol/errors.ts';
import { toHangarError, errorBody } from '../errors.ts';
import { HANDLED, route } from '../route.ts';
import { OkSchema } from './params.ts';

// Hangar's own image endpoints (Fly has none): the CLI's `hangar images …` goes through these.

const ImageQuery = z.object({ image: z.string().min(1) });
const PullBody = z.object({ image: z.string().min(1) });

function wireImage(image: ResolvedImage & { createdAt?: string }) {
  return {
    name: image.name,
    digest: image.manifestDigest,
    image_ref: image.ref,
    config: image.config,
    layers: image.layerDirs.length,
    size_bytes: image.sizeBytes,
    ...(image.createdAt ? { created_at: image.createdAt } : {}),
  };
}

const ImageSchema = z.object({
  name: z.string(), digest: z.string(), image_ref: z.record(z.string(), z.unknown()), config: z.record(z.string(), z.unknown()),
  layers: z.int(), size_bytes: z.int(), created_at: z.string().optional(),
});

export const imageRoutes = [
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/images', tag: 'Images', summary: 'List images in the local store',
    response: z.array(z.object({ name: z.string(), digest: z.string(), size_bytes: z.int(), layers: z.int(), created_at: z.string() })),
    handler: async ({ services }) =>
      (await services.images.list()).map((i) => ({ name: i.name, digest: i.manifestDigest, size_bytes: i.sizeBytes, layers: i.layers, created_at: i.createdAt })),
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/images/inspect', tag: 'Images', summary: 'Inspect a local image (?image=REF)',
    query: ImageQuery, response: ImageSchema,
    handler: async ({ services, query }) => wireImage(await services.images.inspect(query.image)),
  }),
  route({
    access: { action: 'write' },
    method: 'POST', path: '/v1/images/pull', tag: 'Images',
    summary: 'Pull an image (or build a hangar/* base image). With Accept: application/x-ndjson, progress streams as one JSON object per line',
    body: PullBody, response: ImageSchema, produces: 'application/json, application/x-ndjson',
    handler: async ({ services, body, headers, reply, signal, requestId }) => {
      if (!String(headers.accept ?? '').includes('application/x-ndjson')) {
        return wireImage(await services.images.pull(body.image, { signal }));
      }
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-cache' });
      const send = (line: object) => res.write(JSON.stringify(line) + '\n');
      try {
        const image = await services.images.pull(body.image, { signal, onProgress: (p: PullProgress) => send({ progress: p }) });
        send({ image: wireImage(image) });
      } catch (err) {
        send(errorBody(toHangarError(err), requestId).body);
      }
      res.end();
      return HANDLED;
    },
  }),
  route({
    access: { action: 'delete' },
    method: 'DELETE', path: '/v1/images', tag: 'Images', summary: 'Remove an image reference (?image=REF); unused layers are deleted',
    query: ImageQuery, response: OkSchema,
    handler: async ({ services, query }) => {
      const users = services.machines.store.listMachines().filter((m) => m.config.image === query.image);
      if (users.length > 0) {
        
        throw new HangarError('image_in_use', `image ${query.image} is used by ${users.length} machine(s)`, {
          hint: `destroy them first: ${users.map((m) => `${m.app}/${m.id}`).join(', ')}`,
        });
      }
      await services.images.remove(query.image);
      return { ok: true };
    },
  }),
];
