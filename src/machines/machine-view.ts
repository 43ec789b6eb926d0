import type { Machine, MachineEvent } from '../protocol/schemas.ts';
import type { DiskUsage } from '../storage/machine-disk.ts';
import type { EventRecord, MachineRecord } from './store.ts';

/** A machine record in Fly's wire shape. */
export function toWireMachine(m: MachineRecord & { nonce?: string }, events: EventRecord[], disk?: DiskUsage): Machine {
  return {
    id: m.id,
    name: m.name,
    state: m.state,
    region: 'local',
    instance_id: m.instanceId,
    private_ip: m.privateIp,
    config: m.config,
    image_ref: m.imageRef,
    events: events.map(toWireEvent),
    created_at: m.createdAt,
    updated_at: m.updatedAt,
    host_status: 'ok',
    ...(m.diskGb > 0 ? { rootfs: { size_gb: m.diskGb, ...(disk ? { size_bytes: disk.sizeBytes, used_bytes: disk.usedBytes } : {}) } } : {}),
    ...(m.nonce ? { nonce: m.nonce } : {}),
  };
}

export function toWireEvent(e: EventRecord): MachineEvent {
  return { id: e.id, type: e.type, status: e.status, source: e.source, timestamp: e.timestamp, ...(e.request ? { request: e.request } : {}) };
}
