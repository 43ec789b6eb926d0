import { randomUUID } from 'node:crypto';
import type { ExitInfo } from '../runtime/driver.ts';
import type { EventSource } from '../protocol/event-sources.ts';
import type { EventRecord } from './store.ts';

// Machine events in Fly's shape (type, status, source, timestamp, request).

export function event(type: string, status: string, source: EventSource, request?: Record<string, unknown>): EventRecord {
  return { id: randomUUID(), type, status, source, timestamp: Date.now(), ...(request ? { request } : {}) };
}

export function exitEvent(exit: ExitInfo, opts: { requestedStop: boolean; restarting: boolean }): EventRecord {
  return event('exit', 'stopped', 'flyd', {
    exit_event: {
      exit_code: exit.exitCode,
      guest_exit_code: exit.exitCode,
      ...(exit.signal ? { signal: exit.signal } : {}),
      oom_killed: exit.oomKilled,
      requested_stop: opts.requestedStop,
      restarting: opts.restarting,
      exited_at: exit.exitedAt.toISOString(),
    },
  });
}
