import { z } from 'zod';
import { DurationSchema, durationToMs, formatDurationMs } from './duration.ts';
import { LimitsSchema, type LimitsOverride } from './limits.ts';
import { domainPatternProblem, normalizeDomainPattern } from './domain-patterns.ts';

// Hangar's settings of an app (an extension of Fly's apps API): where its machines may send
// traffic, how long an idle machine stays up before the edge proxy autostops it, and whether its
// machines may make namespaces of their own, and its limits (limits.ts).

export const DEFAULT_AUTOSTOP_IDLE_MS = 5 * 60_000;
const MIN_AUTOSTOP_IDLE_MS = 1000;
const MAX_AUTOSTOP_IDLE_MS = 7 * 24 * 3_600_000;

/** Why `text` is not an IPv4 network (`a.b.c.d/n`) or address, or undefined when it is one. */
export function ipv4CidrProblem(text: string): string | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/.exec(text);
  const octets = m?.slice(1, 5).map(Number) ?? [];
  const prefix = m?.[5] === undefined ? 32 : Number(m[5]);
  if (!m || octets.some((o) => o > 255) || prefix > 32) return 'not an IPv4 network such as 10.0.0.0/8 or an address such as 192.0.2.7';
  const address = ((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) >>> 0;
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const network = (address & mask) >>> 0;
  if (network !== address) {
    const dotted = [network >>> 24, (network >>> 16) & 255, (network >>> 8) & 255, network & 255].join('.');
    return `has host bits set; the network is ${dotted}/${prefix}`;
  }
  return undefined;
}

const EgressCidrSchema = z
  .string()
  .superRefine((text, ctx) => {
    const problem = ipv4CidrProblem(text);
    if (problem) ctx.addIssue({ code: 'custom', message: `${JSON.stringify(text)} ${problem}` });
  })
  .meta({ description: 'An IPv4 network (10.0.0.0/8) or one address (192.0.2.7)' });

const EgressDomainSchema = z
  .string()
  .superRefine((text, ctx) => {
    const problem = domainPatternProblem(text);
    if (problem) ctx.addIssue({ code: 'custom', message: `${JSON.stringify(text)} ${problem}` });
  })
  .overwrite(normalizeDomainPattern)
  .meta({ description: 'A name (registry.npmjs.org) or every name below one (*.github.com)' });

export const EgressSchema = z
  .discriminatedUnion('policy', [
    z.object({ policy: z.literal('allow') }),
    z.object({ policy: z.literal('deny') }),
    z.object({ policy: z.literal('cidrs'), cidrs: z.array(EgressCidrSchema).min(1).max(256) }),
    z.object({ policy: z.literal('domains'), allow: z.array(EgressDomainSchema).min(1).max(256) }),
  ])
  .meta({
    description:
      "Where the app's machines may send traffic beyond their app: allow (NAT to the host's network, link-local metadata addresses excepted; the default), " +
      'deny (nothing), cidrs (only those networks), or domains (only the addresses their gateway\'s DNS gave them for the names allowed; ' +
      'other names are REFUSED). Their gateway\'s DNS and _api.internal:4280 are always reachable.',
  });

export const AutostopIdleSchema = DurationSchema.refine((value) => {
  const ms = durationToMs(value);
  return ms !== undefined && ms >= MIN_AUTOSTOP_IDLE_MS && ms <= MAX_AUTOSTOP_IDLE_MS;
}, 'a duration from 1s to 168h, such as "5m"').meta({
  description: 'How long a machine with no activity (proxy requests and streams, API calls on it, execs, consoles, file transfers, log follows) stays up before autostop; default "5m"',
});

export const NestedNamespacesSchema = z.boolean().meta({
  description:
    'Let the app\'s machines make namespaces of their own (unshare -U -r, mounts inside them), for sandboxes or container ' +
    'tools in a machine; the kernel then lets them reach more of its code. Applies to machines with a user namespace of ' +
    'their own, at their next start or update; default false',
});

/** The settings fields a create or update request may carry; absent ones keep their value. */
export const AppSettingsRequestSchema = z.object({
  egress: EgressSchema.optional(),
  autostop_idle: AutostopIdleSchema.optional(),
  nested_namespaces: NestedNamespacesSchema.optional(),
  limits: LimitsSchema.optional(),
});

export const AppSettingsWireSchema = z.object({
  egress: EgressSchema,
  autostop_idle: z.string().meta({ description: 'A duration such as "5m"' }),
  nested_namespaces: NestedNamespacesSchema,
  limits: LimitsSchema,
});

export type Egress = z.infer<typeof EgressSchema>;
export type AppSettingsRequest = z.input<typeof AppSettingsRequestSchema>;

/** An app's settings as services use them. */
export type AppSettings = { egress: Egress; autostopIdleMs: number; nestedNamespaces: boolean; limits: LimitsOverride };

export const DEFAULT_APP_SETTINGS: AppSettings = { egress: { policy: 'allow' }, autostopIdleMs: DEFAULT_AUTOSTOP_IDLE_MS, nestedNamespaces: false, limits: {} };

/** The changes a validated request asks for. */
export function settingsChange(req: z.output<typeof AppSettingsRequestSchema>): Partial<AppSettings> {
  return {
    ...(req.egress ? { egress: req.egress } : {}),
    ...(req.autostop_idle !== undefined ? { autostopIdleMs: Math.round(durationToMs(req.autostop_idle)!) } : {}),
    ...(req.nested_namespaces !== undefined ? { nestedNamespaces: req.nested_namespaces } : {}),
    ...(req.limits ? { limits: req.limits } : {}),
  };
}

export function settingsToWire(settings: AppSettings): z.infer<typeof AppSettingsWireSchema> {
  return { egress: settings.egress, autostop_idle: formatDurationMs(settings.autostopIdleMs), nested_namespaces: settings.nestedNamespaces, limits: settings.limits };
}
