import { once } from 'node:events';
import { z } from 'zod';
import { LogsQuerySchema } from '../../protocol/schemas.ts';
import { followLines, tailLines } from '../../machines/log-files.ts';
import { HANDLED, route } from '../route.ts';
import { MachineParams } from './params.ts';

export const logRoutes = [
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/logs', tag: 'Machines',
    summary: "The machine's stdout and stderr: the last `tail` lines as JSON, or with follow=true a server-sent event stream (one `log` event per line)",
    params: MachineParams, query: LogsQuerySchema, response: z.object({ lines: z.array(z.string()) }),
    produces: 'application/json, text/event-stream',
    handler: async ({ services, params, query, reply, signal }) => {
      const m = services.machines.get(params.app_name, params.machine_id, { includeDestroyed: true });
      const path = services.paths.log(m.id);
      const { lines, offset } = await tailLines(path, query.tail);
      if (!query.follow) return { lines };
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      const send = (line: string) => res.write(`event: log\ndata: ${line}\n\n`);
      lines.forEach(send);
      const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
      try {
        for await (const batch of followLines(path, offset, signal)) {
          let flowing = true;
          for (const line of batch) flowing = send(line);
          // A reader slower than the machine writes holds the log back, not the daemon's memory.
          if (!flowing) await once(res, 'drain', { signal }).catch(() => undefined);
        }
      } finally {
        clearInterval(keepAlive);
        res.end();
      }
      return HANDLED;
    },
  }),
];
