// Who made a machine event happen. Fly has user and flyd; Hangar adds the two that act on their
// own, so an event says which of them stopped or destroyed a machine.
export const EVENT_SOURCES = ['user', 'flyd', 'autostop', 'lifetime'] as const;

export type EventSource = (typeof EVENT_SOURCES)[number];
