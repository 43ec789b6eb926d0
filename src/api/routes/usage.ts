import { AppUsageSchema, MachineUsageSchema, UsageQuerySchema, instantMs } from '../../protocol/usage.ts';
import { HangarError } from '../../protocol/errors.ts';
import { route } from '../route.ts';
import { AppParams, MachineParams } from './params.ts';

/** The window asked for: from the beginning of records, to now, unless given. */
function windowOf(q: { from?: string; to?: string }): { fromMs: number; toMs: number } {
  const fromMs = q.from === undefined ? 0 : instantMs(q.from)!;
  const toMs = q.to === undefined ? Date.now() : instantMs(q.to)!;
  if (toMs < fromMs) {
    throw new HangarError('validation_failed', `to (${q.to}) is before from (${q.from})`, { hint: 'give a window whose end is after its start' });
  }
  return { fromMs, toMs };
}

export const usageRoutes = [
  route({
    method: 'GET', path: '/v1/apps/{app_name}/usage', tag: 'Apps', access: { action: 'read' },
    summary: "The app's usage by the second in a window: seconds in each state, CPU seconds, memory and CPUs held while started, " +
      'rootfs, checkpoint and volume GB-seconds, egress bytes; in total and per machine. Recorded at each transition, exact across daemon restarts',
    params: AppParams, query: UsageQuerySchema, response: AppUsageSchema, observes: true,
    handler: ({ services, params, query }) => {
      services.apps.get(params.app_name);
      return services.usage.app(params.app_name, windowOf(query));
    },
  }),
  route({
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/usage', tag: 'Machines', access: { action: 'read' },
    summary: "The machine's usage by the second in a window (see GET /v1/apps/{app_name}/usage); destroyed machines too",
    params: MachineParams, query: UsageQuerySchema, response: MachineUsageSchema, observes: true,
    handler: ({ services, params, query }) => {
      const m = services.machines.get(params.app_name, params.machine_id, { includeDestroyed: true });
      return services.usage.machine(params.app_name, m.id, windowOf(query));
    },
  }),
];
