import { createSocket, type Socket } from 'node:dgram';
import { connect, createServer, isIPv6, type Server, type Socket as TcpSocket } from 'node:net';
import type { ConnectionBudget } from './connection-budget.ts';
import type { Egress } from '../protocol/app-settings.ts';
import { domainAllowed } from '../protocol/domain-patterns.ts';
import type { ResolvedAddress } from './egress-sets.ts';
import packet from 'dns-packet';

// Names inside an app's private network, answered on the app's gateway (port 53): the machines
// of one app find each other as `<id>.vm.<app>.internal`, `<app>.internal` lists its started
// machines, and `_api.internal` is the gateway itself, where the Machines API answers on port
// 4280. A machine asks its own app's gateway (the firewall lets it reach no other), so it can
// only ever learn its own app's names. Other names go to the host's resolver, for apps whose
// egress is not `deny`, so `apt-get install` works in a machine. For an app with egress
// `domains`, only the names it allows do, and the addresses in the answer are let out (`admit`)
// before the machine gets it; other names are REFUSED without asking anyone, so a machine can
// neither learn them nor smuggle data out in the names it asks for. REFUSED rather than
// NXDOMAIN: the name may well exist, this server will not look it up, and resolvers do not cache
// a refusal as a fact about the name. A name one of the app's secrets may be sent to
// (transparent mode) is answered with the gateway itself, whose egress proxy puts the secret into
// requests (secrets/egress-proxy.ts), whatever the app's egress. Over UDP and TCP, as resolvers
// expect: an answer too big for a plain UDP datagram comes back truncated, and the asker asks
// again over TCP.

export type AppMachines = {
  app: string;
  machines: Array<{ id: string; ip: string; started: boolean }>;
  /** Decides which names outside `.internal` are looked up upstream for this app. */
  egress: Egress;
};

/** One name outside `.internal` a machine asked for, and what it got. */
export type Lookup = {
  /** The asking machine's address. */
  from: string;
  name: string;
  type: string;
  /** refused: by the app's egress policy (or no upstream); the others were answered. */
  verdict: 'allowed' | 'refused';
  rcode: string;
  /** The A records answered. */
  addresses: string[];
};

export type InternalDnsOptions = {
  /** Without one, names outside `.internal` are refused. */
  upstream?: Upstream;
  /** TCP connections count against it. */
  budget?: ConnectionBudget;
  /** Lets out the addresses answered for a name a `domains` policy allows; false refuses the answer (the policy changed meanwhile). */
  admit?: (subnetIndex: number, egress: Egress, addresses: ResolvedAddress[]) => Promise<boolean>;
  /** Each name outside `.internal` a machine asked for (its own app's names are not egress). */
  onLookup?: (lookup: Lookup) => void;
  /** Names it claims for an app are answered with the app's gateway, whatever its egress. */
  steers?: Steering;
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
  readonly #admit: NonNullable<InternalDnsOptions['admit']>;
  readonly #onLookup: NonNullable<InternalDnsOptions['onLookup']>;
  readonly #steers: Steering;
  #forwards = 0;

  constructor(lookup: SubnetLookup, opts: InternalDnsOptions = {}) {
    this.#lookup = lookup;
    this.#upstream = opts.upstream;
    this.#budget = opts.budget;
    this.#admit = opts.admit ?? (async () => false);
    this.#onLookup = opts.onLookup ?? (() => {});
    this.#steers = opts.steers ?? (() => false);
  }

  /** Answers on `gateway`:53, UDP and TCP, for the app of `subnetIndex`. Idempotent. */
  async serve(subnetIndex: number, gateway: string): Promise<void> {
    if (this.#sockets.has(subnetIndex)) return;
    const socket = createSocket('udp4');
    this.#sockets.set(subnetIndex, socket);
    this.#gateways.set(subnetIndex, gateway);
    socket.on('message', (msg, from) => {
      this.#answer(subnetIndex, from.address, msg, 'udp', (reply) => {
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
      this.#answer(subnetIndex, conn.remoteAddress ?? '', msg, 'tcp', (reply) => {
        if (conn.writable) conn.write(framed(reply));
      }),
    );
  }

  #answer(subnetIndex: number, from: string, msg: Buffer, transport: Transport, send: (reply: Buffer) => void): void {
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
    const log = (verdict: Lookup['verdict'], answer: Buffer, decoded = decodeAnswer(answer)) => {
      this.#onLookup({ from, name, type: question.type, verdict, rcode: decoded?.rcode ?? 'SERVFAIL', addresses: decoded?.addresses ?? [] });
    };
    const refuse = () => {
      const refused = reply('REFUSED');
      log('refused', refused);
      send(refused);
    };
    if (app && this.#steers(app.app, name, from)) {
      // Only an IPv4 answer (machines have no IPv6), so nothing reaches the host past the proxy.
      const gateway = this.#gateways.get(subnetIndex);
      send(reply('NOERROR', question.type === 'A' && gateway ? [gateway] : []));
      return;
    }
    if (!name.endsWith('.internal')) {
      const egress = app?.egress;
      if (!egress || !this.#upstream || egress.policy === 'deny') return refuse();
      if (egress.policy !== 'domains') {
        return this.#forward(this.#upstream, msg, transport, (answer) => {
          log('allowed', answer);
          send(answer);
        });
      }
      if (!domainAllowed(egress.allow, name)) return refuse();
      return this.#forward(this.#upstream, msg, transport, (answer) => {
        const decoded = decodeAnswer(answer);
        // An answer that cannot be read cannot be let out: the machine would get addresses it cannot reach.
        if (!decoded) return refuse();
        this.#admit(subnetIndex, egress, decoded.resolved).then(
          (admitted) => {
            if (!admitted) return refuse();
            log('allowed', answer, decoded);
            send(answer);
          },
          () => refuse(),
        );
      });
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

/**
 * The rcode and A records of an answer: those of the name asked and of the names its CNAMEs lead
 * to, each with its TTL. Undefined when it is not a DNS message.
 */
function decodeAnswer(answer: Buffer): { rcode: string; addresses: string[]; resolved: ResolvedAddress[] } | undefined {
  let decoded: packet.Packet & { rcode?: string };
  try {
    decoded = packet.decode(answer) as packet.Packet & { rcode?: string };
  } catch {
    return undefined;
  }
  const records = (decoded.answers ?? []) as Array<{ name: string; type: string; ttl?: number; data: unknown }>;
  const names = new Set((decoded.questions ?? []).map((q) => q.name.toLowerCase()));
  // CNAMEs come in chain order, but nothing says they must: follow them until no new name turns up.
  for (let grown = true; grown; ) {
    grown = false;
    for (const r of records) {
      const target = typeof r.data === 'string' ? r.data.toLowerCase() : '';
      if (r.type === 'CNAME' && names.has(r.name.toLowerCase()) && !names.has(target)) {
        names.add(target);
        grown = true;
      }
    }
  }
  const resolved = records
    .filter((r) => r.type === 'A' && names.has(r.name.toLowerCase()) && typeof r.data === 'string')
    .map((r) => ({ ip: r.data as string, ttlS: r.ttl ?? 0 }));
  return { rcode: decoded.rcode ?? 'NOERROR', addresses: resolved.map((r) => r.ip), resolved };
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
