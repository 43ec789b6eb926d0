import type { UsageFigures } from '../protocol/usage.ts';
import { connect, CliError } from './connect.ts';
import { printJson, printTable } from './output.ts';
import { parseFlags } from './args.ts';

export const usageUsage = `hangar usage APP [MACHINE] [--from TIME] [--to TIME] [--json]
  the app's (or one machine's) usage by the second: seconds started and stopped, CPU seconds,
  memory MB·s and CPUs·s while started, rootfs/checkpoint/volume GB·s, egress bytes.
  TIME is ISO 8601 (2026-01-02T03:04:05Z) or Unix seconds; by default from the first record to now`;

export async function usage(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags('usage', {
    args: argv,
    allowPositionals: true,
    options: { json: { type: 'boolean', default: false }, 'data-dir': { type: 'string' }, from: { type: 'string' }, to: { type: 'string' } },
  });
  const [app, machine] = positionals;
  if (!app) throw new CliError('usage needs an APP', usageUsage);
  const client = connect(values['data-dir']);
  const window = { ...(values.from ? { from: values.from } : {}), ...(values.to ? { to: values.to } : {}) };
  if (machine) {
    const u = await client.machines.usage(app, machine, window);
    if (values.json) printJson(u);
    else printFigures(`machine ${u.machine_id} of app ${u.app}, ${u.from} to ${u.to}`, u);
    return 0;
  }
  const u = await client.apps.usage(app, window);
  if (values.json) {
    printJson(u);
    return 0;
  }
  printFigures(`app ${u.app}, ${u.from} to ${u.to}`, u);
  process.stdout.write('\n');
  printTable(u.machines.map((m) => ({ machine: m.machine_id, ...row(m) })), ['machine', 'started-s', 'stopped-s', 'cpu-s', 'memory-mb-s', 'rootfs-gb-s', 'egress-bytes']);
  return 0;
}

function row(u: UsageFigures): Record<string, number> {
  return {
    'started-s': u.seconds.started ?? 0, 'stopped-s': u.seconds.stopped ?? 0, 'cpu-s': u.cpu_seconds,
    'memory-mb-s': u.memory_mb_seconds, 'rootfs-gb-s': u.rootfs_gb_seconds, 'egress-bytes': u.egress_bytes,
  };
}

function printFigures(title: string, u: UsageFigures): void {
  const states = Object.entries(u.seconds).map(([state, s]) => `${state} ${s}`).join(', ');
  process.stdout.write(`${title}
  seconds:     ${states || 'none'}
  cpu:         ${u.cpu_seconds} s used, ${u.cpus_seconds} CPU·s reserved
  memory:      ${u.memory_mb_seconds} MB·s
  storage:     rootfs ${u.rootfs_gb_seconds} GB·s, checkpoints ${u.checkpoint_gb_seconds} GB·s, volumes ${u.volume_gb_seconds} GB·s
  egress:      ${u.egress_bytes} bytes
`);
}
