import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { HangarError } from '../protocol/errors.ts';
import { SpareProcess } from '../runtime/spare-process.ts';

// The host's network is set up by iproute2, run from shell scripts: one shell per change, its
// commands side by side where they can be (nftables goes through its library, nft-lib.ts). Spawning from the daemon costs more than
// the netlink work itself, so each runner keeps a shell forked ahead.

/** An `ip -batch` run, in a namespace or the host's, as a shell line. */
export function ipStep(netns: string | undefined, commands: string[]): string {
  return `ip ${netns ? `-n ${netns} ` : ''}-batch - <<'EOF'\n${commands.join('\n')}\nEOF`;
}

/** A shell line (a heredoc's first line included) run in the background; `$!` is its pid. */
export function background(line: string): string {
  const end = line.indexOf('\n');
  return end < 0 ? `${line} &` : `${line.slice(0, end)} &${line.slice(end)}`;
}

/**
 * Runs shell lines in one `sh` (stopping at the first that fails): a few ms in all. The shell is
 * one forked ahead (`sh -s`, reading the script from its stdin): a fork from the daemon's large
 * heap blocks its loop for milliseconds, which a create setting up its network would otherwise
 * pay on its path. The script's commands must not read stdin themselves: they take their input
 * from heredocs (asynchronous ones get /dev/null).
 */
export class ShellRunner {
  /** Forked at the first use, not when the daemon loads this module. */
  #spare: SpareProcess | undefined;

  async run(lines: string[]): Promise<void> {
    const script = ['set -e', ...lines].join('\n');
    const failed = (stderr: string, err?: Error) =>
      new HangarError('runtime_error', `cannot set up the machine network: ${stderr.trim() || err?.message || 'the script failed'}`, {
        hint: 'the daemon needs root, iproute2 and nftables; check `ip netns list`, `ip link` and `nft list tables` on the host',
        cause: err,
      });
    const spare = this.#spare?.take({ args: [], stdin: 'keep' });
    this.#spare ??= new SpareProcess(['pipe', 'ignore', 'pipe'], ['sh', '-s']);
    if (spare) {
      let stderr = '';
      spare.stderr!.on('data', (d: Buffer) => (stderr += d));
      const closed = once(spare, 'close');
      spare.stdin!.end(`${script}\n`);
      const [code] = (await closed) as [number | null];
      if (code !== 0) throw failed(stderr);
      return;
    }
    await new Promise<void>((resolve, reject) => {
      execFile('sh', ['-c', script], (err, _stdout, stderr) => (err ? reject(failed(String(stderr), err)) : resolve()));
    });
  }

  close(): void {
    this.#spare?.close();
  }
}
