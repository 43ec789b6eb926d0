import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { withDaemon, HANGAR, REPO, type TestDaemon } from './helpers/daemon.ts';
import { dependencyClosure } from './helpers/node-image.ts';

// Every shell and TypeScript example in README.md, run in order against one test daemon, as a
// reader would paste them: so the README cannot drift from what Hangar does. The TypeScript runs
// in a fresh project that installed the tarball `npm pack` makes, so `hangar/sdk` is what a
// user's node_modules gets (built JavaScript and .d.ts), not the sources.
//
// Examples are written for the defaults; the test daemon's data dir and addresses stand in for
// them. `<!-- test: skip (reason) -->` just before a fence skips it; `<!-- test: before ... -->`
// holds setup a reader would do by hand (files the example names).

type Block = { lang: 'sh' | 'ts'; line: number; code: string; skip?: string; before?: string };

function readmeBlocks(): Block[] {
  const lines = readFileSync(join(REPO, 'README.md'), 'utf8').split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\w*)$/.exec(lines[i]!);
    if (!open) continue;
    const end = lines.indexOf('```', i + 1);
    const lang = open[1];
    if (lang === 'sh' || lang === 'ts') {
      const block: Block = { lang, line: i + 1, code: lines.slice(i + 1, end).join('\n') };
      const skip = /^<!-- test: skip \((.+)\) -->$/.exec(lines[i - 1] ?? '');
      if (skip) block.skip = skip[1]!;
      if (lines[i - 1] === '-->') {
        const start = lines.lastIndexOf('<!-- test: before', i - 1);
        if (start >= 0) block.before = lines.slice(start + 1, i - 1).join('\n');
      }
      blocks.push(block);
    }
    i = end;
  }
  return blocks;
}

const run = promisify(execFile);

let d: TestDaemon & { close(): Promise<void> };
let work: string;
let project: string;

/** The example with the defaults swapped for the test daemon's data dir and listeners. */
function localize(code: string): string {
  const port = (url: string) => new URL(url).port;
  return code
    .replaceAll('/var/lib/hangar', d.dataDir)
    .replaceAll('127.0.0.1:4280', new URL(d.url).host)
    .replaceAll(':4380', `:${port(d.proxyUrl)}`)
    .replaceAll(':4443', `:${port(d.proxyTlsUrl)}`);
}

before(async () => {
  d = await withDaemon();
  work = mkdtempSync(join(tmpdir(), 'hangar-readme-'));
  symlinkSync(HANGAR, join(work, 'hangar'));
  project = join(work, 'project');
  // Packing, installing and type-checking take half a minute of tsc and npm, and need no daemon:
  // they run while the shell examples do. The TypeScript examples wait for them (and see any error).
  typeChecked = typeCheckExamples();
  typeChecked.catch(() => undefined);
});

