// What counts as a machine being in use, in one place: proxy requests and streams, any API call
// naming the machine, the calls that stay open on it (exec, console, file transfers, log
// follows), and sessions while they run. Autostop and the idle_stop lifetime both read it, so
// neither stops a machine a command is still running in.

export class Activity {
  /** Says whether something this tracker is not told about directly (a running session) uses the machine. */
  readonly #busyElsewhere: (id: string) => boolean;
  /** Calls and streams open on each machine right now. */
  readonly #open = new Map<string, number>();
  /** When each machine was last used; absent until it is. */
  readonly #last = new Map<string, number>();

  constructor(opts: { busyElsewhere?: (id: string) => boolean } = {}) {
    this.#busyElsewhere = opts.busyElsewhere ?? (() => false);
  }

  /** A use of the machine that is over as soon as it is made (a session's input, say). */
  touch(id: string): void {
    this.#last.set(id, Date.now());
  }

  /** A use that lasts: the machine is busy until the returned release is called (once is enough). */
  hold(id: string): () => void {
    this.#open.set(id, (this.#open.get(id) ?? 0) + 1);
    this.touch(id);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.#open.get(id) ?? 1) - 1;
      if (left > 0) this.#open.set(id, left);
      else this.#open.delete(id);
      this.touch(id);
    };
  }

  busy(id: string): boolean {
    if (this.#open.has(id)) return true;
    if (!this.#busyElsewhere(id)) return false;
    // Idleness counts from when it was last seen busy, not from when that use began.
    this.touch(id);
    return true;
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
