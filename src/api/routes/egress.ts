import { z } from 'zod';
import { EgressEventSchema, EgressQuerySchema } from '../../protocol/egress-log.ts';
import { parseEgressLines } from '../../machines/egress-log.ts';
import { streamLineEvents } from '../event-stream.ts';
import { route } from '../route.ts';
import { MachineParams } from './params.ts';

export const egressRoutes = [
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/egress', tag: 'Machines',
    summary: "The machine's egress log: names it looked up outside its app, connections it opened (and their bytes when they end), " +
      'attempts its egress policy refused. The last `tail` events as JSON, or with follow=true a server-sent event stream (one `egress` event each)',
    params: MachineParams, query: EgressQuerySchema, response: z.object({ events: z.array(EgressEventSchema) }),
    produces: 'application/json, text/event-stream',
    handler: async ({ services, params, query, reply, signal }) => {
      const m = services.machines.get(params.app_name, params.machine_id, { includeDestroyed: true });
      const { lines, offset } = await services.egressLog.tail(m.id, query.tail);
      if (!query.follow) return { events: parseEgressLines(lines) };
      return streamLineEvents(reply, signal, 'egress', lines, services.egressLog.follow(m.id, offset, signal));
    },
  }),
];
