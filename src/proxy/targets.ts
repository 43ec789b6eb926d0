import { connect } from 'node:net';
import { HangarError } from '../protocol/errors.ts';
import type { MachineService } from '../machines/machine-service.ts';
import type { MachineRecord } from '../machines/store.ts';

// Which machine of an app takes a request: the started one with the fewest requests in flight;
// when none is started, one is woken (autostart, on by default as on Fly) and the request waits
// until its service port accepts connections.

export type Target = { machine: MachineRecord; port: number };

type Service = { internal_port?: number; autostart?: boolean };

const WAKE_DEADLINE_MS = 10_000;
const WAKEABLE = new Set(['stopped', 'created', 'suspended']);

function serviceOf(m: MachineRecord): Service | undefined {
  const services = (m.config as { services?: Service[] }).services;
  return services?.find((s) => typeof s.internal_port === 'number');
}

export class Targets {
  readonly #machines: MachineService;
  readonly #inFlight = new Map<string, number>();
  readonly #waking = new Map<string, Promise<void>>();

  constructor(machines: MachineService) {
    this.#machines = machines;
  }

  /**
   * The machine for a request to `app`. `force` names the one machine to use (woken if need be,
   * never another); `prefer` names one to use if it is started; `exclude` skips one (a replay
   * asked for "elsewhere").
   */
  async pick(app: string, opts: { force?: string; prefer?: string; exclude?: string } = {}): Promise<Target> {
    const served = this.#machines.list(app).filter((m) => serviceOf(m) && m.privateIp && m.id !== opts.exclude);
    if (opts.force) {
      const forced = served.find((m) => m.id === opts.force);
      if (!forced) {
        throw new HangarError('machine_not_found', `app ${app} has no machine ${opts.force} with a service`, {
          hint: 'fly-force-instance-id must name a machine of this app that has config.services; list them with GET /v1/apps/{app}/machines',
        });
      }
      if (forced.state !== 'started') await this.#wakeOrFail(forced, app);
      return this.#target(app, forced.id);
    }
    if (served.length === 0) {
      throw new HangarError('route_not_found', `app ${app} has no machine with a service`, {
        hint: 'give a machine config.services: [{"internal_port": 8080, "ports": [{"port": 80, "handlers": ["http"]}]}]',
      });
    }
    const started = served.filter((m) => m.state === 'started');
    const preferred = started.find((m) => m.id === opts.prefer);
    if (preferred) return this.#target(app, preferred.id);
    if (started.length > 0) {
      const m = started.reduce((a, b) => ((this.#inFlight.get(b.id) ?? 0) < (this.#inFlight.get(a.id) ?? 0) ? b : a));
      return this.#target(app, m.id);
    }
    const sleeper = served.find((m) => WAKEABLE.has(m.state) && serviceOf(m)!.autostart !== false);
    if (!sleeper) {
      throw new HangarError('invalid_state', `app ${app} has no started machine and none to wake`, {
        hint: 'start a machine (POST …/start), or set services[].autostart to true',
      });
    }
    await this.#wake(sleeper);
    return this.#target(app, sleeper.id);
  }

  #target(app: string, id: string): Target {
    const machine = this.#machines.get(app, id);
    return { machine, port: serviceOf(machine)!.internal_port! };
  }

  async #wakeOrFail(m: MachineRecord, app: string): Promise<void> {
    if (!WAKEABLE.has(m.state)) {
      throw new HangarError('invalid_state', `machine ${m.id} of app ${app} is ${m.state}`, { hint: 'wait for it to settle, or start it (POST …/start)' });
    }
    await this.#wake(m);
  }

  /** Counts a request against a machine for load balancing; call the returned function when it ends. */
  track(machineId: string): () => void {
    this.#inFlight.set(machineId, (this.#inFlight.get(machineId) ?? 0) + 1);
    return () => this.#inFlight.set(machineId, (this.#inFlight.get(machineId) ?? 1) - 1);
  }

  /** Starts the machine once however many requests ask, and waits for its port. */
  #wake(m: MachineRecord): Promise<void> {
    const running = this.#waking.get(m.id);
    if (running) return running;
    const work = (async () => {
      const deadline = Date.now() + WAKE_DEADLINE_MS;
      try {
        await this.#machines.start(m.app, m.id);
      } catch (err) {
        // Someone else started it in the meantime; anything else means no wake.
        if (this.#machines.get(m.app, m.id).state !== 'started') throw err;
      }
      const port = serviceOf(m)!.internal_port!;
      while (!(await accepts(m.privateIp, port))) {
        if (Date.now() > deadline) {
          throw new HangarError('wait_timeout', `machine ${m.id} started but nothing accepted connections on port ${port} within ${WAKE_DEADLINE_MS / 1000}s`, {
            hint: `make the machine's server listen on 0.0.0.0:${port}, or fix services[].internal_port`,
          });
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    })().finally(() => this.#waking.delete(m.id));
    this.#waking.set(m.id, work);
    return work;
  }
}

function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
