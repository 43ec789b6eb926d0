import { once } from 'node:events';
import type { FastifyReply } from 'fastify';
import { HANDLED } from './route.ts';

// A followed log (a machine's output, its egress log) as server-sent events: one `event` per line,
// the tail first, then what is appended, until the client goes away.

const KEEP_ALIVE_MS = 15_000;

/** Answers with the event stream; `lines` are sent as they are, so each must be one line of text. */
export async function streamLineEvents(reply: FastifyReply, signal: AbortSignal, event: string, tail: string[], batches: AsyncIterable<string[]>): Promise<typeof HANDLED> {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
  const send = (line: string) => res.write(`event: ${event}\ndata: ${line}\n\n`);
  tail.forEach(send);
  const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), KEEP_ALIVE_MS);
  try {
    for await (const batch of batches) {
      let flowing = true;
      for (const line of batch) flowing = send(line);
      // A reader slower than the machine writes holds the log back, not the daemon's memory.
      if (!flowing) await once(res, 'drain', { signal }).catch(() => undefined);
    }
  } finally {
    clearInterval(keepAlive);
    res.end();
  }
  return HANDLED;
}
