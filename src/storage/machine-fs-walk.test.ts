import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

// Path walks over trees a machine made, in a process limited to 200 descriptors (prlimit), so a
// walk that holds one per level fails with EMFILE here as it would in a daemon that many
// requests share. The trees are built fd-relative (they are deeper than PATH_MAX allows naming).

const DEPTH = 2500; // 5,000 bytes of path: past PATH_MAX
const DOWN = 1800; // a link's target must stay under PATH_MAX
const child = (script: string) => {
  const r = spawnSync('prlimit', ['--nofile=200', process.execPath, '--disable-warning=ExperimentalWarning', '--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
};
const walk = new URL('./machine-fs-walk.ts', import.meta.url).pathname;
const remove = new URL('./tree-remove.ts', import.meta.url).pathname;

/** Makes `d/d/…` DEPTH levels under `root` and returns a script that opens the deepest. */
const buildDeep = (root: string) => `
  import { mkdirSync } from 'node:fs';
  mkdirSync(${JSON.stringify(root)}, { recursive: true });
  import { open, mkdir } from 'node:fs/promises';
  let dir = await open(${JSON.stringify(root)}, 'r');
  for (let i = 0; i < ${DEPTH}; i++) {
    await mkdir('/proc/self/fd/' + dir.fd + '/d');
    const next = await open('/proc/self/fd/' + dir.fd + '/d', 'r');
    await dir.close();
    dir = next;
  }`;

describe('walking trees deeper than the descriptors', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'hangar-walk-'));
  });
  after(() => {
    // GNU rm walks fd-relative; Node's rm cannot name paths this deep.
    if (root) spawnSync('rm', ['-rf', root]);
  });

  test('resolves through a link that goes 1,800 levels down and 100 back up', async () => {
    // /up -> d/…/d (1,800) then ../ ×100: the walk opens 1,800 directories and climbs back
    // through ones it had to close, to the leaf at depth 1,700.
    const target = 'd/'.repeat(DOWN) + '../'.repeat(100);
    const out = child(`${buildDeep(root)}
      import { symlink, writeFile, readFile } from 'node:fs/promises';
      await dir.close();
      let at = await open(${JSON.stringify(root)}, 'r');
      for (let i = 0; i < ${DOWN - 100}; i++) { const n = await open('/proc/self/fd/' + at.fd + '/d', 'r'); await at.close(); at = n; }
      await writeFile('/proc/self/fd/' + at.fd + '/leaf', 'deep leaf');
      await at.close();
      await symlink(${JSON.stringify(target)}, ${JSON.stringify(join(root, 'up'))});
      const { MachineRoot } = await import(${JSON.stringify(walk)});
      const machine = await MachineRoot.open(${JSON.stringify(root)});
      const r = await machine.resolve('/up/leaf', { followLast: false });
      process.stdout.write(r.guestPath.split('/').length + ' ' + await readFile('/proc/self/fd/' + r.dir.fd + '/' + r.name, 'utf8'));
      await machine.close();`);
    assert.equal(out, `${DOWN - 100 + 2} deep leaf`);
  });

  test('removes a tree deeper than the descriptors and than PATH_MAX', async () => {
    const top = join(root, 'rm');
    await writeFile(join(root, 'marker'), '');
    child(`${buildDeep(top)}
      await writeFile('/proc/self/fd/' + dir.fd + '/leaf', 'x');
      await dir.close();
      const { removeTree } = await import(${JSON.stringify(remove)});
      const parent = await open(${JSON.stringify(root)}, 'r');
      await removeTree(parent, 'rm');
      await parent.close();`.replace("import { open, mkdir } from 'node:fs/promises';", "import { open, mkdir, writeFile } from 'node:fs/promises';"));
    const left = spawnSync('ls', ['-A', root], { encoding: 'utf8' }).stdout;
    assert.equal(left, 'd\nmarker\nup\n', 'the tree is gone, its siblings kept');
  });
});
