import type { EgressEvent, HangarClient } from '../sdk/index.ts';
import { egressLine } from '../protocol/egress-log.ts';

// `hangar machines egress ID [-f] [--tail N] [--json]`: the machine's egress log, one line per
// event (or one JSON object per line), followed until Ctrl-C with -f.

export async function showEgress(client: HangarClient, app: string, id: string, opts: { follow: boolean; tail: number; json: boolean }): Promise<number> {
  const print = (e: EgressEvent) => process.stdout.write((opts.json ? JSON.stringify(e) : egressLine(e)) + '\n');
  if (!opts.follow) {
    (await client.machines.egress(app, id, { tail: opts.tail })).events.forEach(print);
    return 0;
  }
  const abort = new AbortController();
  process.once('SIGINT', () => abort.abort());
  try {
    for await (const e of client.machines.followEgress(app, id, { tail: opts.tail, signal: abort.signal })) print(e);
  } catch (err) {
    if (!abort.signal.aborted) throw err;
  }
  return 0;
}
