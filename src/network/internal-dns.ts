import { createSocket, type Socket } from 'node:dgram';
import { connect, createServer, isIPv6, type Server, type Socket as TcpSocket } from 'node:net';
import type { ConnectionBudget } from './connection-budget.ts';
import packet from 'dns-packet';

// Names inside an app's private network, answered on the app's gateway (port 53): the machines
// of one app find each other as `<id>.vm.<app>.internal`, `<app>.internal` lists its started
// machines, and `_api.internal` is the gateway itself, where the Machines API answers on port
// 4280. A machine asks its own app's gateway (the firewall lets it reach no other), so it can
// only ever learn its own app's names. Other names go to the host's resolver, for apps whose
// egress is not `deny`, so `apt-get install` works in a machine. A name one of the app's secrets
// may be sent to (transparent mode) is answered with the gateway itself, whose egress proxy puts
// the secret into requests (secrets/egress-proxy.ts), whatever the app's egress. Over UDP and
// TCP, as resolvers expect: an answer too big for a plain UDP datagram comes back truncated, and
// the asker asks again over TCP.

export type AppMachines = {
  app: string;
  machines: Array<{ id: string; ip: string; started: boolean }>;
  /** Whether names outside `.internal` are looked up upstream for this app. */
  resolvesPublicNames: boolean;
};

/** The app whose subnet has this index, with its machines; undefined when none does. */
export type SubnetLookup = (subnetIndex: number) => AppMachines | undefined;

export type Upstream = { host: string; port: number };

/**
 * Whether `name`, asked by the machine at `asker`, goes to the gateway's egress proxy: an app
 * secret of `app` may be sent to it (and the machine trusts the proxy's CA).
 */
export type Steering = (app: string, name: string, asker: string) => boolean;

export const API_NAME = '_api.internal';
/** The gateway again, where the tokenizer proxy answers (port TOKENIZER_PORT). */
export const TOKENIZER_NAME = '_tokenizer.internal';
const TTL_S = 5;
const UPSTREAM_TIMEOUT_MS = 5000;
/** Queries being looked up upstream at once, over all apps; more are dropped (the asker retries). */
const MAX_FORWARDS = 256;
/** What a UDP answer may be without EDNS (RFC 1035); bigger ones are truncated. */
const PLAIN_UDP_SIZE = 512;
/** A TCP connection with no query for this long is closed. */
const TCP_IDLE_MS = 10_000;

type Transport = 'udp' | 'tcp';

const RCODES = { NOERROR: 0, NXDOMAIN: 3, REFUSED: 5 } as const;
type Rcode = keyof typeof RCODES;

export class InternalDns {
  readonly #lookup: SubnetLookup;
  readonly #upstream: Upstream | undefined;
  readonly #sockets = new Map<number, Socket>();
  readonly #servers = new Map<number, { server: Server; connections: Set<TcpSocket> }>();
  readonly #gateways = new Map<number, string>();
  readonly #budget: ConnectionBudget | undefined;
  readonly #steers: Steering;
  #forwards = 0;

  /**
   * Without an upstream, names outside `.internal` are refused. TCP connections count against
   * `budget`. Names `steers` claims for an app are answered with its gateway, whatever its egress.
   */
  constructor(lookup: SubnetLookup, upstream?: Upstream, budget?: ConnectionBudget, steers: Steering = () => false) {
    this.#lookup = lookup;
    this.#upstream = upstream;
    this.#budget = budget;
    this.#steers = steers;
  }

