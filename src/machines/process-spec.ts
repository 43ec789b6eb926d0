import { HangarError } from '../protocol/errors.ts';
import type { MachineConfig } from '../protocol/machine-config.ts';
import type { ImageRunConfig } from '../images/image-service.ts';

// What a machine runs: the image's entrypoint, cmd, env and workdir merged with the machine's
// config the way Fly (and Docker) merge them.

const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export function commandFor(config: MachineConfig, image: ImageRunConfig): string[] {
  const init = config.init ?? {};
  if (init.exec?.length) return init.exec;
  // As in Docker: overriding the entrypoint drops the image's cmd.
  const entrypoint = init.entrypoint ?? image.Entrypoint ?? [];
  const cmd = init.cmd ?? (init.entrypoint ? [] : (image.Cmd ?? []));
  const args = [...entrypoint, ...cmd];
  if (args.length === 0) {
    throw new HangarError('validation_failed', 'the image defines no command and config.init sets none', {
      hint: 'set config.init.cmd (e.g. ["sleep", "inf"]) or config.init.exec',
    });
  }
  return args;
}

export type MachineIdentity = { id: string; app: string; instanceId: string; imageName: string; privateIp: string };

export function envFor(config: MachineConfig, image: ImageRunConfig, who: MachineIdentity): string[] {
  const env = new Map<string, string>();
  for (const entry of image.Env ?? []) {
    const eq = entry.indexOf('=');
    if (eq > 0) env.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  if (!env.has('PATH')) env.set('PATH', DEFAULT_PATH.slice(5));
  for (const [k, v] of Object.entries(config.env ?? {})) env.set(k, v);
  env.set('FLY_APP_NAME', who.app);
  env.set('FLY_MACHINE_ID', who.id);
  env.set('FLY_MACHINE_VERSION', who.instanceId);
  env.set('FLY_IMAGE_REF', who.imageName);
  env.set('FLY_PRIVATE_IP', who.privateIp);
  env.set('FLY_REGION', 'local');
  return [...env].map(([k, v]) => `${k}=${v}`);
}

/**
 * The run config of an image made from the machine (a commit): what it runs, its env, as the
 * machine's config made them from `image`, so a machine created from the new image with no
 * init or env of its own runs the same command with the same env. Hangar's per-machine FLY_*
 * variables are left out; a new machine gets its own.
 */
export function committedRunConfig(config: MachineConfig, image: ImageRunConfig): ImageRunConfig {
  const init = config.init ?? {};
  const run: ImageRunConfig = { ...image };
  if (init.exec?.length) {
    run.Entrypoint = init.exec;
    run.Cmd = null;
  } else if (init.entrypoint) {
    run.Entrypoint = init.entrypoint;
    run.Cmd = init.cmd ?? null;
  } else if (init.cmd) {
    run.Cmd = init.cmd;
  }
  const env = new Map<string, string>();
  for (const entry of image.Env ?? []) {
    const eq = entry.indexOf('=');
    if (eq > 0) env.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  for (const [k, v] of Object.entries(config.env ?? {})) env.set(k, v);
  if (env.size > 0) run.Env = [...env].map(([k, v]) => `${k}=${v}`);
  return run;
}
