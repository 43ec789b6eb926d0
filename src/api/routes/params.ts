import { z } from 'zod';

export const AppParams = z.object({ app_name: z.string().min(1) });
export const MachineParams = AppParams.extend({ machine_id: z.string().min(1) });
export const OkSchema = z.object({ ok: z.boolean() });

export function leaseNonceOf(headers: Record<string, string | string[] | undefined>): string | undefined {
  const v = headers['fly-machine-lease-nonce'];
  return Array.isArray(v) ? v[0] : v || undefined;
}
