import type { EgressEvent, HangarClient } from '../sdk/index.ts';
import { egressLine } from '../protocol/egress-log.ts';
import { followUntilInterrupted } from './follow.ts';

// `hangar machines egress ID [-f] [--tail N] [--json]`: the machine's egress log, one line per
// event (or one JSON object per line), followed until Ctrl-C with -f.

export async function showEgress(client: HangarClient, app: string, id: string, opts: { follow: boolean; tail: number; json: boolean }): Promise<number> {
  const print = (e: EgressEvent) => {
    process.stdout.write((opts.json ? JSON.stringify(e) : egressLine(e)) + '\n');
  };
  if (!opts.follow) {
    (await client.machines.egress(app, id, { tail: opts.tail })).events.forEach(print);
    return 0;
  }
  return followUntilInterrupted((signal) => client.machines.followEgress(app, id, { tail: opts.tail, signal }), print);
}
