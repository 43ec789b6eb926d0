import type { Duplex } from 'node:stream';
import type { Picked } from './targets.ts';

// Concurrency type "connections" (Fly's default): a client connection, not a request, is the unit
// of load. Its first request picks a machine; the connection then holds that machine, counted as
// one load, until it closes, and its later requests go there without picking again. A request that
// cannot go there (the machine is no longer started, or fly-force/prefer-instance-id names
// another) picks anew, and the connection moves to what it picked.

type Wanted = { force?: string; prefer?: string };

const NOTHING = () => undefined;

export class ConnectionHolds {
  readonly #held = new WeakMap<Duplex, Picked>();

  /** The machine the connection holds, if it can take this request of `app`. */
  reuse(socket: Duplex, app: string, wanted: Wanted): Picked | undefined {
    const held = this.#held.get(socket);
    if (!held) return undefined;
    const { route } = held;
    if (route.app !== app || route.state !== 'started') return undefined;
    if ((wanted.force && wanted.force !== route.id) || (wanted.prefer && wanted.prefer !== route.id)) return undefined;
    return { route, release: NOTHING };
  }

  /**
   * For a "connections" machine, hands `picked` to the connection, which releases it when it
   * closes; the request gets a release that does nothing. Other machines' picks pass through.
   */
  keep(socket: Duplex, picked: Picked): Picked {
    if (!picked.route.countsConnections) return picked;
    const previous = this.#held.get(socket);
    if (previous) previous.release();
    else socket.once('close', () => this.drop(socket));
    this.#held.set(socket, picked);
    return { route: picked.route, release: NOTHING };
  }

  /** Ends the connection's hold (it closed, or it was upgraded and counts as a stream now). */
  drop(socket: Duplex): void {
    this.#held.get(socket)?.release();
    this.#held.delete(socket);
  }
}
