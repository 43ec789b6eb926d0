import { EventEmitter } from 'node:events';
import type { MachineState } from '../protocol/states.ts';

const ANY = Symbol('any machine');

export type StateChange = { id: string; state: MachineState; instanceId: string };

/** Lets callers wait for a machine to reach a state (GET …/wait). */
export class StateWaiters {
  readonly #emitter = new EventEmitter();

  constructor() {
    this.#emitter.setMaxListeners(0);
  }

  publish(change: StateChange): void {
    this.#emitter.emit(change.id, change);
    this.#emitter.emit(ANY, change);
  }

  /** Every change of every machine, e.g. for the proxy's route table. */
  onChange(listener: (change: StateChange) => void): void {
    this.#emitter.on(ANY, listener);
  }

  /** Resolves true when `matches` holds for a published change, false at the deadline. */
  waitFor(id: string, matches: (change: StateChange) => boolean, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.#emitter.off(id, listener);
        signal?.removeEventListener('abort', onAbort);
        resolve(ok);
      };
      const listener = (change: StateChange) => {
        if (matches(change)) done(true);
      };
      const onAbort = () => done(false);
      const timer = setTimeout(() => done(false), timeoutMs);
      this.#emitter.on(id, listener);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
