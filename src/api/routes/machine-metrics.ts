import { MachineMetricsSchema } from '../../protocol/machine-metrics.ts';
import { route } from '../route.ts';
import { MachineParams } from './params.ts';

export const machineMetricsRoutes = [
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/metrics', tag: 'Machines',
    summary: "The machine's resource use now: CPU seconds, memory (current, peak, limit) and processes this run (null unless it runs), " +
      'disk used and network bytes (whenever it has them). Poll it for rates; the same figures are Prometheus series on GET /metrics',
    params: MachineParams, response: MachineMetricsSchema,
    handler: ({ services, params }) => services.machineMetrics.read(services.machines.get(params.app_name, params.machine_id)),
  }),
];
