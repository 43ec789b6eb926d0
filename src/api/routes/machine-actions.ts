import { z } from 'zod';
import { HangarError } from '../../protocol/errors.ts';
import { durationToMs, type Duration } from '../../protocol/duration.ts';
import { ExecRequestSchema, ExecResponseSchema, SignalRequestSchema, StopRequestSchema, WaitQuerySchema } from '../../protocol/schemas.ts';
import { SignalSchema } from '../../protocol/machine-config.ts';
import { execArgv, execInMachine } from '../../machines/machine-exec.ts';
import { route } from '../route.ts';
import type { ApiServices } from '../services.ts';
import { MachineParams, leaseNonceOf, OkSchema } from './params.ts';

function timeoutMsOf(timeout: Duration | undefined): number | undefined {
  if (timeout === undefined) return undefined;
  const ms = durationToMs(timeout);
  if (ms === undefined) {
    throw new HangarError('validation_failed', `timeout ${JSON.stringify(timeout)} is not a duration`, { hint: 'use a Go-style duration such as "10s" or "500ms"' });
  }
  return ms;
}

const StartResponseSchema = z.object({ previous_state: z.string(), migrated: z.boolean(), new_host: z.string() });

export const machineActionRoutes = [
  route({
    access: { action: 'control' },
    method: 'POST', path: '/v1/apps/{app_name}/machines/{machine_id}/start', tag: 'Machines', summary: 'Start a created or stopped machine (fast path)',
    params: MachineParams, response: StartResponseSchema,
    handler: async ({ services, params, headers, caller }) => {
      const { previousState } = await services.machines.start(params.app_name, params.machine_id, { leaseNonce: leaseNonceOf(headers), caller });
      return { previous_state: previousState, migrated: false, new_host: '' };
    },
  }),
  route({
    access: { action: 'control' },
    method: 'POST', path: '/v1/apps/{app_name}/machines/{machine_id}/stop', tag: 'Machines',
    summary: 'Stop a machine: signal (default SIGTERM), then SIGKILL after timeout; files are kept',
    params: MachineParams, body: StopRequestSchema, bodyOptional: true, response: OkSchema,
    handler: async ({ services, params, body, headers }) => {
      await services.machines.stop(params.app_name, params.machine_id, {
        leaseNonce: leaseNonceOf(headers), signalName: body?.signal, timeoutMs: timeoutMsOf(body?.timeout),
      });
      return { ok: true };
    },
  }),
  route({
    access: { action: 'control' },
    method: 'POST', path: '/v1/apps/{app_name}/machines/{machine_id}/restart', tag: 'Machines', summary: 'Restart a machine',
    params: MachineParams, query: z.looseObject({ signal: SignalSchema.optional(), timeout: z.string().optional() }), response: OkSchema,
    handler: async ({ services, params, query, headers, caller }) => {
      await services.machines.restart(params.app_name, params.machine_id, {
        caller, leaseNonce: leaseNonceOf(headers), signalName: query.signal, timeoutMs: timeoutMsOf(query.timeout),
      });
      return { ok: true };
    },
  }),
  route({
    access: { action: 'control' },
    method: 'POST', path: '/v1/apps/{app_name}/machines/{machine_id}/signal', tag: 'Machines', summary: "Send a signal to the machine's process",
    params: MachineParams, body: SignalRequestSchema, response: OkSchema,
    handler: async ({ services, params, body, headers }) => {
      await services.machines.signal(params.app_name, params.machine_id, body.signal, { leaseNonce: leaseNonceOf(headers) });
      return { ok: true };
    },
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/wait', tag: 'Machines',
    summary: 'Wait for a machine to reach a state (timeout in seconds, default 60; 408 on timeout)',
    params: MachineParams, query: WaitQuerySchema, response: OkSchema, observes: true,
    handler: async ({ services, params, query, signal }) => {
      await services.machines.wait(params.app_name, params.machine_id,
        { state: query.state, timeoutMs: query.timeout * 1000, instanceId: query.instance_id }, signal);
      return { ok: true };
    },
  }),
  route({
    access: { action: 'exec', command: ({ body }: { body: { command?: string[]; cmd?: string } }) => execArgv(body) },
    method: 'POST', path: '/v1/apps/{app_name}/machines/{machine_id}/exec', tag: 'Machines',
    summary: 'Run a command in a machine and return its output (timeout in seconds, default 30); a stopped machine is started first (started: true) unless autostart is off',
    params: MachineParams, body: ExecRequestSchema, response: ExecResponseSchema,
    handler: async ({ services, params, body, signal, caller }) => {
      const checkpoint = body.checkpoint ? await checkpointBefore(services, params, body.command ?? [body.cmd ?? '']) : undefined;
      const out = await execInMachine(services.machines, services.runner, params.app_name, params.machine_id,
        { command: body.command, cmd: body.cmd, timeoutS: body.timeout, stdin: body.stdin, maxOutputBytes: body.max_output_bytes, caller }, signal);
      return {
        exit_code: out.exitCode,
        ...(out.exitSignal !== undefined ? { exit_signal: out.exitSignal } : {}),
        stdout: out.stdout,
        stderr: out.stderr,
        stdout_truncated_bytes: out.stdoutDroppedBytes,
        stderr_truncated_bytes: out.stderrDroppedBytes,
        timed_out: out.timedOut,
        ...(checkpoint ? { checkpoint_id: checkpoint } : {}),
        ...(out.started ? { started: true } : {}),
        ...(out.stopped ? { stopped: out.stopped } : {}),
      };
    },
  }),
];

/** The checkpoint `checkpoint: true` on an exec asks for, named for the command it came before. */
export async function checkpointBefore(services: ApiServices, params: { app_name: string; machine_id: string }, command: string[]): Promise<string> {
  const c = await services.checkpoints.create(params.app_name, params.machine_id, { comment: `before: ${command.join(' ').slice(0, 1000)}` });
  return c.id;
}
