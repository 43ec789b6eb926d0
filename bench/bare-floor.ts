import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeBusyboxRootfs } from '../test/helpers/busybox-rootfs.ts';
import { hybridCgroup2Mounts } from '../src/runtime/crun-command.ts';

// The floor Hangar's machine operations are measured against: crun on a plain `crun spec` bundle
// (busybox rootfs, no seccomp, no user namespace, no network setup), timed inside ONE long-lived
// bash in the private mount namespace crun needs on hybrid-cgroup hosts, so no per-run spawn,
// unshare or Node cost is in the number. Each `measure()` is one `crun run -d` and one
// `crun exec true` on it, timed by bash's own clock.

export type FloorSample = { runMs: number; execMs: number };

const SCRIPT = `
for m in "$@"; do umount "$m" || exit 125; done
cd "$B"
while read -r _; do
  t0=$EPOCHREALTIME
  crun --root "$S" run -d -b "$B" --pid-file "$B/pid" floor </dev/null >/dev/null 2>>"$B/err" || { echo fail; continue; }
  t1=$EPOCHREALTIME
  crun --root "$S" exec floor true </dev/null >/dev/null 2>>"$B/err" || { echo fail; crun --root "$S" delete -f floor; continue; }
  t2=$EPOCHREALTIME
  crun --root "$S" delete -f floor 2>>"$B/err"
  echo "$t0 $t1 $t2"
done`;

export class BareFloor {
  readonly #dir: string;
  readonly #shell;
  readonly #lines: AsyncIterator<string>;

  constructor() {
    this.#dir = mkdtempSync(join(tmpdir(), 'bench-floor-'));
    const rootfs = makeBusyboxRootfs(this.#dir).path;
    execFileSync('crun', ['spec'], { cwd: this.#dir });
    const spec = JSON.parse(readFileSync(join(this.#dir, 'config.json'), 'utf8'));
    spec.process.terminal = false;
    spec.process.args = ['sleep', '1000'];
    spec.root.path = rootfs;
    writeFileSync(join(this.#dir, 'config.json'), JSON.stringify(spec));
    const hidden = hybridCgroup2Mounts(readFileSync('/proc/self/mountinfo', 'utf8'));
    const env = { ...process.env, B: this.#dir, S: join(this.#dir, 'state') };
    const argv = hidden.length > 0 ? ['unshare', '-m', '--propagation', 'slave', 'bash', '-c', SCRIPT, 'floor', ...hidden] : ['bash', '-c', SCRIPT, 'floor'];
    this.#shell = spawn(argv[0]!, argv.slice(1), { env, stdio: ['pipe', 'pipe', 'inherit'] });
    this.#lines = createInterface({ input: this.#shell.stdout! })[Symbol.asyncIterator]();
  }

  async measure(): Promise<FloorSample> {
    this.#shell.stdin!.write('go\n');
    const { value, done } = await this.#lines.next();
    if (done || value === 'fail') throw new Error(`bare crun failed: ${readFileSync(join(this.#dir, 'err'), 'utf8').trim().split('\n').at(-1)}`);
    const [t0, t1, t2] = value.split(' ').map((s) => Number.parseFloat(s.replace(',', '.')) * 1000);
    return { runMs: t1! - t0!, execMs: t2! - t1! };
  }

  async close(): Promise<void> {
    const exited = once(this.#shell, 'exit');
    this.#shell.stdin!.end();
    await exited;
    rmSync(this.#dir, { recursive: true, force: true });
  }
}
