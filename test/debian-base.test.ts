import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withDaemon, HANGAR, type TestDaemon } from './helpers/daemon.ts';

async function buildDeb(): Promise<Buffer> {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-deb-'));
  try {
    await mkdir(join(dir, 'pkg/DEBIAN'), { recursive: true });
    await mkdir(join(dir, 'pkg/usr/bin'), { recursive: true });
    await writeFile(join(dir, 'pkg/DEBIAN/control'), 'Package: hangar-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: Hangar <hangar@localhost>\nDescription: test package\n');
    await writeFile(join(dir, 'pkg/usr/bin/hangar-hello'), '#!/bin/sh\necho hello from a package\n', { mode: 0o755 });
    execFileSync('dpkg-deb', ['--root-owner-group', '--build', join(dir, 'pkg'), join(dir, 'hello.deb')], { stdio: 'ignore' });
    return await readFile(join(dir, 'hello.deb'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// The minimal Debian base robots boot from: built on first use by debootstrap (about a minute,
// from Debian's mirror), stored as an ordinary OCI image, and run like any other.

let d: TestDaemon & { close(): Promise<void> };
before(async () => {
  d = await withDaemon();
});
after(async () => {
  await d?.close();
});

describe('hangar/debian:bookworm', () => {
  it('builds with progress and boots a machine in which dpkg and apt work', { timeout: 600_000 }, async () => {
    const build = spawn(HANGAR, ['images', 'build-base', 'hangar/debian:bookworm'], { env: { ...process.env, HANGAR_DATA_DIR: d.dataDir } });
    let stdout = '';
    let progressLines = 0;
    build.stdout.on('data', (c) => (stdout += c));
    build.stderr.on('data', (c: Buffer) => (progressLines += c.toString().split('\n').filter((l) => l.startsWith('building')).length));
    const code = await new Promise<number | null>((res) => build.on('exit', res));
    assert.equal(code, 0);
    assert.ok(progressLines > 10, `progress was shown (${progressLines} lines)`);
    assert.match(stdout, /hangar\/debian:bookworm\s+sha256:/);

    await d.client.apps.create('deb');
    const deb = await buildDeb();
    const m = await d.client.machines.create('deb', {
      config: {
        image: 'hangar/debian:bookworm',
        init: { cmd: ['sleep', 'infinity'] },
        files: [{ guest_path: '/tmp/hangar-hello.deb', raw_value: deb.toString('base64') }],
      },
    });
    const r = await d.client.machines.exec('deb', m.id, ['sh', '-c', 'cat /etc/debian_version; dpkg-query -W apt >/dev/null && apt-get --version | head -1; id -un']);
    assert.equal(r.exit_code, 0, r.stderr);
    const [version, apt, user] = r.stdout.trim().split('\n');
    assert.match(version!, /^12\./);
    assert.match(apt!, /^apt 2\./);
    assert.equal(user, 'root');

    // Root in the machine installs packages with apt (offline here: networking is its own issue),
    // without apt's warnings about its sandbox user and download dirs.
    const install = await d.client.machines.exec('deb', m.id, ['sh', '-c', 'apt-get install -y /tmp/hangar-hello.deb >/dev/null; echo apt=$?; hangar-hello'], { timeoutS: 120 });
    assert.equal(install.stdout, 'apt=0\nhello from a package\n', install.stderr);
    assert.doesNotMatch(install.stderr, /_apt|partial|unsandboxed/, install.stderr);
    await d.client.machines.destroy('deb', m.id, { force: true });

    // No tag is the same image, not a second build.
    const untagged = await d.client.machines.create('deb', { config: { image: 'hangar/debian', init: { cmd: ['sleep', 'infinity'] } } });
    assert.equal(untagged.image_ref.tag, 'bookworm');
    assert.deepEqual((await d.client.images.list()).map((i) => i.name).filter((n) => n.startsWith('hangar/debian')), ['hangar/debian:bookworm']);
    await d.client.machines.destroy('deb', untagged.id, { force: true });
  });
});
