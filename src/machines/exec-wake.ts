import { HangarError } from '../protocol/errors.ts';
import type { EventSource } from '../protocol/event-sources.ts';
import type { Caller, Halt, MachineService } from './machine-service.ts';
import type { MachineRecord } from './store.ts';

// What an exec needs from the machine's lifecycle around it: a stopped machine is woken for a
// command, as the edge proxy wakes one for a request, and a command cut short by a stop says who
// stopped the machine and why, instead of a bare exit 137.

// Not `created`: a machine made with skip_launch waits for an explicit start.
const WAKEABLE = new Set(['stopped', 'suspended']);
const SETTLING_DOWN = new Set(['stopping', 'suspending']);
const WAKE_TIMEOUT_MS = 30_000;
const VERBS: Partial<Record<Halt['action'], string>> = {
  stop: 'stopped', restart: 'restarted', update: 'updated (which restarts it)', destroy: 'destroyed', restore: 'restored to a checkpoint (which restarts it)',
};

/** Starts on their own when something needs them, unless a service of theirs says autostart: false. */
export function autostarts(m: MachineRecord): boolean {
  return !((m.config.services ?? []) as Array<{ autostart?: boolean }>).some((s) => s.autostart === false);
}

/**
 * Makes sure the machine is started for a command: a stopped (or stopping) one is started when it
 * autostarts. True when this call (or one racing it) started it. Other states are left for the
 * exec's own state check to refuse. The start is the caller's, limits and all: a robot cannot
 * start machines past its limits by exec'ing in them instead.
 */
export async function wakeForExec(machines: MachineService, app: string, id: string, caller: Caller): Promise<boolean> {
  let m = machines.get(app, id);
  if (m.state === 'started' || !(WAKEABLE.has(m.state) || SETTLING_DOWN.has(m.state) || m.state === 'starting')) return false;
  if (!autostarts(m)) {
    throw new HangarError('invalid_state', `machine ${m.id} is ${m.state}, and its services turn autostart off`, {
      hint: 'start the machine first (POST …/start)',
      details: { state: m.state },
      next: [{ action: 'machine_start', id: m.id }],
    });
  }
  if (SETTLING_DOWN.has(m.state)) {
    await machines.wait(app, m.id, { state: 'stopped', timeoutMs: WAKE_TIMEOUT_MS });
    m = machines.get(app, id);
  }
  if (WAKEABLE.has(m.state)) {
    try {
      await machines.start(app, m.id, { caller });
      return true;
    } catch (err) {
      // Another call is starting it at the same time: its start is this one's too.
      if (machines.get(app, id).state !== 'starting') throw err;
    }
  }
  await machines.wait(app, m.id, { state: 'started', timeoutMs: WAKE_TIMEOUT_MS });
  return true;
}

/** Why a command ended early: the machine was stopped (or restarted, updated, destroyed) under it. */
export type StoppedNotice = {
  by: EventSource;
  action: Halt['action'];
  /** The lifetime rule that stopped it, when one did. */
  rule?: string;
  message: string;
  hint: string;
};

/** The notice for a command that failed while its machine halted, if it did since `since`. */
export function stoppedDuring(machines: MachineService, m: MachineRecord, since: number, exitCode: number): StoppedNotice | undefined {
  if (exitCode === 0) return undefined;
  const halt = machines.haltSince(m.id, since);
  return halt && noticeOf(halt, m);
}

function noticeOf(halt: Halt, m: MachineRecord): StoppedNotice {
  const rule = typeof halt.reason?.rule === 'string' ? halt.reason.rule : undefined;
  const limit = typeof halt.reason?.limit === 'string' ? halt.reason.limit : undefined;
  const base = { by: halt.source, action: halt.action, ...(rule ? { rule } : {}) };
  // In no surface's words: the same notice reaches REST, the SDK, the CLI and MCP.
  const again = 'run the command again: an exec on a stopped machine starts it (unless its services turn autostart off)';
  if (halt.source === 'autostop') {
    return {
      ...base,
      message: `the machine was stopped by autostop (no activity for the app's autostop_idle${limit ? `, ${limit}` : ''}) while the command ran`,
      hint: `${again}; to keep idle machines up longer, raise app ${m.app}'s autostop_idle`,
    };
  }
  if (halt.source === 'lifetime') {
    const what = rule === 'max_run' ? `it had run for ${limit ?? 'its max_run'}` : `no activity for ${limit ?? 'its idle_stop'}`;
    return {
      ...base,
      message: `the machine was stopped by its lifetime rule ${rule ?? 'idle_stop'} (${what}) while the command ran`,
      hint: `${again}; or raise its config.lifetime.${rule ?? 'max_run'} with a machine update`,
    };
  }
  if (halt.action === 'exit') {
    return {
      ...base,
      message: `the machine's main process exited (exit code ${String(halt.reason?.exit_code ?? '?')}) while the command ran, which stopped the machine`,
      hint: `its logs say why the main process ended; ${again}`,
    };
  }
  const verb = VERBS[halt.action] ?? 'stopped';
  return {
    ...base,
    message: `the machine was ${verb} by a ${halt.source === 'user' ? 'user' : halt.source} call while the command ran`,
    hint: halt.action === 'stop' ? again : 'run the command again once the machine is started',
  };
}
