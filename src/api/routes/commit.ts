import { parseTargetRef } from '../../images/image-ref.ts';
import { CommitRequestSchema, CommitResultSchema, type CommitProgress } from '../../protocol/commit.ts';
import { errorBody, toHangarError } from '../errors.ts';
import { HANDLED, route } from '../route.ts';
import { MachineParams } from './params.ts';

// Committing a machine to an image. Slow work (a big writable layer, a push): with
// Accept: application/x-ndjson, progress streams as one JSON object per line, as for a pull.

export const commitRoutes = [
  route({
    access: { action: 'write' },
    method: 'POST', path: '/v1/apps/{app_name}/machines/{machine_id}/commit', tag: 'Checkpoints',
    summary:
      "Make an OCI image of the machine: its image's layers plus one layer of what it wrote (now, captured frozen while it runs on, or a checkpoint's), " +
      'running its command with its env; stored locally under `image`, pushed to its registry with push: true. ' +
      'With Accept: application/x-ndjson, progress streams as one JSON object per line',
    params: MachineParams, body: CommitRequestSchema, response: CommitResultSchema, produces: 'application/json, application/x-ndjson',
    handler: async ({ services, params, body, headers, reply, signal, requestId }) => {
      // What can be refused at once is, with its status, before a stream starts.
      parseTargetRef(body.image);
      services.machines.get(params.app_name, params.machine_id);
      const commit = (onProgress?: (p: CommitProgress) => void) =>
        services.commits.commit(params.app_name, params.machine_id, body, { signal, ...(onProgress ? { onProgress } : {}) });
      if (!String(headers.accept ?? '').includes('application/x-ndjson')) return commit();
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-cache' });
      const send = (line: object) => res.write(JSON.stringify(line) + '\n');
      try {
        send({ result: await commit((p) => send({ progress: p })) });
      } catch (err) {
        send(errorBody(toHangarError(err), requestId).body);
      }
      res.end();
      return HANDLED;
    },
  }),
];
