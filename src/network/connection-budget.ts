import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

// How many connections a listener may hold open: in total and per peer address. Every open
// connection is a descriptor and buffers in the daemon, which serves every app at once, so one
// peer (a machine flooding its gateway, a client stalling uploads at the proxy) must run out of
// its share long before the daemon runs out of descriptors. Several listeners may share one
// budget (all gateways' API and DNS ports together).

export type BudgetLimits = { total: number; perAddress: number };

/** Why a connection was refused, for the refusal the peer sees. */
export type Refusal = { scope: 'total' | 'address'; limit: number };

export class ConnectionBudget {
  readonly limits: BudgetLimits;
  readonly #byAddress = new Map<string, number>();
  #open = 0;

  constructor(limits: BudgetLimits) {
    this.limits = limits;
  }

  get open(): number {
    return this.#open;
  }

  /** Counts `socket` until it closes, or refuses it (counting nothing) when over a limit. */
  admit(socket: Socket): Refusal | undefined {
    const address = socket.remoteAddress ?? '';
    const mine = this.#byAddress.get(address) ?? 0;
    if (mine >= this.limits.perAddress) return { scope: 'address', limit: this.limits.perAddress };
    if (this.#open >= this.limits.total) return { scope: 'total', limit: this.limits.total };
    this.#byAddress.set(address, mine + 1);
    this.#open++;
    socket.once('close', () => {
      this.#open--;
      const left = (this.#byAddress.get(address) ?? 1) - 1;
      if (left > 0) this.#byAddress.set(address, left);
      else this.#byAddress.delete(address);
    });
    return undefined;
  }
}

/** Refused connections waiting for their request head, per guard; past this they are just closed. */
const MAX_REFUSING = 256;
/** How long a refused connection may take to send the request its refusal answers. */
const REFUSE_WITHIN_MS = 1_000;

/**
 * A budget in front of an HTTP server. An over-budget connection is not closed at once (a client
 * whose request is already on its way would see a reset, not why): its first request gets 503
 * `too_many_connections` and the connection is closed. It may hold a descriptor for at most
 * REFUSE_WITHIN_MS, and only MAX_REFUSING of them at once.
 */
export class ConnectionGuard {
  readonly budget: ConnectionBudget;
  readonly #service: string;
  readonly #refusing = new WeakMap<Socket, Refusal>();
  #refusingCount = 0;

  constructor(budget: ConnectionBudget, service: string) {
    this.budget = budget;
    this.#service = service;
  }

  /**
   * For each new connection: counts it (true), or marks it to be refused (false; closed at once
   * when too many are waiting for their refusal).
   */
  onConnection(socket: Socket): boolean {
    const refusal = this.budget.admit(socket);
    if (!refusal) return true;
    if (this.#refusingCount >= MAX_REFUSING) {
      socket.destroy();
      return false;
    }
    this.#refusingCount++;
    this.#refusing.set(socket, refusal);
    const timer = setTimeout(() => socket.destroy(), REFUSE_WITHIN_MS);
    socket.once('close', () => {
      clearTimeout(timer);
      this.#refusingCount--;
    });
    return false;
  }

  /** Answers a request on a refused connection; true when it did (the caller then does nothing). */
  refuse(req: IncomingMessage, res: ServerResponse): boolean {
    const body = this.#refusalBody(req.socket);
    if (body === undefined) return false;
    res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1', connection: 'close' });
    res.end(body);
    return true;
  }

  /** The same for an upgrade request, answered on the raw socket. */
  refuseUpgrade(socket: Socket): boolean {
    const body = this.#refusalBody(socket);
    if (body === undefined) return false;
    socket.end(`HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n${body}`);
    return true;
  }

  #refusalBody(socket: Socket): string | undefined {
    const refusal = this.#refusing.get(socket);
    if (!refusal) return undefined;
    const who = refusal.scope === 'address' ? `from ${socket.remoteAddress ?? 'this address'}` : 'in total';
    return JSON.stringify({
      error: `too many connections to ${this.#service} ${who} (limit ${refusal.limit})`,
      code: 'too_many_connections',
      hint: refusal.scope === 'address'
        ? `keep at most ${refusal.limit} connections open at once: reuse connections (keep-alive) and close idle ones`
        : `${this.#service} is at its connection limit; retry shortly`,
    });
  }
}
