// Following a stream (a machine's logs or egress, a session's output) until it ends or Ctrl-C,
// which ends it as quietly as the stream's own end.

/**
 * Hands each item of `open(signal)` to `each` until the stream ends, `each` returns an exit code,
 * or Ctrl-C; the exit code, or 0.
 */
export async function followUntilInterrupted<T>(open: (signal: AbortSignal) => AsyncIterable<T>, each: (item: T) => number | void): Promise<number> {
  const abort = new AbortController();
  const interrupt = () => abort.abort();
  process.once('SIGINT', interrupt);
  try {
    for await (const item of open(abort.signal)) {
      const code = each(item);
      if (code !== undefined) return code;
    }
  } catch (err) {
    if (!abort.signal.aborted) throw err;
  } finally {
    process.off('SIGINT', interrupt);
  }
  return 0;
}
