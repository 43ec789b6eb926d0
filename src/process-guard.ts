// The last line of defence of a daemon that serves every app at once: an error nobody caught
// (a rejected promise with no handler, an exception thrown from a callback) is logged and the
// daemon keeps serving, instead of Node's default of exiting and taking the API, the proxy and
// every app's DNS down with it. Each such log line is a bug to fix where it was thrown.
//
// Kept serving on purpose: the daemon's state of record is SQLite (written before and after
// every transition) and the runtime's own state, so a request that died half-way leaves an
// intent that reconcile understands, not a corrupt process. Running out of memory is not an
// exception Node can survive, and is not caught here.

export type GuardLog = (line: string) => void;

/** Installs the handlers once per process; returns a function that removes them. */
export function guardProcess(log: GuardLog = (line) => process.stderr.write(line + '\n')): () => void {
  const describe = (err: unknown) => (err instanceof Error ? (err.stack ?? err.message) : String(err));
  const onRejection = (reason: unknown) => log(`hangar: unhandled rejection (kept serving): ${describe(reason)}`);
  const onException = (err: Error, origin: string) => log(`hangar: uncaught exception from ${origin} (kept serving): ${describe(err)}`);
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  return () => {
    process.off('unhandledRejection', onRejection);
    process.off('uncaughtException', onException);
  };
}
