// The SDK's public entry (`hangar/sdk`). It imports nothing Node-only: fetch, streams and
// TextDecoder only, so it runs in browsers and edge runtimes too. Adding an export is an API decision.
export { Hangar } from './hangar.ts';
export { Machine, MachineFiles, type ExecOptions, type FileEntry } from './machine.ts';
export { ExecHandle, type ExecChunk, type ExecResult } from './exec-handle.ts';
export { ExecSession, type ExecSessionStart } from './exec-session.ts';
export { MachineSessions, SessionAttachment, SessionsClient, type OutputOptions, type ReadOptions, type SessionRead, type SessionStartOptions } from './sessions.ts';
export { FileWatch, type FileWatchEvent } from './file-watch.ts';
export { HangarClient, type CallOptions, type ClientOptions, type DiffOptions, type ImageInfo, type ImageSummary, type UsageWindow } from './client.ts';
export type { AppUsage, MachineUsage } from '../protocol/usage.ts';
export { HangarApiError } from './errors.ts';
export { attenuate, decodeToken as inspectToken, TOKEN_ACTIONS, type Caveat, type CommandRule, type TokenAction, type TokenBody, type TokenLimits } from '../protocol/token-format.ts';
export type { MintedToken } from './client.ts';
export type { ErrorCode, NextAction } from '../protocol/errors.ts';
export type { AppSettingsRequest, Egress } from '../protocol/app-settings.ts';
export type { Checkpoint, CreateCheckpointRequest, Diff, ForkRequest } from '../protocol/checkpoints.ts';
export type { CommitProgress, CommitRequest, CommitResult } from '../protocol/commit.ts';
export type { CreateVolumeRequest, ExtendVolumeResponse, UpdateVolumeRequest, Volume, VolumeSnapshot } from '../protocol/volumes.ts';
export type { Session, SessionOutputEvent, StartSessionRequest } from '../protocol/sessions.ts';
export type { PullProgress } from '../protocol/pull-progress.ts';
export type { MachineMetrics } from '../protocol/machine-metrics.ts';
export type { EgressEvent } from '../protocol/egress-log.ts';
export type { FileWatchMessage } from '../protocol/file-watch.ts';
export type { PublicKeyResponse, SealRequest, SealResponse } from '../protocol/sealed-secret.ts';
export type { AppSecret, AppSecretInput } from '../protocol/app-secrets.ts';
