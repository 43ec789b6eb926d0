import { createSocket, type Socket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import packet from 'dns-packet';

// Names inside an app's private network, answered on the app's gateway (port 53): the machines
// of one app find each other as `<id>.vm.<app>.internal`, `<app>.internal` lists its started
// machines, and `_api.internal` is the gateway itself, where the Machines API answers on port
// 4280. A machine asks its own app's gateway (the firewall lets it reach no other), so it can
// only ever learn its own app's names. Other names go to the host's resolver, for apps whose
// egress is not `deny`, so `apt-get install` works in a machine.

export type AppMachines = {
  app: string;
  machines: Array<{ id: string; ip: string; started: boolean }>;
  /** Whether names outside `.internal` are looked up upstream for this app. */
  resolvesPublicNames: boolean;
};

/** The app whose subnet has this index, with its machines; undefined when none does. */
export type SubnetLookup = (subnetIndex: number) => AppMachines | undefined;

export type Upstream = { host: string; port: number };

export const API_NAME = '_api.internal';
const TTL_S = 5;
const UPSTREAM_TIMEOUT_MS = 5000;
/** Queries being looked up upstream at once, over all apps; more are dropped (the asker retries). */
const MAX_FORWARDS = 256;

export class InternalDns {
  readonly #lookup: SubnetLookup;
  readonly #upstream: Upstream | undefined;
  readonly #sockets = new Map<number, Socket>();
  readonly #gateways = new Map<number, string>();
  #forwards = 0;

  /** Without an upstream, names outside `.internal` are refused. */
  constructor(lookup: SubnetLookup, upstream?: Upstream) {
    this.#lookup = lookup;
    this.#upstream = upstream;
  }

  /** Answers on `gateway`:53 for the app of `subnetIndex`. Idempotent. */
  async serve(subnetIndex: number, gateway: string): Promise<void> {
    if (this.#sockets.has(subnetIndex)) return;
    const socket = createSocket('udp4');
    this.#sockets.set(subnetIndex, socket);
    this.#gateways.set(subnetIndex, gateway);
    socket.on('message', (msg, from) => {
      this.#answer(subnetIndex, msg, (reply) => {
        // An upstream answer may come after the app's bridge went down.
        if (this.#sockets.get(subnetIndex) === socket) socket.send(reply, from.port, from.address);
      });
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', (err) => {
        this.#sockets.delete(subnetIndex);
        this.#gateways.delete(subnetIndex);
        reject(err);
      });
      socket.bind(53, gateway, () => resolve());
    });
    socket.on('error', () => {}); // a bad datagram must not take the daemon down
  }

  stop(subnetIndex: number): void {
    this.#sockets.get(subnetIndex)?.close();
    this.#sockets.delete(subnetIndex);
    this.#gateways.delete(subnetIndex);
  }

  close(): void {
    for (const index of [...this.#sockets.keys()]) this.stop(index);
  }

  #answer(subnetIndex: number, msg: Buffer, send: (reply: Buffer) => void): void {
    let query: packet.Packet;
    try {
      query = packet.decode(msg);
    } catch {
      return;
    }
    const question = query.questions?.[0];
    if (!question) return;
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
    const app = this.#lookup(subnetIndex);
    if (!name.endsWith('.internal')) {
      if (app?.resolvesPublicNames && this.#upstream) this.#forward(this.#upstream, msg, send);
      else send(reply('REFUSED'));
      return;
    }
    const ips = app && this.#resolve(subnetIndex, app, name);
    send(ips === undefined ? reply('NXDOMAIN') : reply('NOERROR', question.type === 'A' ? ips : []));
  }

  /** Asks the upstream resolver from a fresh socket (a random port) and relays its answer as it is. */
  #forward(upstream: Upstream, msg: Buffer, send: (reply: Buffer) => void): void {
    if (this.#forwards >= MAX_FORWARDS) return;
    this.#forwards++;
    const socket = createSocket(isIPv6(upstream.host) ? 'udp6' : 'udp4');
    let open = true;
    const done = () => {
      if (!open) return;
      open = false;
      this.#forwards--;
      clearTimeout(timer);
      socket.close();
    };
    const timer = setTimeout(done, UPSTREAM_TIMEOUT_MS);
    socket.on('error', done);
    socket.on('message', (answer) => {
      done();
      send(answer);
    });
    // Connected, so only the upstream's own answers come back on it.
    socket.connect(upstream.port, upstream.host, () => socket.send(msg));
  }

  #resolve(subnetIndex: number, app: AppMachines, name: string): string[] | undefined {
    if (name === API_NAME) {
      const gateway = this.#gateways.get(subnetIndex);
      return gateway ? [gateway] : undefined;
    }
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
