import type { ImageService } from '../images/image-service.ts';
import type { Driver } from '../runtime/driver.ts';
import type { MachinePaths } from './machine-paths.ts';
import type { MachineRunner } from './machine-runner.ts';
import type { MachineService } from './machine-service.ts';
import { event, exitEvent } from './machine-events.ts';
import type { MachineRecord, Store } from './store.ts';
import { isTransient } from '../protocol/states.ts';
import { releaseVolumes } from './volume-claims.ts';

// After a restart (or kill -9) of the daemon: finish or undo what was under way, and bring every
// record in line with what the runtime actually runs. Machines still running stay `started`.

export type ReconcileReport = {
  adopted: string[]; exited: string[]; finished: string[]; cleaned: string[]; storage: string[];
  /** Sessions still running, and those found ended (filled in by the session service). */
  sessions?: { running: string[]; ended: string[] };
};

export async function reconcile(deps: {
  store: Store;
  machines: MachineService;
  runner: MachineRunner;
  driver: Driver;
  images: ImageService;
  paths: MachinePaths;
}): Promise<ReconcileReport> {
  const { store, machines, runner, driver, images, paths } = deps;
  const report: ReconcileReport = { adopted: [], exited: [], finished: [], cleaned: [], storage: [] };
  const save = (m: MachineRecord, state: MachineRecord['state'], ev?: Parameters<Store['addEvent']>[1], atMs?: number) => {
    m.state = state;
    m.updatedAt = new Date().toISOString();
    store.transaction(() => {
      store.updateMachine(m, atMs);
      // A destroyed machine's volumes stay, free for another machine.
      if (state === 'destroyed') releaseVolumes(store, m.id);
      if (ev) store.addEvent(m.id, ev);
    });
  };

  for (const intent of store.openIntents()) {
    const m = store.getMachine(intent.machineId);
    if (!m) {
      store.closeIntent(intent.seq, 'reconciled: machine gone');
      continue;
    }
    if (intent.action === 'create' && m.state === 'creating') {
      const image = await images.get(m.config.image);
      try {
        if (!image) throw new Error(`image ${m.config.image} is no longer in the store`);
        await runner.layOut(m, image.config);
        save(m, 'created', event('launch', 'created', 'flyd', { recovered: true }));
        report.finished.push(m.id);
      } catch (err) {
        await runner.remove(m).catch(() => undefined);
        save(m, 'destroyed', event('launch', 'failed', 'flyd', { error: (err as Error).message }));
        report.cleaned.push(m.id);
      }
    } else if (intent.action === 'fork' && m.state === 'creating') {
      // Its disk may be missing or half-copied: undo it rather than give it an empty one.
      await runner.remove(m).catch(() => undefined);
      save(m, 'destroyed', event('launch', 'failed', 'flyd', { error: 'the daemon stopped in the middle of the fork; fork again' }));
      report.cleaned.push(m.id);
    } else if (intent.action === 'destroy' && m.state === 'destroying') {
      const where = { bundleDir: paths.bundle(m.id) };
      if ((await driver.state(m.id, where)).status === 'running') await driver.kill(m.id, 'SIGKILL').catch(() => undefined);
      await runner.remove(m);
      save(m, 'destroyed', event('destroy', 'destroyed', 'flyd', { recovered: true }));
      report.finished.push(m.id);
    }
    store.closeIntent(intent.seq, `reconciled: ${store.getMachine(m.id)?.state}`);
  }

  report.storage = await runner.recoverStorage(
    store.listMachines().map((m) => ({ m, checkpoints: store.listCheckpoints(m.id).map((c) => c.id) })),
  );

  for (const m of store.listMachines()) {
    if (m.state !== 'started' && !isTransient(m.state)) continue;
    const state = await driver.state(m.id, { bundleDir: paths.bundle(m.id) });
    if (state.status === 'running') {
      if (m.state !== 'started') save(m, 'started', event('start', 'started', 'flyd', { recovered: true }));
      machines.adopt(m);
      report.adopted.push(m.id);
    } else if (state.status === 'exited' && m.state === 'started') {
      // It ended while no daemon watched: record the exit and apply the restart policy now.
      await machines.handleExit(m, state.exit);
      report.exited.push(m.id);
    } else {
      await runner.cleanupExited(m.id).catch(() => undefined);
      const exit = state.status === 'exited' ? state.exit : { exitCode: -1, oomKilled: false, exitedAt: new Date() };
      save(m, 'stopped', exitEvent(exit, { requestedStop: m.state === 'stopping', restarting: false }), exit.exitedAt.getTime());
      report.exited.push(m.id);
    }
  }
  return report;
}
