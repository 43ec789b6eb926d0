// Builds the OCI runtime config.json of a machine: tini as pid 1, Docker's default hardening,
// a fresh set of namespaces and the machine's cgroup limits.
import { HangarError } from '../protocol/errors.ts';
import type { MachineLimits, MachineSpec } from './driver.ts';
import { DEVICE_RULES, INIT_PATH, MASKED_PATHS, READONLY_PATHS, capabilitiesFor, defaultMounts } from './oci-defaults.ts';
import { SECCOMP_BPF_ANNOTATION } from './seccomp-bpf.ts';

export const DEFAULT_PIDS_LIMIT = 4096;
export const STOP_SIGNAL_ANNOTATION = 'org.opencontainers.image.stopSignal';
const CPU_PERIOD_US = 100_000;

export type OciSpecOptions = {
  /** The machine's seccomp filter, compiled (seccomp-bpf.ts) and base64-encoded. */
  seccompBpf: string;
  /** Host path of a static tini, bind-mounted read-only as the machine's init. */
  initHostPath: string;
  hostMemoryBytes: number;
  /** RLIMIT_NOFILE for the machine; at most the daemon's own hard limit, which crun cannot raise. */
  nofileLimit: number;
};

export function cgroupsPathFor(id: string): string {
  return `/hangar/${id}`;
}

export function buildOciSpec(spec: MachineSpec, opts: OciSpecOptions) {
  const { process: proc } = spec;
  return {
    ociVersion: '1.0.2',
    annotations: {
      [SECCOMP_BPF_ANNOTATION]: opts.seccompBpf,
      ...(spec.stopSignal ? { [STOP_SIGNAL_ANNOTATION]: spec.stopSignal } : {}),
    },
    process: {
      terminal: false,
      user: { uid: proc.uid, gid: proc.gid, additionalGids: proc.additionalGids ?? [] },
      // tini reaps zombies and forwards signals, which a robot's shell or server rarely does as pid 1.
      args: [INIT_PATH, '--', ...proc.args],
      env: proc.env,
      cwd: proc.cwd || '/',
      capabilities: capabilitiesFor(proc.uid),
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: opts.nofileLimit, soft: opts.nofileLimit }],
      noNewPrivileges: true,
    },
    root: { path: spec.rootfs, readonly: false },
    hostname: spec.hostname,
    mounts: [
      ...defaultMounts(opts.initHostPath),
      ...(spec.resolvConfPath ? [{ destination: '/etc/resolv.conf', type: 'bind', source: spec.resolvConfPath, options: ['rbind', 'rw'] }] : []),
      ...(spec.volumes ?? []).map((v) => volumeMount(v, spec.idRange !== undefined)),
    ],
    linux: {
      cgroupsPath: cgroupsPathFor(spec.id),
      resources: { devices: DEVICE_RULES, ...resourcesFor(spec.limits, opts.hostMemoryBytes) },
      namespaces: [
        ...(spec.idRange ? [{ type: 'user' }] : []),
        { type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' },
        spec.netnsPath ? { type: 'network', path: spec.netnsPath } : { type: 'network' },
        { type: 'cgroup' },
      ],
      ...(spec.idRange ? idMappings(spec.idRange) : {}),
      maskedPaths: MASKED_PATHS,
      readonlyPaths: READONLY_PATHS,
    },
  };
}

/**
 * A volume bound into the machine. `idmap` (crun ≥ 1.8) maps the bind through the machine's own
 * user namespace: a file owned by N on the volume is N inside, whatever the machine's host range,
 * so a volume moves between machines as it is.
 */
function volumeMount(v: { source: string; destination: string }, idmapped: boolean) {
  return { destination: v.destination, type: 'bind', source: v.source, options: ['bind', 'rw', 'nodev', 'nosuid', ...(idmapped ? ['idmap'] : [])] };
}

/** Root inside is range.base on the host; nothing inside maps to a host id outside the range. */
function idMappings(range: { base: number; size: number }) {
  const map = [{ containerID: 0, hostID: range.base, size: range.size }];
  return { uidMappings: map, gidMappings: map };
}

export function resourcesFor(limits: MachineLimits, hostMemoryBytes: number) {
  const resources: {
    pids: { limit: number };
    cpu?: { quota: number; period: number };
    memory?: { limit: number; swap: number };
  } = { pids: { limit: limits.pidsLimit ?? DEFAULT_PIDS_LIMIT } };
  if (limits.cpus !== undefined) {
    resources.cpu = { quota: Math.max(1000, Math.round(limits.cpus * CPU_PERIOD_US)), period: CPU_PERIOD_US };
  }
  if (limits.memoryMb !== undefined) {
    const bytes = limits.memoryMb * 1024 * 1024;
    if (bytes > hostMemoryBytes) {
      const maxMb = Math.floor(hostMemoryBytes / 1024 / 1024);
      throw new HangarError('memory_unavailable', `memory_mb ${limits.memoryMb} is more than this host has (${maxMb} MB)`, {
        hint: `set guest.memory_mb to at most ${maxMb}`,
        details: { memoryMb: limits.memoryMb, maxMemoryMb: maxMb },
      });
    }
    // swap equal to the limit means no swap at all: an over-limit machine is OOM-killed, not slowed.
    resources.memory = { limit: bytes, swap: bytes };
  }
  return resources;
}
