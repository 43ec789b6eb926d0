import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { once } from 'node:events';
import { stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import tar from 'tar-stream';
import { HangarError } from '../protocol/errors.ts';
import type { ImageRunConfig } from './image-service.ts';

// `hangar/busybox`: the smallest useful Linux userland, from the host's static busybox (Debian's
// busybox-static). Every entry carries the binary's mtime, so rebuilding on the same host yields
// the same layer digest and the store keeps one copy.

const BUSYBOX = '/bin/busybox';
const run = promisify(execFile);

export const BUSYBOX_CONFIG: ImageRunConfig = {
  Cmd: ['/bin/sh'],
  Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
};

const PASSWD = 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n';
const GROUP = 'root:x:0:\nnogroup:x:65534:\n';

export async function busyboxTar(): Promise<{ tar: AsyncIterable<Buffer>; mtime: Date }> {
  const st = await stat(BUSYBOX).catch(() => undefined);
  if (!st) {
    throw new HangarError('host_unsupported', `${BUSYBOX} is missing, so hangar/busybox cannot be built`, {
      hint: 'install the Debian package busybox-static (scripts/setup.sh does)',
    });
  }
  const { stdout } = await run(BUSYBOX, ['--list-full']);
  const applets = stdout.split('\n').map((l) => l.trim()).filter((l) => l && l !== 'bin/busybox');
  const mtime = st.mtime;
  const pack = tar.pack();
  const dir = (name: string, mode = 0o755) => pack.entry({ name, type: 'directory', mode, mtime, uid: 0, gid: 0 });
  const file = (name: string, content: string, mode = 0o644) =>
    pack.entry({ name, type: 'file', mode, mtime, uid: 0, gid: 0 }, content);

  const dirs = new Set(['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'etc', 'proc', 'sys', 'dev', 'var']);
  for (const a of applets) {
    const parts = a.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  for (const d of [...dirs].sort()) dir(`${d}/`);
  dir('tmp/', 0o1777);
  dir('root/', 0o700);
  file('etc/passwd', PASSWD);
  file('etc/group', GROUP);

  void (async () => {
    try {
      let sink: ReturnType<typeof pack.entry> | undefined;
      const written = new Promise<void>((resolve, reject) => {
        sink = pack.entry({ name: 'bin/busybox', type: 'file', mode: 0o755, size: st.size, mtime, uid: 0, gid: 0 }, (err) =>
          err ? reject(err) : resolve(),
        );
      });
      for await (const chunk of createReadStream(BUSYBOX)) if (!sink?.write(chunk)) await once(sink as NodeJS.EventEmitter, 'drain');
      sink?.end(Buffer.alloc(0));
      await written;
      for (const a of applets) {
        pack.entry({ name: a, type: 'symlink', linkname: '/bin/busybox', mode: 0o777, mtime, uid: 0, gid: 0 });
      }
      pack.finalize();
    } catch (err) {
      pack.destroy(err as Error);
    }
  })();
  return { tar: pack as unknown as AsyncIterable<Buffer>, mtime };
}
