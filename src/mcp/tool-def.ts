import { z } from 'zod';
import type { ToolAnnotations } from '@modelcontextprotocol/sdk/types.js';
import type { HangarClient } from '../sdk/index.ts';
import type { DaemonAddresses } from '../protocol/daemon-addresses.ts';

// One table of tools feeds the MCP server (both transports) and /llms.txt, like the route table
// does for REST. A tool is a thin shape over one or two SDK client calls; it never touches services.

export type ToolContext = {
  client: HangarClient;
  /** Aborts when the MCP request is cancelled or its connection goes away. */
  signal: AbortSignal;
  /** Sends a progress notification carrying `message`, when the caller asked for progress. */
  progress: (message: string) => Promise<void>;
};

/** What a tool hands back: a one-line summary for people and the JSON for programs; `text`, when
 * the data is big, is how it reads for a person in place of the JSON repeated. `failed` marks a
 * result that is an error yet carries data worth having (a command its machine's stop cut short). */
export type ToolOutput = { summary: string; data: Record<string, unknown>; text?: string; failed?: boolean };

type Shape = Record<string, z.ZodType>;

export type ToolDef<S extends Shape = Shape> = {
  name: string;
  /** Text that names an address is made from the daemon's (undefined when it could not be asked). */
  description: string | ((addresses: DaemonAddresses | undefined) => string);
  input: S;
  annotations?: ToolAnnotations;
  run: (args: z.output<z.ZodObject<S>>, ctx: ToolContext) => Promise<ToolOutput>;
};

export function tool<S extends Shape>(def: ToolDef<S>): ToolDef {
  return def as unknown as ToolDef;
}

export function describe(def: ToolDef, addresses: DaemonAddresses | undefined): string {
  return typeof def.description === 'string' ? def.description : def.description(addresses);
}

// Arguments most tools share, described once so every tool says the same thing.
export const appArg = z.string().min(1).meta({ description: 'App name' });
export const machineArg = z.string().min(1).meta({ description: 'Machine id (14 hex chars)' });
export const pathArg = z.string().regex(/^\//, 'an absolute path').meta({ description: 'Absolute path inside the machine' });

export const READ_ONLY: ToolAnnotations = { readOnlyHint: true, openWorldHint: false };
export const CHANGES: ToolAnnotations = { readOnlyHint: false, destructiveHint: false, openWorldHint: false };
export const DESTROYS: ToolAnnotations = { readOnlyHint: false, destructiveHint: true, openWorldHint: false };
