import { writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../protocol/errors.ts';
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
const CA_ENV = ['SSL_CERT_FILE', 'NODE_EXTRA_CA_CERTS', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE', 'GIT_SSL_CAINFO'];

export type MachineSecretsOf = (app: string) => { placeholders: Record<string, string>; egressCaPem: string };

/** The extras of one start of a machine of `app`, its trust bundle written into `bundleDir`. */
export async function secretExtras(placeholders: Record<string, string>, egressCaPem: string, rootfs: string, bundleDir: string): Promise<StartExtras> {
  if (Object.keys(placeholders).length === 0) return NO_EXTRAS;
  const source = join(bundleDir, BUNDLE_FILE);
  const tmp = `${source}.tmp`;
  await writeFile(tmp, (await imageBundle(rootfs)) + egressCaPem, { mode: 0o644 });
  await rename(tmp, source);
  return {
    env: placeholders,
    envDefaults: Object.fromEntries(CA_ENV.map((name) => [name, SYSTEM_BUNDLE])),
    binds: [{ source, destination: SYSTEM_BUNDLE }],
  };
}

/** The image's CA bundle as the machine sees it (symlinks resolved inside it), ending in a newline; '' when it has none. */
async function imageBundle(rootfs: string): Promise<string> {
  let opened;
  try {
    opened = await openFile(rootfs, SYSTEM_BUNDLE);
  } catch (err) {
    if (err instanceof HangarError) return '';
    throw err;
  }
  try {
    if (opened.size > MAX_BUNDLE_BYTES) return '';
    const text = await opened.handle.readFile('utf8');
    return text === '' || text.endsWith('\n') ? text : text + '\n';
  } finally {
    await opened.handle.close();
  }
}
