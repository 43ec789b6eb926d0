import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { writeSync } from 'node:fs';

// A process forked ahead of need. Forking from the launcher (a Node process of tens of MB) costs
// about 2 ms, most of a start's or an exec's overhead over crun itself, and it blocks the
// launcher's loop meanwhile. A spare is a small shell forked while nothing waits on it: when a
// request comes, the launcher moves it into the machine's cgroup and writes it its argv, and it
// execs that in place, so the request pays a pipe write and one exec instead of a fork.
//
// It is forked with the fixed head of its argv (which may hold any text, a script say); then it
// reads, one per line: the count of further arguments, those arguments, what its stdin becomes (`null`:
// /dev/null; `keep`: the rest of the pipe) and a file its stdout and stderr are appended to (an
// empty line keeps them as spawned). `read` takes a pipe byte by byte, so the bytes after the
// header reach the exec'd program untouched. EOF before the header ends (the launcher is gone)
// ends the spare.
const SPARE_SCRIPT = `read -r n || exit 0
i=0
while [ "$i" -lt "$n" ]; do IFS= read -r a || exit 0; set -- "$@" "$a"; i=$((i + 1)); done
IFS= read -r in || exit 0
IFS= read -r out || exit 0
[ "$in" = null ] && exec </dev/null
[ -n "$out" ] && exec >>"$out" 2>&1
exec "$@"`;

export const SPARE_ARGV0 = 'hangar-spare';

/**
 * The next spare is forked this long after one is taken, not at once: the fork would take a
 * core from the crun run or exec the taken one is starting (these hosts have two).
 */
const REFILL_DELAY_MS = 30;
const LOST_REFILL_DELAY_MS = 1000;

export type SpareUse = {
  /** Appended to the spare's fixed head; no newlines. */
  args: string[];
  stdin: 'null' | 'keep';
  /** Where its stdout and stderr go; as spawned when absent. */
  appendOutputTo?: string;
  /** cgroup.procs of the group it must run in, open for writing. */
  groupFd?: number;
};

/** One spare at a time, with the stdio and session every use of this kind needs; forked again after each use. */
export class SpareProcess {
  readonly #stdio: StdioOptions;
  readonly #head: string[];
  #spare: ChildProcess | undefined;
  #closed = false;

  /** `stdio[0]` must be 'pipe' (the header comes that way); `head` starts the argv of every use. */
  constructor(stdio: StdioOptions, head: string[]) {
    this.#stdio = stdio;
    this.#head = head;
    this.#refill();
  }

  /**
   * The spare, now running its head and `use.args`; undefined when there is none ready, or the request
   * cannot go through one (a newline in an argument), so the caller spawns as before.
   */
  take(use: SpareUse): ChildProcess | undefined {
    const child = this.#spare;
    const lines = [String(use.args.length), ...use.args, use.stdin, use.appendOutputTo ?? ''];
    if (!child || child.exitCode !== null || child.signalCode !== null || lines.some((l) => l.includes('\n'))) return undefined;
    this.#spare = undefined;
    setTimeout(() => this.#refill(), REFILL_DELAY_MS).unref();
    try {
      if (use.groupFd !== undefined) writeSync(use.groupFd, String(child.pid!));
    } catch {
      // It cannot join the group: it must not run there outside it.
      child.kill('SIGKILL');
      return undefined;
    }
    child.stdin!.write(`${lines.join('\n')}\n`);
    if (use.stdin === 'null') child.stdin!.end();
    return child;
  }

  close(): void {
    this.#closed = true;
    this.#spare?.kill('SIGKILL');
    this.#spare = undefined;
  }

  #refill(): void {
    if (this.#closed || this.#spare) return;
    // Own session, as every process the launcher starts for a machine has; unref'd so a spare never holds the launcher up.
    const child = spawn('sh', ['-c', SPARE_SCRIPT, SPARE_ARGV0, ...this.#head], { detached: true, stdio: this.#stdio });
    // One that dies unused (killed by someone) is replaced, unhurried: whatever kills it may do so again.
    const lost = () => {
      if (this.#spare !== child) return;
      this.#spare = undefined;
      setTimeout(() => this.#refill(), LOST_REFILL_DELAY_MS).unref();
    };
    child.once('error', lost);
    child.once('exit', lost);
    child.stdin!.on('error', () => {}); // a spare that died before its header
    child.unref();
    this.#spare = child;
  }
}
