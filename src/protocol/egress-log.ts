import { z } from 'zod';

// A machine's egress log on the wire: every name it asked its gateway's DNS for outside its
// app, every connection it opened beyond its app (when it opens, and its byte counts when it
// ends) and every attempt its app's egress policy refused.

const Time = z.string().meta({ description: 'When, ISO 8601' });

export const EgressEventSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('dns'),
    time: Time,
    name: z.string(),
    type: z.string().meta({ description: 'The record type asked for (A, AAAA, ...)' }),
    verdict: z.enum(['allowed', 'refused']).meta({ description: "refused: the app's egress policy does not let the name be looked up" }),
    rcode: z.string().meta({ description: 'NOERROR, NXDOMAIN, REFUSED, ...' }),
    answers: z.array(z.string()).meta({ description: 'The IPv4 addresses answered' }),
  }),
  z.object({
    kind: z.literal('connect'),
    time: Time,
    proto: z.string(),
    dst: z.string().meta({ description: 'ADDRESS:PORT (ADDRESS for protocols without ports)' }),
    verdict: z.enum(['allowed', 'denied']).meta({ description: "denied: the app's egress policy dropped it (repeats of one attempt within 30 s are logged once)" }),
  }),
  z.object({
    kind: z.literal('close'),
    time: Time,
    proto: z.string(),
    dst: z.string(),
    bytes_out: z.number().int(),
    bytes_in: z.number().int(),
    packets_out: z.number().int(),
    packets_in: z.number().int(),
    duration_ms: z.number().int().optional().meta({ description: 'Absent when the daemon did not see it open' }),
  }),
]);

export type EgressEvent = z.infer<typeof EgressEventSchema>;

export const EgressQuerySchema = z.object({
  follow: z.stringbool().default(false),
  tail: z.coerce.number().int().min(0).max(100_000).default(1000),
});

/** One event as a line of text (CLI, MCP summaries). */
export function egressLine(e: EgressEvent): string {
  switch (e.kind) {
    case 'dns':
      return `${e.time}  dns      ${e.name} ${e.type} ${e.verdict === 'refused' ? 'REFUSED' : `${e.rcode}${e.answers.length ? ` ${e.answers.join(',')}` : ''}`}`;
    case 'connect':
      return `${e.time}  connect  ${e.proto} ${e.dst}${e.verdict === 'denied' ? ' DENIED' : ''}`;
    case 'close':
      return `${e.time}  close    ${e.proto} ${e.dst} out ${e.bytes_out} B in ${e.bytes_in} B${e.duration_ms !== undefined ? ` after ${(e.duration_ms / 1000).toFixed(1)} s` : ''}`;
  }
}
