import { createServer, type Server, type Socket } from 'node:net';
import type { ConnectionBudget } from './connection-budget.ts';
import { EGRESS_HTTPS_PORT, EGRESS_HTTP_PORT } from './firewall.ts';

// The gateway's ports 443 and 80, where a machine's DNS sends names its app's secrets allow
// (transparent mode): each connection, budgeted with the gateway's other services, goes to the
// egress proxy, which terminates TLS on 443 itself.

export type EgressHandlers = { tls(socket: Socket): void; plain(socket: Socket): void };

export class GatewayEgress {
  readonly #handlers: EgressHandlers;
  readonly #budget: ConnectionBudget;
  readonly #servers = new Map<number, Server[]>();

  constructor(handlers: EgressHandlers, budget: ConnectionBudget) {
    this.#handlers = handlers;
    this.#budget = budget;
  }

  /** Listens on `gateway`:443 and :80 for the app of `subnetIndex`. Idempotent. */
  async serve(subnetIndex: number, gateway: string): Promise<void> {
    if (this.#servers.has(subnetIndex)) return;
    const servers: Server[] = [];
    this.#servers.set(subnetIndex, servers);
    try {
      for (const [port, handle] of [[EGRESS_HTTPS_PORT, this.#handlers.tls], [EGRESS_HTTP_PORT, this.#handlers.plain]] as const) {
        const server = createServer((socket) => {
          socket.on('error', () => socket.destroy());
          // As node:http's own listeners do: without it, a response written in pieces waits out delayed ACKs (~40 ms).
          socket.setNoDelay(true);
          if (this.#budget.admit(socket)) return void socket.destroy();
          handle(socket);
        });
        servers.push(server);
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(port, gateway, () => resolve());
        });
        server.on('error', () => undefined);
      }
    } catch (err) {
      this.stop(subnetIndex);
      throw err;
    }
  }

  stop(subnetIndex: number): void {
    for (const server of this.#servers.get(subnetIndex) ?? []) if (server.listening) server.close();
    this.#servers.delete(subnetIndex);
  }

  close(): void {
    for (const index of [...this.#servers.keys()]) this.stop(index);
  }
}
