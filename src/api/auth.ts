import { timingSafeEqual, createHash } from 'node:crypto';
import { HangarError } from '../protocol/errors.ts';

/** Checks `Authorization: Bearer <token>` against the admin token in constant time. */
export function checkBearer(header: string | undefined, token: string): void {
  const given = /^Bearer\s+(.+)$/i.exec(header ?? '')?.[1]?.trim() ?? '';
  const digest = (s: string) => createHash('sha256').update(s).digest();
  if (!given || !timingSafeEqual(digest(given), digest(token))) {
    throw new HangarError('unauthorized', given ? 'the bearer token is not valid' : 'missing bearer token', {
      hint: 'send Authorization: Bearer <token>; the token is in HANGAR_TOKEN or the data dir file `token`',
    });
  }
}