after(async () => {
  await typeChecked?.catch(() => undefined);
  await d?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('README examples', () => {
  it('has examples to run, and skips few', () => {
    const blocks = readmeBlocks();
    assert.ok(blocks.filter((b) => b.lang === 'sh' && !b.skip).length >= 4);
    assert.ok(blocks.some((b) => b.lang === 'ts' && !b.skip));
    assert.ok(blocks.filter((b) => b.skip).length <= 2, 'keep skipped examples few');
  });

  for (const block of readmeBlocks()) {
    const title = `README.md:${block.line} (${block.lang}) ${block.code.split('\n')[0]}`;
    it(title, { skip: block.skip ?? false }, async () => {
      if (block.lang === 'ts') return runTypeScript(block);
      const env: NodeJS.ProcessEnv = { ...process.env, HANGAR_DATA_DIR: d.dataDir };
      delete env.HANGAR_TOKEN;
      delete env.HANGAR_API_URL;
      delete env.HANGAR_APP;
      const script = `set -euo pipefail\n${block.before ? localize(block.before) + '\n' : ''}${localize(block.code)}\n`;
      const r = await runToEnd('bash', ['-c', script], { cwd: work, env, timeout: 240_000 });
      assert.equal(r.status, 0, `exit ${r.status}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
    });
  }
});

async function runTypeScript(block: Block): Promise<void> {
  const tsc = await typeChecked!;
  // Types as a user's editor sees them: from the package's .d.ts, strictly. A diagnostic names its
  // file; one that names none (the project's config) fails every example.
  const errors = tsc.output.split('\n').filter((l) => / error TS\d+:/.test(l));
  const mine = errors.filter((l) => l.startsWith(`${exampleFile(block)}(`) || !/^readme-\d+\.ts\(/.test(l));
  assert.ok(tsc.ok || (errors.length > 0 && mine.length === 0), `tsc:\n${mine.length > 0 ? mine.join('\n') : tsc.output}`);
  const r = await runToEnd(join(REPO, '.tools/node/bin/node'), ['--disable-warning=ExperimentalWarning', join(project, exampleFile(block))], { cwd: project, timeout: 240_000 });
  assert.equal(r.status, 0, `exit ${r.status}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
}

/**
 * A command run to its end, as spawnSync would (stdin empty), but leaving the event loop free: the
 * package is packed and type-checked meanwhile.
 */
function runToEnd(cmd: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeout: number }): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { ...options, encoding: 'utf8', maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      resolve({ status: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
    child.stdin?.end();
  });
}

function exampleFile(block: Block): string {
  return `readme-${block.line}.ts`;
}

let typeChecked: Promise<{ ok: boolean; output: string }> | undefined;

/**
 * The package installed into a fresh project with every TypeScript example in it, and one tsc
 * over them all (the project includes *.ts: each example is checked with the others in view, as
 * when they were checked one by one).
 */
async function typeCheckExamples(): Promise<{ ok: boolean; output: string }> {
  await installPackage();
  for (const block of readmeBlocks()) {
    if (block.lang === 'ts' && !block.skip) writeFileSync(join(project, exampleFile(block)), localize(block.code) + '\n');
  }
  try {
    const { stdout, stderr } = await run(join(REPO, '.tools/node/bin/node'), [join(REPO, 'node_modules/typescript/bin/tsc'), '-p', project, '--pretty', 'false'], { encoding: 'utf8' });
    return { ok: true, output: stdout + stderr };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    return { ok: false, output: `${e.stdout ?? ''}${e.stderr ?? ''}` || e.message };
  }
}

async function installPackage(): Promise<void> {
  const npm = async (args: string[], cwd: string) =>
    (await run('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd, encoding: 'utf8' })).stdout;
  const packed = npm(['pack', REPO, '--pack-destination', work], work);
  packed.catch(() => undefined); // awaited below, once the dependencies are copied
  // The registry is stood in for by what this checkout installed: the package's dependencies
  // (and Node's types, for tsc) go into node_modules first, so the install needs no network. Each
  // package goes without the node_modules inside it (those it needs are in the closure themselves),
  // so a level of nesting is copied in once the level above it lost its own.
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  const roots = [...Object.keys(pkg.dependencies), '@types/node'].map((name) => `node_modules/${name}`);
  const levels: string[][] = [];
  for (const path of await dependencyClosure(roots)) {
    if (!existsSync(join(REPO, path))) continue; // an optional dependency for another platform
    (levels[path.split('/node_modules/').length - 1] ??= []).push(path);
  }
  mkdirSync(project);
  for (const paths of levels.filter(Boolean)) {
    await run('cp', ['-a', '--parents', ...paths, project], { cwd: REPO });
    await run('find', [...paths, '-mindepth', '1', '-name', 'node_modules*', '-prune', '-exec', 'rm', '-rf', '{}', '+'], { cwd: project });
  }
  const tarball = join(work, (await packed).trim().split('\n').at(-1)!);
  const nodeTypes = JSON.parse(readFileSync(join(REPO, 'node_modules/@types/node/package.json'), 'utf8')) as { version: string };
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'readme-example', private: true, type: 'module', devDependencies: { '@types/node': nodeTypes.version } }));
  writeFileSync(join(project, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'es2024', module: 'nodenext', strict: true, noEmit: true, types: ['node'] },
    include: ['*.ts'],
  }));
  await npm(['install', '--offline', '--ignore-scripts', tarball], project);
  const installedPkg = JSON.parse(readFileSync(join(project, 'node_modules/hangar/package.json'), 'utf8')) as { exports: Record<string, unknown> };
  assert.deepEqual(installedPkg.exports['./sdk'], { types: './dist/sdk/index.d.ts', default: './dist/sdk/index.js' });
}
