// Turns an image's `User` ("", "name", "uid", "uid:gid", "name:group") into ids, reading the
// rootfs's /etc/passwd and /etc/group the way runc does (libcontainer/user.GetExecUser).
import { HangarError } from '../protocol/errors.ts';
import { readRootfsFile } from './rootfs-file.ts';

export type ResolvedUser = { uid: number; gid: number; additionalGids: number[] };

type PasswdEntry = { name: string; uid: number; gid: number };
type GroupEntry = { name: string; gid: number; members: string[] };

const MAX_ID = 2 ** 32 - 2;

function parseId(text: string): number | undefined {
  if (!/^\d+$/.test(text)) return undefined;
  const n = Number(text);
  return n <= MAX_ID ? n : undefined;
}

function parsePasswd(text: string): PasswdEntry[] {
  return text.split('\n').flatMap((line) => {
    const [name, , uid, gid] = line.split(':');
    const u = parseId(uid ?? '');
    const g = parseId(gid ?? '');
    return name && u !== undefined && g !== undefined ? [{ name, uid: u, gid: g }] : [];
  });
}

function parseGroup(text: string): GroupEntry[] {
  return text.split('\n').flatMap((line) => {
    const [name, , gid, members] = line.split(':');
    const g = parseId(gid ?? '');
    return name && g !== undefined ? [{ name, gid: g, members: (members ?? '').split(',').filter(Boolean) }] : [];
  });
}

function notFound(kind: 'user' | 'group', name: string, file: string): HangarError {
  return new HangarError('validation_failed', `${kind} ${name} is not in the image's ${file}`, {
    hint: `add the ${kind} to ${file} in the image, or give the user as numeric uid:gid`,
    details: { [kind]: name },
  });
}

export async function resolveUser(rootfs: string, user: string): Promise<ResolvedUser> {
  const colon = user.indexOf(':');
  const userPart = colon < 0 ? user : user.slice(0, colon);
  const groupPart = colon < 0 ? '' : user.slice(colon + 1);
  const passwd = parsePasswd((await readRootfsFile(rootfs, '/etc/passwd')) ?? '');

  const uidArg = userPart === '' ? 0 : parseId(userPart);
  const entry = uidArg !== undefined ? passwd.find((p) => p.uid === uidArg) : passwd.find((p) => p.name === userPart);
  if (uidArg === undefined && !entry) throw notFound('user', userPart, '/etc/passwd');
  const uid = uidArg ?? entry!.uid;
  let gid = entry?.gid ?? 0;

  if (groupPart === '' && !entry) return { uid, gid, additionalGids: [] };
  const groups = parseGroup((await readRootfsFile(rootfs, '/etc/group')) ?? '');
  if (groupPart !== '') {
    const gidArg = parseId(groupPart);
    const group = gidArg === undefined ? groups.find((g) => g.name === groupPart) : undefined;
    if (gidArg === undefined && !group) throw notFound('group', groupPart, '/etc/group');
    gid = gidArg ?? group!.gid;
    // An explicit group replaces the user's supplementary groups, as in runc.
    return { uid, gid, additionalGids: [] };
  }
  const supplementary = groups.filter((g) => g.members.includes(entry!.name) && g.gid !== gid).map((g) => g.gid);
  return { uid, gid, additionalGids: [...new Set(supplementary)] };
}
