// What counts as a machine being in use, in one place: proxy requests and streams, any API call
// naming the machine, and the calls that stay open on it (exec, console, file transfers, log
// follows). Autostop and the idle_stop lifetime both read it, so neither stops a machine a
// command is still running in.

export class Activity {
  /** Calls and streams open on each machine right now. */
  readonly #open = new Map<string, number>();
  /** When each machine was last used; absent until it is. */
  readonly #last = new Map<string, number>();

  /** A use that lasts: the machine is busy until the returned release is called (once is enough). */
  hold(id: string): () => void {
    this.#open.set(id, (this.#open.get(id) ?? 0) + 1);
    this.#last.set(id, Date.now());
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.#open.get(id) ?? 1) - 1;
      if (left > 0) this.#open.set(id, left);
      else this.#open.delete(id);
      this.#last.set(id, Date.now());
    };
  }

  busy(id: string): boolean {
    return this.#open.has(id);
  }

  /** When the machine was last used, or `fallback` (e.g. when it started) if that is later. */
  lastUsed(id: string, fallback: number): number {
    return Math.max(this.#last.get(id) ?? 0, fallback);
  }

  /** How long the machine has gone unused by `now`; 0 while something holds it. */
  idleMs(id: string, since: number, now = Date.now()): number {
    return this.busy(id) ? 0 : Math.max(0, now - this.lastUsed(id, since));
  }

  /** Drops what is kept of a machine that is gone. */
  forget(id: string): void {
    this.#last.delete(id);
    this.#open.delete(id);
  }
}
