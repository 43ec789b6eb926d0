// nftables transactions through libnftables (what the `nft` program is built on) in this
// process: koffi calls it on a worker thread, so the daemon's loop goes on meanwhile. The program
// does the same work after a fork and an exec, several ms more on a busy host; a create installs
// its port's guard this way, and a `domains` app's DNS answer waits for its addresses to be let
// out. One transaction runs at a time: the library keeps global state.
import koffi from 'koffi';
import { HangarError } from '../protocol/errors.ts';

type Lib = {
  ctxNew: (flags: number) => unknown;
  bufferError: (ctx: unknown) => number;
  errorBuffer: (ctx: unknown) => string | null;
  run: { async: (ctx: unknown, script: string, done: (err: unknown, result: number) => void) => void };
  ctxFree: (ctx: unknown) => void;
};

let lib: Lib | undefined;
let queue: Promise<unknown> = Promise.resolve();

function load(): Lib {
  if (lib) return lib;
  let so: ReturnType<typeof koffi.load>;
  try {
    so = koffi.load('libnftables.so.1');
  } catch (err) {
    throw new HangarError('host_unsupported', `cannot load libnftables: ${(err as Error).message}`, {
      hint: 'install nftables (scripts/setup.sh does; it brings libnftables1)',
      cause: err,
    });
  }
  lib = {
    ctxNew: so.func('void *nft_ctx_new(uint32_t flags)'),
    bufferError: so.func('int nft_ctx_buffer_error(void *ctx)'),
    errorBuffer: so.func('const char *nft_ctx_get_error_buffer(void *ctx)'),
    run: so.func('int nft_run_cmd_from_buffer(void *ctx, const char *buf)'),
    ctxFree: so.func('void nft_ctx_free(void *ctx)'),
  };
  return lib;
}

/** Runs `script` (what `nft -f` reads) as one transaction: all of it or, failing, none of it. */
export function nft(script: string): Promise<void> {
  const result = queue.then(() => runScript(script));
  queue = result.catch(() => undefined);
  return result;
}

async function runScript(script: string): Promise<void> {
  const nftables = load();
  const ctx = nftables.ctxNew(0);
  try {
    nftables.bufferError(ctx);
    const code = await new Promise<number>((resolve, reject) => nftables.run.async(ctx, script, (err, res) => (err ? reject(err) : resolve(res))));
    if (code !== 0) {
      throw new HangarError('host_unsupported', `cannot install the machine firewall: ${(nftables.errorBuffer(ctx) ?? '').trim() || 'nft refused the rules'}`, {
        hint: 'install nftables (scripts/setup.sh does) and run the daemon as root',
      });
    }
  } finally {
    nftables.ctxFree(ctx);
  }
}
