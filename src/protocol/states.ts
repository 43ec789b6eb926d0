// Machine states as Fly names them. Which action is legal in which state lives in
// machines/transitions.ts, the only table of it.

export const PERSISTENT_STATES = ['created', 'started', 'stopped', 'suspended', 'failed'] as const;
export const TRANSIENT_STATES = [
  'creating',
  'starting',
  'stopping',
  'restarting',
  'suspending',
  'updating',
  'destroying',
] as const;
export const MACHINE_STATES = [...PERSISTENT_STATES, ...TRANSIENT_STATES, 'destroyed'] as const;

export type PersistentState = (typeof PERSISTENT_STATES)[number];
export type TransientState = (typeof TRANSIENT_STATES)[number];
export type MachineState = (typeof MACHINE_STATES)[number];

/** States a caller can wait for (`GET …/wait?state=`), as in Fly's API. */
export const WAITABLE_STATES = ['started', 'stopped', 'suspended', 'destroyed'] as const;
export type WaitableState = (typeof WAITABLE_STATES)[number];

export function isTransient(state: MachineState): state is TransientState {
  return (TRANSIENT_STATES as readonly string[]).includes(state);
}
