import { createSocket, type Socket } from 'node:dgram';
import packet from 'dns-packet';

// Names inside an app's private network, answered on the app's gateway (port 53): the machines
// of one app find each other as `<id>.vm.<app>.internal`, and `<app>.internal` lists its started
// machines. A machine asks its own app's gateway, so it can only ever learn its own app's names.

export type AppMachines = { app: string; machines: Array<{ id: string; ip: string; started: boolean }> };

/** The app whose subnet has this index, with its machines; undefined when none does. */
export type SubnetLookup = (subnetIndex: number) => AppMachines | undefined;

const TTL_S = 5;

export class InternalDns {
  readonly #lookup: SubnetLookup;
  readonly #sockets = new Map<number, Socket>();

  constructor(lookup: SubnetLookup) {
    this.#lookup = lookup;
  }

  /** Answers on `gateway`:53 for the app of `subnetIndex`. Idempotent. */
  async serve(subnetIndex: number, gateway: string): Promise<void> {
    if (this.#sockets.has(subnetIndex)) return;
    const socket = createSocket('udp4');
    this.#sockets.set(subnetIndex, socket);
    socket.on('message', (msg, from) => {
      const reply = this.#answer(subnetIndex, msg);
      if (reply) socket.send(reply, from.port, from.address);
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', (err) => {
        this.#sockets.delete(subnetIndex);
        reject(err);
      });
      socket.bind(53, gateway, () => resolve());
    });
    socket.on('error', () => {}); // a bad datagram must not take the daemon down
  }

  stop(subnetIndex: number): void {
    this.#sockets.get(subnetIndex)?.close();
    this.#sockets.delete(subnetIndex);
  }

  close(): void {
    for (const index of [...this.#sockets.keys()]) this.stop(index);
  }

  #answer(subnetIndex: number, msg: Buffer): Buffer | undefined {
    let query: packet.Packet;
    try {
      query = packet.decode(msg);
    } catch {
      return undefined;
    }
    const question = query.questions?.[0];
    if (!question) return undefined;
    const name = question.name.toLowerCase().replace(/\.$/, '');
    const reply = (rcode: string, ips: string[] = []) =>
      packet.encode({
        id: query.id,
        type: 'response',
        flags: packet.AUTHORITATIVE_ANSWER | ((query.flags ?? 0) & packet.RECURSION_DESIRED),
        rcode,
        questions: [question],
        answers: ips.map((ip) => ({ name: question.name, type: 'A' as const, class: 'IN' as const, ttl: TTL_S, data: ip })),
      } as packet.Packet);
    if (!name.endsWith('.internal')) return reply('REFUSED');
    const ips = this.#resolve(subnetIndex, name);
    if (ips === undefined) return reply('NXDOMAIN');
    return reply('NOERROR', question.type === 'A' ? ips : []);
  }

  #resolve(subnetIndex: number, name: string): string[] | undefined {
    const app = this.#lookup(subnetIndex);
    if (!app) return undefined;
    const suffix = `.${app.app}.internal`;
    if (name === app.app + '.internal') {
      const ips = app.machines.filter((m) => m.started).map((m) => m.ip);
      return ips.length ? ips : undefined;
    }
    const vm = name.endsWith(`.vm${suffix}`) ? name.slice(0, -`.vm${suffix}`.length) : undefined;
    const machine = vm ? app.machines.find((m) => m.id === vm) : undefined;
    return machine ? [machine.ip] : undefined;
  }
}
