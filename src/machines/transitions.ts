import { HangarError, type NextAction } from '../protocol/errors.ts';
import { PERSISTENT_STATES, type MachineState, type PersistentState, type TransientState } from '../protocol/states.ts';

// The one table of which action is legal in which state (DESIGN.md, "Lifecycle").

/** `next`: the action that makes it legal, for the CLI and MCP to offer (see NextAction). */
type Transition = { from: readonly PersistentState[]; via?: TransientState; hint: string; next?: NextAction['action'] };

export const TRANSITIONS = {
  start: { from: ['created', 'stopped', 'suspended', 'failed'], via: 'starting', hint: 'it is already running; stop or restart it instead' },
  stop: { from: ['started', 'suspended'], via: 'stopping', hint: 'it is not running; start it first' },
  restart: { from: ['started', 'stopped'], via: 'restarting', hint: 'start it instead' },
  update: { from: PERSISTENT_STATES, via: 'updating', hint: 'wait for the current action to finish (GET …/wait)' },
  destroy: { from: PERSISTENT_STATES, via: 'destroying', hint: 'wait for the current action to finish (GET …/wait)' },
  exec: { from: ['started'], hint: 'start the machine first (POST …/start)', next: 'machine_start' },
  signal: { from: ['started'], hint: 'start the machine first (POST …/start)', next: 'machine_start' },
  ps: { from: ['started'], hint: 'start the machine first (POST …/start)', next: 'machine_start' },
  /** Capture of the disk, running or not; the machine stays in its state. */
  checkpoint: { from: ['created', 'started', 'stopped', 'failed'], hint: 'wait for the current action to finish (GET …/wait)' },
  /** An image of the disk (a frozen capture of it), running or not; the machine stays in its state. */
  commit: { from: ['created', 'started', 'stopped', 'failed'], hint: 'wait for the current action to finish (GET …/wait)' },
  /** A started machine restarts on the restored disk; the others stay as they are. */
  restore: { from: ['created', 'started', 'stopped', 'failed'], via: 'updating', hint: 'wait for the current action to finish (GET …/wait)' },
  /** The files API: the root filesystem is there in every persistent state, running or not. */
  files: { from: PERSISTENT_STATES, hint: 'wait for the current action to finish (GET …/wait)' },
} as const satisfies Record<string, Transition>;

export type Action = keyof typeof TRANSITIONS;

/** Throws invalid_state (409) naming the current state when `action` is illegal in `state`. */
export function assertLegal(action: Action, state: MachineState, machineId: string): void {
  const t: Transition = TRANSITIONS[action];
  if ((t.from as readonly string[]).includes(state)) return;
  const busy = !(PERSISTENT_STATES as readonly string[]).includes(state) && state !== 'destroyed';
  throw new HangarError('invalid_state', `cannot ${action} machine ${machineId}: it is ${state}`, {
    hint: busy ? `another action is in progress; wait for it: GET …/wait?state=started or stopped` : t.hint,
    details: { state, action, legal_from: t.from },
    ...(t.next && !busy ? { next: [{ action: t.next, id: machineId }] } : {}),
  });
}

export function transientStateOf(action: Action): TransientState | undefined {
  const t: Transition = TRANSITIONS[action];
  return t.via;
}
