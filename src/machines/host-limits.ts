import { cpus, totalmem } from 'node:os';
import { HangarError } from '../protocol/errors.ts';
import type { MachineConfig } from '../protocol/machine-config.ts';

/** Refuses guest sizes this host cannot give, before any work is done. */
export function assertFitsHost(config: MachineConfig): void {
  const hostMemoryMb = Math.floor(totalmem() / 2 ** 20);
  const memoryMb = config.guest?.memory_mb;
  if (memoryMb !== undefined && memoryMb > hostMemoryMb) {
    throw new HangarError('memory_unavailable', `guest.memory_mb ${memoryMb} is more than this host has (${hostMemoryMb} MB)`, {
      hint: `ask for at most ${hostMemoryMb} MB`,
      details: { requested_mb: memoryMb, host_mb: hostMemoryMb },
    });
  }
  const hostCpus = cpus().length;
  const wanted = config.guest?.cpus;
  if (wanted !== undefined && wanted > hostCpus) {
    throw new HangarError('cpus_unavailable', `guest.cpus ${wanted} is more than this host has (${hostCpus})`, {
      hint: `ask for at most ${hostCpus} cpus`,
      details: { requested: wanted, host: hostCpus },
    });
  }
}
