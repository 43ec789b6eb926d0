import type { HangarApiError, NextAction } from '../sdk/index.ts';

// The API's next actions said as `hangar` command lines, so the CLI never tells a person to
// POST to a route. Errors without them keep the API's hint.

export function cliHint(err: HangarApiError): string | undefined {
  if (err.next.length === 0) return err.hint;
  const elsewhere = err.code === 'machine_not_found' ? (err.details?.machine_app as string | undefined) : undefined;
  if (elsewhere) return `it is in app ${elsewhere}: add --app ${elsewhere}, e.g. ${commandLine(err.next[0]!)}`;
  return `run ${err.next.map(commandLine).join(', or ')}`;
}

function commandLine(n: NextAction): string {
  const app = n.app === undefined ? '' : ` --app ${n.app}`;
  switch (n.action) {
    case 'app_create':
      return `hangar apps create ${n.app}`;
    case 'machine_list':
      return `hangar machines list${app}`;
    case 'machine_get':
      return `hangar machines status ${n.id}${app}`;
    case 'machine_start':
      return `hangar machines start ${n.id}${app}`;
    case 'machine_stop':
      return `hangar machines stop ${n.id}${app}`;
    case 'machine_destroy':
      return `hangar machines destroy ${n.id}${app}${n.force ? ' --force' : ''}`;
    case 'checkpoint_list':
      return `hangar checkpoints list ${n.id}${app}`;
  }
}
