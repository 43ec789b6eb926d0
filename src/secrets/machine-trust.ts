import { createHash } from 'node:crypto';
import { access, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../protocol/errors.ts';
import { CA_BUNDLE_ENV } from '../protocol/app-secrets.ts';
import { openFile } from '../storage/machine-fs.ts';
import { NO_EXTRAS, type StartExtras } from '../runtime/start-extras.ts';

// What a machine of an app with secrets gets at each start: each secret's placeholder in its env,
// and trust in the egress CA. The trust goes into the image's own CA store without touching the
// image: a bundle of the image's certificates plus the egress CA, made in the machine's bundle
// dir and bound read-only over /etc/ssl/certs/ca-certificates.crt (where Debian, Ubuntu and
// Alpine keep it, and where curl, OpenSSL, GnuTLS, Go and Python look), with the variables that
// Node, Python's requests and others read pointing at it, unless the machine sets them itself.
// Apps without secrets get none of this: their machines run their image exactly as it is.

export const SYSTEM_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';
const BUNDLE_FILE = 'egress-ca-bundle.crt';
const MAX_BUNDLE_BYTES = 4 * 2 ** 20;

export type MachineSecretsOf = (app: string) => { placeholders: Record<string, string>; egressCaPem: string };

/** The extras of one start of a machine of `app`, its trust bundle written into `bundleDir`. */
export async function secretExtras(placeholders: Record<string, string>, egressCaPem: string, rootfs: string, bundleDir: string): Promise<StartExtras> {
  if (Object.keys(placeholders).length === 0) return NO_EXTRAS;
  const source = join(bundleDir, BUNDLE_FILE);
  await writeTrustBundle(rootfs, egressCaPem, source);
  return {
    env: placeholders,
    envDefaults: Object.fromEntries(CA_BUNDLE_ENV.map((name) => [name, SYSTEM_BUNDLE])),
    binds: [{ source, destination: SYSTEM_BUNDLE }],
  };
}

/**
 * Writes the image's CA bundle as the machine sees it (symlinks resolved inside it) followed by
 * the egress CA to `out`, unless what is there was made from the same file and CA (a stamp beside
 * it says which): a start then costs a stat instead of copying some 200 KB.
 */
async function writeTrustBundle(rootfs: string, egressCaPem: string, out: string): Promise<void> {
  let opened;
  try {
    opened = await openFile(rootfs, SYSTEM_BUNDLE);
  } catch (err) {
    if (!(err instanceof HangarError)) throw err;
  }
  try {
    const usable = opened && opened.size <= MAX_BUNDLE_BYTES;
    const stamp = `${usable ? `${opened!.size}:${opened!.mtime.getTime()}:${(await opened!.handle.stat()).ino}` : 'none'}:${createHash('sha256').update(egressCaPem).digest('hex')}`;
    if ((await readFile(`${out}.stamp`, 'utf8').catch(() => '')) === stamp && (await access(out).then(() => true, () => false))) return;
    let text = usable ? await opened!.handle.readFile('utf8') : '';
    if (text !== '' && !text.endsWith('\n')) text += '\n';
    await writeFile(`${out}.tmp`, text + egressCaPem, { mode: 0o644 });
    await rename(`${out}.tmp`, out);
    await writeFile(`${out}.stamp`, stamp);
  } finally {
    await opened?.handle.close();
  }
}
