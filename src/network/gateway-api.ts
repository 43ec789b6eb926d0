import { createServer, type Server, type Socket } from 'node:net';
import { GATEWAY_API_PORT } from './firewall.ts';

// The Machines API inside each app's network, as on Fly: `_api.internal:4280` is the app's
// gateway, whose port 4280 hands every connection to the API's own HTTP server. So a machine
// gets exactly what a caller on the host gets for the token it sends (and 401 without one).

export class GatewayApi {
  readonly #accept: (socket: Socket) => void;
  readonly #servers = new Map<number, Server>();

  /** `accept` takes each connection, e.g. `(s) => httpServer.emit('connection', s)`. */
  constructor(accept: (socket: Socket) => void) {
    this.#accept = accept;
  }

  /** Listens on `gateway`:4280 for the app of `subnetIndex`. Idempotent. */
  async serve(subnetIndex: number, gateway: string): Promise<void> {
    if (this.#servers.has(subnetIndex)) return;
    const server = createServer((socket) => this.#accept(socket));
    this.#servers.set(subnetIndex, server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => {
        this.#servers.delete(subnetIndex);
        reject(err);
      });
      server.listen(GATEWAY_API_PORT, gateway, () => resolve());
    });
  }

  stop(subnetIndex: number): void {
    this.#servers.get(subnetIndex)?.close();
    this.#servers.delete(subnetIndex);
  }

  close(): void {
    for (const index of [...this.#servers.keys()]) this.stop(index);
  }
}
