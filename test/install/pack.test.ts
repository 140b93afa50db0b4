/**
 * Installing like users do: `npm pack`, then `npm install ./medllava-*.tgz` in a fresh directory
 * (a) with prebuilds present — no compiler may run — and (b) without — cmake-js compiles.
 * Also builds the addon with node-gyp from binding.gyp, the build prebuildify drives by default.
 *
 * Costs minutes (one CUDA prebuild, one CPU-only cmake-js compile, one node-gyp compile, npm
 * installs from the registry); everything happens in temporary directories, never in the repo's
 * build/. The no-prebuild install compiles with MEDLLAVA_CUDA=off to keep CI time down: the CUDA
 * compile path is the one the prebuild takes.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { packageRoot } from '../../lib/native.js';

const root = packageRoot();
const work = mkdtempSync(join(tmpdir(), 'medllava-install-'));
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): string {
  const r = spawnSync(cmd, args, { cwd, env: { ...process.env, ...env }, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}) in ${cwd}\n${r.stdout}\n${r.stderr}`.slice(-8000));
  }
  return r.stdout;
}

function pack(dir: string, dest: string): string {
  mkdirSync(dest, { recursive: true });
  const out = run(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', dest], dir);
  const [info] = JSON.parse(out) as { filename: string; files: { path: string }[] }[];
  return join(dest, info!.filename);
}

function freshProject(name: string): string {
  const dir = join(work, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true, type: 'module' }));
  return dir;
}

function backendInfoIn(dir: string): { cuda: { compiled: boolean } } {
  const out = run(process.execPath, ['--input-type=module', '-e',
    "import { getBackendInfo } from 'medllava'; process.stdout.write(JSON.stringify(getBackendInfo()));"], dir);
  return JSON.parse(out) as { cuda: { compiled: boolean } };
}

let plainTarball = '';
let prebuiltTarball = '';
let unpacked = '';

beforeAll(() => {
  // (the repo's dist/ is current: npm test builds TypeScript before vitest runs)
  plainTarball = pack(root, join(work, 'plain'));
  unpacked = join(work, 'unpacked');
  mkdirSync(unpacked);
  run('tar', ['-xzf', plainTarball, '-C', unpacked, '--strip-components=1'], work);
  symlinkSync(join(root, 'node_modules'), join(unpacked, 'node_modules'), 'dir');
});

afterAll(() => {
  if (!process.env.MEDLLAVA_KEEP_INSTALL_TEST) rmSync(work, { recursive: true, force: true });
});

describe('npm pack', () => {
  it('ships sources, the built TypeScript and the build files, not the build tree', () => {
    const files = JSON.parse(run(npm, ['pack', '--ignore-scripts', '--dry-run', '--json'], root)) as
      { files: { path: string }[] }[];
    const paths = files[0]!.files.map((f) => f.path);
    for (const p of ['package.json', 'CMakeLists.txt', 'binding.gyp', 'native/sources.json', 'dist/lib/index.js',
      'dist/lib/index.d.ts', 'dist/lib/cli/main.js', 'native/cpu/matmul.cc', 'native/cuda/matmul.cuh',
      'scripts/gyp-sources.cjs']) expect(paths).toContain(p);
    expect(paths.some((p) => p.startsWith('build/') || p.startsWith('test/') || p.startsWith('node_modules/'))).toBe(false);
  });
});

describe('npm install of the packed tarball', () => {
  it('(b) without prebuilds: the install script compiles with cmake-js', () => {
    const dir = freshProject('no-prebuild');
    run(npm, ['install', '--no-audit', '--no-fund', plainTarball], dir, { MEDLLAVA_CUDA: 'off' });
    expect(existsSync(join(dir, 'node_modules/medllava/build/Release/medllava.node'))).toBe(true);
    const info = backendInfoIn(dir);
    expect(info.cuda.compiled).toBe(false);
    expect(run(join(dir, 'node_modules/.bin/medllava'), ['info'], dir)).toMatch(/^cpu: /);
  }, 900_000);

  it('(a) with prebuilds: `npm run prebuild:pack` output installs with no compiler run', () => {
    run(process.execPath, [join(unpacked, 'scripts/prebuild-pack.mjs')], unpacked);
    const arch = `${process.platform}-${process.arch}`;
    expect(readdirSync(join(unpacked, 'prebuilds', arch))).toEqual(['medllava.node']);
    rmSync(join(unpacked, 'build'), { recursive: true, force: true });
    rmSync(join(unpacked, 'node_modules'));
    prebuiltTarball = pack(unpacked, join(work, 'prebuilt'));

    const dir = freshProject('with-prebuild');
    // a compiler that always fails: if the install tried to build, it would fail
    const noCompilers = { CC: '/bin/false', CXX: '/bin/false', CMAKE_C_COMPILER: '/bin/false', CUDACXX: '/bin/false' };
    run(npm, ['install', '--no-audit', '--no-fund', prebuiltTarball], dir, noCompilers);
    expect(existsSync(join(dir, 'node_modules/medllava/build'))).toBe(false);
    expect(existsSync(join(dir, 'node_modules/medllava/prebuilds', arch, 'medllava.node'))).toBe(true);
    const info = backendInfoIn(dir);
    // the prebuild carries CUDA when this machine has nvcc (as CI does)
    const hasNvcc = spawnSync('nvcc', ['--version']).status === 0;
    expect(info.cuda.compiled).toBe(hasNvcc && process.env.MEDLLAVA_CUDA !== 'off');
  }, 900_000);
});

describe('binding.gyp', () => {
  it('node-gyp builds the same sources (without CUDA) into a working addon', () => {
    // npm's own node-gyp, the one `npm install` would run for a binding.gyp package
    const nodeGyp = join(run(npm, ['root', '-g'], root).trim(), 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    expect(existsSync(nodeGyp), `npm's bundled node-gyp at ${nodeGyp}`).toBe(true);
    const nodedir = dirname(dirname(process.execPath));
    expect(existsSync(join(nodedir, 'include/node/node_api.h')), `Node's headers under ${nodedir}`).toBe(true);
    const dir = join(work, 'gyp');
    cpSync(unpacked, dir, { recursive: true, filter: (src) => !/[/](prebuilds|build|node_modules)([/]|$)/.test(src.slice(unpacked.length)) });
    symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'), 'dir');
    run(process.execPath, [nodeGyp, 'rebuild', `--nodedir=${nodedir}`, '--jobs=2'], dir);
    const out = run(process.execPath, ['-e', `
      const m = require(${JSON.stringify(join(dir, 'build/Release/medllava.node'))});
      const lin = new m.NativeLinear(new Float32Array([1, 2, 3, 4]), 'f32', 2, 2, null);
      lin.forward(new Float32Array([1, 1]), 1, {}).then((o) => {
        process.stdout.write(JSON.stringify({ cuda: m.getBackendInfo().cuda, out: Array.from(o) }));
      });`], dir);
    const r = JSON.parse(out) as { cuda: { compiled: boolean }; out: number[] };
    expect(r.cuda.compiled).toBe(false);
    expect(r.out).toEqual([3, 7]);
  }, 900_000);
});
