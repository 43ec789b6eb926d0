import type { MachineConfig } from '../protocol/machine-config.ts';
import { CliError } from './connect.ts';

// `hangar machines run --port …` in flyctl's format: PORT[:INTERNAL][/PROTOCOL[:HANDLER…]], e.g.
// `--port 80:8080/tcp:http --port 443:8080/tcp:http:tls`. Ports that share an internal port make
// one service, so the proxy sees one service per server in the machine.

type Service = NonNullable<MachineConfig['services']>[number];

const PORT_FLAG = /^(\d+)(?::(\d+))?(?:\/(tcp|udp)((?::[a-z0-9_]+)*))?$/;
const EXAMPLE = '--port 80:8080/tcp:http --port 443:8080/tcp:http:tls';

export type ServiceFlags = { ports: string[]; autostop?: string | undefined; autostart?: boolean | undefined };

export function servicesFromFlags(flags: ServiceFlags): Service[] | undefined {
  if (flags.ports.length === 0) {
    if (flags.autostop !== undefined || flags.autostart !== undefined) {
      throw new CliError('--autostop and --no-autostart apply to the machine\'s services; it has none', `give it one: ${EXAMPLE}`);
    }
    return undefined;
  }
  const autostop = flags.autostop;
  if (autostop !== undefined && !['off', 'stop', 'suspend'].includes(autostop)) {
    throw new CliError(`--autostop ${autostop} is not off, stop or suspend`, '--autostop stop');
  }
  const byInternal = new Map<string, Service>();
  for (const flag of flags.ports) {
    const match = PORT_FLAG.exec(flag);
    const port = Number(match?.[1]);
    const internal = Number(match?.[2] ?? match?.[1]);
    if (!match || !valid(port) || !valid(internal)) {
      throw new CliError(`--port ${flag} is not PORT[:INTERNAL_PORT][/PROTOCOL[:HANDLER...]] with ports 1-65535`, EXAMPLE);
    }
    const protocol = match[3] ?? 'tcp';
    const handlers = match[4] ? match[4].slice(1).split(':') : [];
    const key = `${internal}/${protocol}`;
    let service = byInternal.get(key);
    if (!service) {
      service = {
        internal_port: internal,
        protocol,
        ports: [],
        ...(autostop !== undefined ? { autostop: autostop as 'off' | 'stop' | 'suspend' } : {}),
        ...(flags.autostart !== undefined ? { autostart: flags.autostart } : {}),
      };
      byInternal.set(key, service);
    }
    service.ports!.push({ port, ...(handlers.length ? { handlers } : {}) });
  }
  return [...byInternal.values()];
}

function valid(port: number): boolean {
  return Number.isInteger(port) && port >= 1 && port <= 65535;
}
