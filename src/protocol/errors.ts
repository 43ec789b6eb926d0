// One error class, one table of codes. The HTTP status of each code is decided in api/ only;
// here a code says what went wrong and the hint says what a robot should do next.

export const ERROR_CODES = [
  'bad_request',
  'invalid_json',
  'validation_failed',
  'body_too_large',
  'unauthorized',
  'token_denied',
  'route_not_found',
  'app_not_found',
  'app_exists',
  'app_has_machines',
  'machine_not_found',
  'machine_name_taken',
  'invalid_state',
  'machine_leased',
  'lease_not_found',
  'wait_timeout',
  'image_not_found',
  'invalid_image_ref',
  'image_in_use',
  'registry_unreachable',
  'registry_auth_failed',
  'registry_error',
  'registry_redirect_refused',
  'registry_realm_refused',
  'digest_mismatch',
  'unsafe_layer',
  'unsupported_image',
  'path_escapes_root',
  'file_not_found',
  'not_a_directory',
  'is_a_directory',
  'not_a_regular_file',
  'file_exists',
  'directory_not_empty',
  'range_not_satisfiable',
  'invalid_certificate',
  'certificate_key_mismatch',
  'certificate_expired',
  'certificate_not_found',
  'hostname_taken',
  'memory_unavailable',
  'cpus_unavailable',
  'network_exhausted',
  'network_conflict',
  'over_capacity',
  'too_many_connections',
  'rate_limited',
  'quota_exceeded',
  'replay_unavailable',
  'replay_loop',
  'rootfs_cannot_shrink',
  'checkpoint_not_found',
  'session_not_found',
  'session_name_taken',
  'session_ended',
  'checkpoint_name_taken',
  'checkpoints_unsupported',
  'volume_not_found',
  'volume_attached',
  'volume_cannot_shrink',
  'volume_snapshot_not_found',
  'storage_error',
  'runtime_error',
  'host_unsupported',
  'secret_invalid',
  'secret_not_found',
  'proxy_auth_failed',
  'host_not_allowed',
  'destination_refused',
  'upstream_unreachable',
  'internal',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/**
 * What to do next, in no surface's words: `hint` says it for REST, and the CLI and MCP render
 * these as a command line or a tool call of their own. Sent on the wire as `details.next`.
 * Actions are named as the MCP tools that do them; `app` and `id` left out mean the request's
 * own (the API fills them in before answering).
 */
export type NextAction = {
  action: 'app_create' | 'machine_list' | 'machine_get' | 'machine_start' | 'machine_stop' | 'machine_destroy' | 'checkpoint_list';
  app?: string;
  id?: string;
  force?: boolean;
};

export type HangarErrorOptions = {
  hint?: string;
  cause?: unknown;
  /** Extra machine-readable facts (current state, path, digest...), sent on the wire. */
  details?: Record<string, unknown>;
  next?: NextAction[];
};

export class HangarError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: HangarErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'HangarError';
    this.code = code;
    this.hint = options.hint;
    this.details = options.next ? { ...options.details, next: options.next } : options.details;
  }
}

export function isHangarError(err: unknown, code?: ErrorCode): err is HangarError {
  return err instanceof HangarError && (code === undefined || err.code === code);
}

/** The wire shape of every error answer (`error` stays a string for Fly clients). */
export type ErrorBody = {
  error: string;
  code: ErrorCode;
  hint?: string;
  request_id?: string;
  details?: Record<string, unknown>;
};