  /** Answers on `gateway`:53, UDP and TCP, for the app of `subnetIndex`. Idempotent. */
  async serve(subnetIndex: number, gateway: string): Promise<void> {
    if (this.#sockets.has(subnetIndex)) return;
    const socket = createSocket('udp4');
    this.#sockets.set(subnetIndex, socket);
    this.#gateways.set(subnetIndex, gateway);
    socket.on('message', (msg, from) => {
      this.#answer(subnetIndex, msg, from.address, 'udp', (reply) => {
        // An upstream answer may come after the app's bridge went down.
        if (this.#sockets.get(subnetIndex) === socket) socket.send(reply, from.port, from.address);
      });
    });
    const connections = new Set<TcpSocket>();
    const server = createServer((conn) => {
      if (this.#budget?.admit(conn)) return void conn.destroy();
      connections.add(conn);
      conn.once('close', () => connections.delete(conn));
      this.#serveTcp(subnetIndex, conn);
    });
    this.#servers.set(subnetIndex, { server, connections });
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind(53, gateway, () => resolve());
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(53, gateway, () => resolve());
      });
    } catch (err) {
      this.stop(subnetIndex);
      throw err;
    }
    // A bad datagram or connection must not take the daemon down.
    socket.on('error', () => {});
    server.on('error', () => {});
  }

  stop(subnetIndex: number): void {
    this.#sockets.get(subnetIndex)?.close();
    this.#sockets.delete(subnetIndex);
    this.#gateways.delete(subnetIndex);
    const tcp = this.#servers.get(subnetIndex);
    if (tcp) {
      if (tcp.server.listening) tcp.server.close();
      for (const conn of tcp.connections) conn.destroy();
      this.#servers.delete(subnetIndex);
    }
  }

  close(): void {
    for (const index of [...this.#sockets.keys()]) this.stop(index);
  }

  #serveTcp(subnetIndex: number, conn: TcpSocket): void {
    conn.setTimeout(TCP_IDLE_MS, () => conn.destroy());
    conn.on('error', () => conn.destroy());
    onFramed(conn, (msg) =>
      this.#answer(subnetIndex, msg, conn.remoteAddress ?? '', 'tcp', (reply) => {
        if (conn.writable) conn.write(framed(reply));
      }),
    );
  }

  #answer(subnetIndex: number, msg: Buffer, asker: string, transport: Transport, send: (reply: Buffer) => void): void {
    let query: packet.Packet;
    try {
      query = packet.decode(msg);
    } catch {
      return;
    }
    const question = query.questions?.[0];
    if (!question) return;
    const name = question.name.toLowerCase().replace(/\.$/, '');
    const encode = (rcode: Rcode, ips: string[], truncated: boolean) =>
      packet.encode({
        id: query.id,
        type: 'response',
        // dns-packet encodes no `rcode` field: the code goes in the flags' low bits.
        flags: packet.AUTHORITATIVE_ANSWER | ((query.flags ?? 0) & packet.RECURSION_DESIRED) | (truncated ? packet.TRUNCATED_RESPONSE : 0) | RCODES[rcode],
        questions: [question],
        answers: ips.map((ip) => ({ name: question.name, type: 'A' as const, class: 'IN' as const, ttl: TTL_S, data: ip })),
      } as packet.Packet);
    const reply = (rcode: Rcode, ips: string[] = []) => {
      const whole = encode(rcode, ips, false);
      // Our own answers carry no EDNS, so over UDP they keep to the plain size.
      return transport === 'udp' && whole.length > PLAIN_UDP_SIZE ? encode(rcode, [], true) : whole;
    };
    const app = this.#lookup(subnetIndex);
    if (app && this.#steers(app.app, name, asker)) {
      // Only an IPv4 answer (machines have no IPv6), so nothing reaches the host past the proxy.
      const gateway = this.#gateways.get(subnetIndex);
      send(reply('NOERROR', question.type === 'A' && gateway ? [gateway] : []));
      return;
    }
    if (!name.endsWith('.internal')) {
      if (app?.resolvesPublicNames && this.#upstream) this.#forward(this.#upstream, msg, transport, send);
      else send(reply('REFUSED'));
      return;
    }
    const ips = app && this.#resolve(subnetIndex, app, name);
    send(ips === undefined ? reply('NXDOMAIN') : reply('NOERROR', question.type === 'A' ? ips : []));
  }

  /**
   * Asks the upstream resolver the same way the machine asked (UDP from a fresh socket, on a
   * random port; or a TCP connection of its own) and relays its answer as it is.
   */
  #forward(upstream: Upstream, msg: Buffer, transport: Transport, send: (reply: Buffer) => void): void {
    if (this.#forwards >= MAX_FORWARDS) return;
    this.#forwards++;
    const udp = transport === 'udp' ? createSocket(isIPv6(upstream.host) ? 'udp6' : 'udp4') : undefined;
    const tcp = udp ? undefined : connect({ host: upstream.host, port: upstream.port });
    let open = true;
    const done = () => {
      if (!open) return;
      open = false;
      this.#forwards--;
      clearTimeout(timer);
      udp?.close();
      tcp?.destroy();
    };
    const timer = setTimeout(done, UPSTREAM_TIMEOUT_MS);
    const relay = (answer: Buffer) => {
      done();
      send(answer);
    };
    if (udp) {
      udp.on('error', done);
      udp.on('message', relay);
      // Connected, so only the upstream's own answers come back on it.
      udp.connect(upstream.port, upstream.host, () => udp.send(msg));
    } else if (tcp) {
      tcp.on('error', done);
      tcp.on('close', done);
      onFramed(tcp, relay);
      tcp.write(framed(msg));
    }
  }

  #resolve(subnetIndex: number, app: AppMachines, name: string): string[] | undefined {
    if (name === API_NAME || name === TOKENIZER_NAME) {
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

/** DNS over TCP puts each message after its length in two bytes (RFC 1035 4.2.2). */
function onFramed(conn: TcpSocket, onMessage: (msg: Buffer) => void): void {
  let buffered: Buffer = Buffer.alloc(0);
  conn.on('data', (chunk: Buffer) => {
    buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
    while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
      const msg = buffered.subarray(2, 2 + buffered.readUInt16BE(0));
      buffered = buffered.subarray(2 + msg.length);
      onMessage(msg);
    }
  });
}

function framed(msg: Buffer): Buffer {
  const length = Buffer.alloc(2);
  length.writeUInt16BE(msg.length);
  return Buffer.concat([length, msg]);
}
