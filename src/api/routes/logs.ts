import { z } from 'zod';
import { LogsQuerySchema } from '../../protocol/schemas.ts';
import { followLines, tailLines } from '../../machines/log-files.ts';
import { streamLineEvents } from '../event-stream.ts';
import { route } from '../route.ts';
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
      return streamLineEvents(reply, signal, 'log', lines, followLines(path, offset, signal));
    },
  }),
];
