import { z } from 'zod';
import { HangarError, type ErrorBody, type NextAction } from '../protocol/errors.ts';
import { STATUS_OF } from './error-status.ts';

// Turns anything thrown while serving a request into the wire error shape. Never a stack trace.

type FastifyLikeError = { code?: string; statusCode?: number; message?: string };

export function toHangarError(err: unknown): HangarError {
  if (err instanceof HangarError) return err;
  if (err instanceof z.ZodError) return fromZod(err);
  const e = err as FastifyLikeError;
  switch (e?.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new HangarError('body_too_large', 'request body is larger than 1 MiB', {
        hint: 'send a smaller body; put large files into the machine with exec or the files API',
      });
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new HangarError('invalid_json', `request body is not valid JSON: ${e.message}`, {
        hint: 'send a JSON object with Content-Type: application/json',
      });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new HangarError('bad_request', e.message ?? 'unsupported request body', {
        hint: 'send JSON with Content-Type: application/json',
      });
  }
  if (err instanceof SyntaxError) {
    return new HangarError('invalid_json', `request body is not valid JSON: ${err.message}`, {
      hint: 'send a JSON object with Content-Type: application/json',
    });
  }
  return new HangarError('internal', 'internal error', { hint: 'retry; if it persists, check the daemon log', cause: err });
}

function fromZod(err: z.ZodError): HangarError {
  const problems = err.issues.map((i) => `${i.path.length ? i.path.join('.') : '(body)'}: ${i.message}`);
  return new HangarError('validation_failed', `invalid request: ${problems.join('; ')}`, {
    hint: 'fix the fields named; the schemas are in GET /openapi.json',
    details: { issues: err.issues.map((i) => ({ path: i.path.join('.'), message: i.message })) },
  });
}

/** `params`: the request's route parameters, which complete next actions that left out app or id. */
export function errorBody(err: HangarError, requestId: string, params: RouteParams = {}): { status: number; body: ErrorBody } {
  const details = err.details?.next ? { ...err.details, next: completeNext(err.details.next as NextAction[], params) } : err.details;
  return {
    status: STATUS_OF[err.code],
    body: {
      error: err.message,
      code: err.code,
      ...(err.hint ? { hint: err.hint } : {}),
      request_id: requestId,
      ...(details ? { details } : {}),
    },
  };
}

type RouteParams = { app_name?: string; machine_id?: string };

function completeNext(next: NextAction[], params: RouteParams): NextAction[] {
  return next.map((n) => ({
    ...n,
    ...(n.app === undefined && params.app_name !== undefined ? { app: params.app_name } : {}),
    ...(n.id === undefined && params.machine_id !== undefined && n.action !== 'machine_list' && n.action !== 'app_create' ? { id: params.machine_id } : {}),
  }));
}
