import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { once } from 'node:events';
import tar from 'tar-stream';
import { HangarError } from '../protocol/errors.ts';

// Node can write files, links and ownership, but cannot make device nodes or set extended
// attributes. Those few entries (overlay whiteouts, opaque-dir markers, PAX xattrs, device nodes)
// are collected during the unpack and applied in one batch by GNU tar, which is part of every
// Debian install, reading a tar stream Hangar writes itself from already-validated paths.

export type SpecialEntry = {
  /** Path relative to the layer root; its parent chain was checked to contain no symlinks. */
  path: string;
  type: 'directory' | 'file' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
  xattrs: Record<string, string>;
  devmajor?: number;
  devminor?: number;
  linkname?: string;
  /** For deferred regular files: where their content was staged. */
  contentFile?: string;
  size?: number;
};

export async function applySpecials(layerDir: string, entries: SpecialEntry[], signal?: AbortSignal): Promise<void> {
  if (entries.length === 0) return;
  const child = spawn(
    'tar',
    ['--extract', '--xattrs', '--xattrs-include=*', '--numeric-owner', '--same-owner', '--same-permissions', '--file=-', '-C', layerDir],
    { stdio: ['pipe', 'ignore', 'pipe'], signal },
  );
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = once(child, 'close').catch((err: unknown) => [err]);
  const pack = tar.pack();
  pack.pipe(child.stdin);
  child.stdin.on('error', () => {});
  const feed = async () => {
    for (const e of entries) {
      const pax: Record<string, string> = {};
      for (const [k, v] of Object.entries(e.xattrs)) pax[`SCHILY.xattr.${k}`] = v;
      const header = {
        name: e.path,
        type: e.type,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        mtime: e.mtime,
        linkname: e.linkname,
        devmajor: e.devmajor,
        devminor: e.devminor,
        size: e.contentFile ? e.size : 0,
        ...(Object.keys(pax).length > 0 ? { pax } : {}),
      };
      if (e.contentFile) {
        let sink: ReturnType<typeof pack.entry> | undefined;
        const written = new Promise<void>((resolve, reject) => {
          sink = pack.entry(header, (err) => (err ? reject(err) : resolve()));
        });
        for await (const chunk of createReadStream(e.contentFile)) {
          if (!sink?.write(chunk)) await once(sink as NodeJS.EventEmitter, 'drain');
        }
        sink?.end(Buffer.alloc(0));
        await written;
      } else {
        await new Promise<void>((resolve, reject) => pack.entry(header, (err) => (err ? reject(err) : resolve())));
      }
    }
  };
  try {
    // If tar dies early nothing drains the pack stream; its exit ends the wait instead.
    await Promise.race([feed(), exited]);
  } finally {
    pack.finalize();
  }
  const [code] = (await exited) as [number | Error | null];
  if (code instanceof Error) {
    if ((code as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new HangarError('host_unsupported', 'GNU tar is needed to create whiteouts and extended attributes but was not found', {
        hint: 'install the Debian package "tar"',
      });
    }
    throw code;
  }
  if (code !== 0) {
    throw new HangarError('internal', `tar failed to create device nodes/xattrs in ${layerDir}: ${stderr.trim()}`, {
      hint: 'check the host filesystem supports trusted.* xattrs and device nodes (Hangar must run as root)',
    });
  }
}
