import { HangarError } from '../protocol/errors.ts';
import type { MachineRunner } from './machine-runner.ts';
import type { MachineService } from './machine-service.ts';
import { assertLegal } from './transitions.ts';

// Buffered exec (Fly's POST …/exec): run a command in a started machine and return its output.

export type ExecInput = { command?: string[]; cmd?: string; timeoutS?: number; stdin?: string };
export type ExecOutput = { exitCode: number; exitSignal?: number; stdout: string; stderr: string; timedOut: boolean };

const DEFAULT_TIMEOUT_S = 30;

export async function execInMachine(
  machines: MachineService,
  runner: MachineRunner,
  app: string,
  id: string,
  input: ExecInput,
  signal?: AbortSignal,
): Promise<ExecOutput> {
  const m = machines.get(app, id);
  assertLegal('exec', m.state, m.id);
  const command = input.command ?? input.cmd?.trim().split(/\s+/);
  if (!command?.length) {
    throw new HangarError('validation_failed', 'exec needs a command', { hint: 'send {"command": ["ls", "-l", "/"]}' });
  }
  const result = await runner.exec(m, {
    command,
    stdin: input.stdin,
    timeoutMs: (input.timeoutS ?? DEFAULT_TIMEOUT_S) * 1000,
    signal,
  });
  return {
    exitCode: result.exitCode,
    ...(result.exitSignal !== undefined ? { exitSignal: result.exitSignal } : {}),
    stdout: result.stdout.toString('utf8'),
    stderr: result.stderr.toString('utf8'),
    timedOut: result.timedOut,
  };
}
