import { HangarError } from '../protocol/errors.ts';
import type { ExecExit, ExecProcess } from '../runtime/driver.ts';
import type { ProcessStat } from '../runtime/proc-stat.ts';
import type { MachineRunner } from './machine-runner.ts';
import type { Caller, MachineService } from './machine-service.ts';
import { assertLegal } from './transitions.ts';
import { stoppedDuring, wakeForExec, type StoppedNotice } from './exec-wake.ts';

// Commands in a started machine: buffered (Fly's POST …/exec), streaming, and the process list.

/** The argv an exec runs: `command`, or Fly's `cmd` string split on whitespace. */
export function execArgv(input: { command?: string[]; cmd?: string }): string[] | undefined {
  return input.command ?? input.cmd?.trim().split(/\s+/);
}

/** `caller`: whose call it is; a wake of the machine is its start. */
export type ExecInput = { command?: string[]; cmd?: string; timeoutS?: number; stdin?: string; maxOutputBytes?: number; caller: Caller };
export type ExecOutput = {
  exitCode: number; exitSignal?: number; stdout: string; stderr: string; stdoutDroppedBytes: number; stderrDroppedBytes: number; timedOut: boolean;
  /** The machine was stopped and this call started it. */
  started?: boolean;
  /** The machine was stopped under the command, which ended it. */
  stopped?: StoppedNotice;
};

const DEFAULT_TIMEOUT_S = 30;

export async function execInMachine(
  machines: MachineService,
  runner: MachineRunner,
  app: string,
  id: string,
  input: ExecInput,
  signal?: AbortSignal,
): Promise<ExecOutput> {
  const command = execArgv(input);
  if (!command?.length) {
    throw new HangarError('validation_failed', 'exec needs a command', { hint: 'send {"command": ["ls", "-l", "/"]}' });
  }
  const started = await wakeForExec(machines, app, id, input.caller);
  const m = machines.get(app, id);
  assertLegal('exec', m.state, m.id);
  const since = Date.now();
  const result = await runner.exec(m, {
    command,
    stdin: input.stdin,
    ...(input.maxOutputBytes !== undefined ? { maxOutputBytes: input.maxOutputBytes } : {}),
    timeoutMs: (input.timeoutS ?? DEFAULT_TIMEOUT_S) * 1000,
    signal,
  });
  return {
    exitCode: result.exitCode,
    ...(result.exitSignal !== undefined ? { exitSignal: result.exitSignal } : {}),
    stdout: result.stdout,
    stderr: result.stderr,
    stdoutDroppedBytes: result.stdoutDroppedBytes,
    stderrDroppedBytes: result.stderrDroppedBytes,
    timedOut: result.timedOut,
    ...(started ? { started } : {}),
    ...withStopped(machines, m, since, result.exitCode),
  };
}

function withStopped(machines: MachineService, m: ReturnType<MachineService['get']>, since: number, exitCode: number): { stopped?: StoppedNotice } {
  const stopped = stoppedDuring(machines, m, since, exitCode);
  return stopped ? { stopped } : {};
}

/** A streaming exec as the API serves it: whether it woke the machine, and why it ended early if it was stopped. */
export type MachineExec = Omit<ExecProcess, 'exit'> & { started: boolean; exit: Promise<ExecExit & { stopped?: StoppedNotice }> };

export type ExecStreamInput = {
  command: string[];
  timeoutS: number;
  env?: Record<string, string>;
  cwd?: string;
  tty?: { rows: number; cols: number };
  signal: AbortSignal;
  /** Whose call it is: a wake of the machine is its start. */
  caller: Caller;
};

/** Streaming exec: the process is handed back running; aborting `signal` kills it. */
export async function startExec(machines: MachineService, runner: MachineRunner, app: string, id: string, input: ExecStreamInput): Promise<MachineExec> {
  const started = await wakeForExec(machines, app, id, input.caller);
  const m = machines.get(app, id);
  assertLegal('exec', m.state, m.id);
  const since = Date.now();
  const proc = await runner.execStream(m, {
    command: input.command,
    timeoutMs: input.timeoutS * 1000,
    signal: input.signal,
    ...(input.env ? { env: Object.entries(input.env).map(([k, v]) => `${k}=${v}`) } : {}),
    ...(input.cwd ? { cwd: input.cwd } : {}),
    ...(input.tty ? { tty: input.tty } : {}),
  });
  return {
    stdout: proc.stdout,
    stderr: proc.stderr,
    stdin: proc.stdin,
    resize: (rows, cols) => proc.resize(rows, cols),
    started,
    exit: proc.exit.then((exit) => ({ ...exit, ...withStopped(machines, m, since, exit.exitCode) })),
  };
}

export type PsOrder = { sortBy: 'pid' | 'cpu' | 'rss' | 'rtime' | 'stime' | 'command'; order: 'asc' | 'desc' };

/** The machine's processes (Fly's GET …/ps). */
export async function listProcesses(machines: MachineService, runner: MachineRunner, app: string, id: string, order: PsOrder): Promise<ProcessStat[]> {
  const m = machines.get(app, id);
  assertLegal('ps', m.state, m.id);
  const stats = await runner.processes(m);
  const key = order.sortBy;
  const sign = order.order === 'asc' ? 1 : -1;
  return stats.sort((a, b) => sign * (key === 'command' ? a.command.localeCompare(b.command) : a[key] - b[key]));
}
