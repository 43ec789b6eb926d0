import { ERROR_CODES, type ErrorBody, type ErrorCode, type NextAction } from '../protocol/errors.ts';

/** An error answer from the API, rebuilt from the wire `code` so callers can branch on it. */
export class HangarApiError extends Error {
  readonly code: ErrorCode | 'network_error';
  readonly hint: string | undefined;
  readonly status: number;
  readonly requestId: string | undefined;
  readonly details: Record<string, unknown> | undefined;
  /** What to do next, as actions to take rather than words (`details.next`); empty when the hint says it all. */
  readonly next: NextAction[];

  constructor(status: number, body: Partial<ErrorBody> & { code?: string }, fallback: string) {
    super(body.error ?? fallback);
    this.name = 'HangarApiError';
    this.status = status;
    this.code = (ERROR_CODES as readonly string[]).includes(body.code ?? '') ? (body.code as ErrorCode) : status === 0 ? 'network_error' : 'internal';
    this.hint = body.hint;
    this.requestId = body.request_id;
    this.details = body.details;
    this.next = Array.isArray(body.details?.next) ? (body.details.next as NextAction[]) : [];
  }
}
