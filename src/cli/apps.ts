import type { AppSettingsRequest, Egress } from '../protocol/app-settings.ts';
import type { App } from '../protocol/schemas.ts';
import { CliError, connect } from './connect.ts';
import { printJson, printTable } from './output.ts';
import { nearest, parseFlags } from './args.ts';

export const appsUsage = `hangar apps <command> [--json]
  list | create NAME | show NAME | update NAME | destroy NAME   (destroy also destroys the app's machines)
  create and update take the app's settings:
    --egress allow|deny|CIDR[,CIDR...]|NAME[,NAME...]
                                       where machines may send traffic (default allow: NAT to the host's network);
                                       names such as registry.npmjs.org,*.github.com allow what DNS answers for them
    --autostop-idle DURATION             how long an idle machine stays up before the proxy stops it (default 5m)
    --nested-namespaces | --no-nested-namespaces
                                         let machines make namespaces of their own (unshare -U -r, mounts in them);
                                         takes effect at each machine's next start or update (default off)
    --limits NAME=N[,NAME=N...]          the app's limits (update changes those named): machines, running_machines, memory_mb,
                                         cpus, volumes, volume_gb, creates_per_minute, starts_per_second, start_burst;
                                         those left out take the daemon's defaults (config.json "limits")`;

export async function apps(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const { values, positionals } = parseFlags('apps', {
    args: rest,
    allowPositionals: true,
    allowNegative: true,
    options: {
      json: { type: 'boolean', default: false },
      'data-dir': { type: 'string' },
      egress: { type: 'string' },
      'autostop-idle': { type: 'string' },
      'nested-namespaces': { type: 'boolean' },
      limits: { type: 'string' },
    },
  });
  const verbs = ['list', 'create', 'show', 'update', 'destroy'];
  if (!verbs.includes(verb ?? '')) {
    const guess = nearest(verb ?? '', verbs);
    fail(`unknown command: apps ${verb ?? ''}`.trim(), guess ? `did you mean hangar apps ${guess}?` : appsUsage);
  }
  const client = connect(values['data-dir']);
  const name = () => positionals[0] ?? fail(`apps ${verb} needs an app NAME`);
  const settings: AppSettingsRequest = {
    ...(values.egress !== undefined ? { egress: parseEgress(values.egress) } : {}),
    ...(values['autostop-idle'] !== undefined ? { autostop_idle: values['autostop-idle'] } : {}),
    ...(values['nested-namespaces'] !== undefined ? { nested_namespaces: values['nested-namespaces'] } : {}),
    ...(values.limits !== undefined ? { limits: parseLimits(values.limits) } : {}),
  };
  switch (verb) {
    case 'list': {
      const { apps } = await client.apps.list();
      if (values.json) printJson(apps);
      else {
        const rows = apps.map((a) => ({ name: a.name, machines: a.machine_count, egress: egressText(a.egress), 'autostop-idle': a.autostop_idle, 'nested-namespaces': a.nested_namespaces ? 'on' : 'off' }));
        printTable(rows, ['name', 'machines', 'egress', 'autostop-idle', 'nested-namespaces']);
      }
      return 0;
    }
    case 'create': {
      const app = await client.apps.create(name(), { settings });
      if (values.json) printJson(app);
      else process.stdout.write(`created app ${app.name} (${settingsText(app)})\n`);
      return 0;
    }
    case 'update': {
      if (Object.keys(settings).length === 0) fail('apps update needs a setting to change', appsUsage);
      const app = await client.apps.update(name(), settings);
      if (values.json) printJson(app);
      else process.stdout.write(`updated app ${app.name} (${settingsText(app)})\n`);
      return 0;
    }
    case 'show':
      printJson(await client.apps.get(name()));
      return 0;
    case 'destroy':
      await client.apps.delete(name());
      if (!values.json) process.stdout.write(`destroyed app ${name()}\n`);
      return 0;
    default:
      fail(`unknown command: apps ${verb ?? ''}`.trim(), appsUsage);
  }
}

/** `machines=10,running_machines=5`; names and values are checked by the API. */
function parseLimits(text: string): Record<string, number> {
  const pairs = text.split(',').map((p) => p.trim()).filter(Boolean).map((p) => p.split('='));
  const bad = pairs.find((p) => p.length !== 2 || !p[0] || !Number.isFinite(Number(p[1])));
  if (bad) fail(`--limits ${text}: ${bad.join('=')} is not NAME=NUMBER`, 'e.g. --limits machines=10,running_machines=5');
  return Object.fromEntries(pairs.map(([k, v]) => [k!, Number(v)]));
}

/** `allow`, `deny`, or a comma-separated list of networks or of names (checked by the API). */
function parseEgress(text: string): Egress {
  if (text === 'allow' || text === 'deny') return { policy: text };
  const items = text.split(',').map((c) => c.trim()).filter(Boolean);
  const isNetwork = (item: string) => /^[\d./]+$/.test(item);
  if (items.length > 0 && items.every((item) => !isNetwork(item))) return { policy: 'domains', allow: items };
  if (items.some((item) => !isNetwork(item))) fail(`--egress ${text}: mixes networks and names`, 'give either networks (10.0.0.0/8,192.0.2.7) or names (registry.npmjs.org,*.github.com)');
  return { policy: 'cidrs', cidrs: items };
}

function egressText(egress: Egress): string {
  if (egress.policy === 'cidrs') return egress.cidrs.join(',');
  return egress.policy === 'domains' ? egress.allow.join(',') : egress.policy;
}

function settingsText(app: App): string {
  const limits = Object.entries(app.limits ?? {}).map(([k, v]) => `${k}=${v}`).join(',');
  return `egress ${egressText(app.egress)}, autostop idle ${app.autostop_idle}, nested namespaces ${app.nested_namespaces ? 'on' : 'off'}${limits ? `, limits ${limits}` : ''}`;
}

function fail(message: string, hint?: string): never {
  throw new CliError(message, hint);
}
