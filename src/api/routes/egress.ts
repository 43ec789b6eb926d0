import { once } from 'node:events';
import { z } from 'zod';
import { EgressEventSchema, EgressQuerySchema, type EgressEvent } from '../../protocol/egress-log.ts';
import { HANDLED, route } from '../route.ts';
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
      const { events, offset } = await services.egressLog.tail(m.id, query.tail);
      if (!query.follow) return { events };
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      const send = (event: EgressEvent) => res.write(`event: egress\ndata: ${JSON.stringify(event)}\n\n`);
      events.forEach(send);
      const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
      try {
        for await (const batch of services.egressLog.follow(m.id, offset, signal)) {
          let flowing = true;
          for (const event of batch) flowing = send(event);
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
