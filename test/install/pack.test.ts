/**
 * Installing like users do, with npm's install scripts off (`--ignore-scripts`, as npm's
 * allowScripts policy will make the default): (a) `npm pack` runs prepack, which builds the
 * prebuild that ships inside the tarball; a fresh project installs it with no compiler on the PATH
 * and runs a forward pass; (b) a tarball without a binary for this platform says so in one line
 * (no stack trace) and `medllava build` compiles it with cmake-js. Also builds the addon with
 * node-gyp from binding.gyp, the build prebuildify drives by default.
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

function pack(dir: string, dest: string, scripts = false): string {
  mkdirSync(dest, { recursive: true });
  // (stdout also carries the lifecycle scripts' output when they run: take the tarball from `dest`)
  run(npm, ['pack', ...(scripts ? [] : ['--ignore-scripts']), '--pack-destination', dest], dir);
  const tarballs = readdirSync(dest).filter((f) => f.endsWith('.tgz'));
  expect(tarballs).toHaveLength(1);
  return join(dest, tarballs[0]!);
}

function freshProject(name: string): string {
  const dir = join(work, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true, type: 'module' }));
  return dir;
}

function backendInfoIn(dir: string, env: NodeJS.ProcessEnv = {}): { cuda: { compiled: boolean } } {
  const out = run(process.execPath, ['--input-type=module', '-e',
    "import { getBackendInfo } from 'medllava'; process.stdout.write(JSON.stringify(getBackendInfo()));"], dir, env);
  return JSON.parse(out) as { cuda: { compiled: boolean } };
}

/** npm's own CLI, run by this node: works with a PATH that has nothing else on it */
const npmCli = join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js');

/** A PATH holding only node and sh: no cc, c++, g++, cmake, make, ninja or nvcc can be found. */
function noCompilerPath(): string {
  const bin = join(work, 'bin-no-compilers');
  if (!existsSync(bin)) {
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, 'node'));
    symlinkSync('/bin/sh', join(bin, 'sh'));
  }
  return bin;
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
      'scripts/gyp-sources.cjs', 'models/medllava-demo/model.safetensors', 'models/medllava-demo/vision_tower/config.json',
      'models/medllava-demo/samples/samples.json']) expect(paths).toContain(p);
    expect(paths.some((p) => p.startsWith('build/') || p.startsWith('test/') || p.startsWith('node_modules/'))).toBe(false);
  });
});

describe('npm install of the packed tarball, install scripts off', () => {
  it('(b) without a binary for this platform: one clear line saying how to build, then `medllava build` compiles it', () => {
    const dir = freshProject('no-prebuild');
    run(npm, ['install', '--ignore-scripts', '--no-audit', '--no-fund', plainTarball], dir);
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', "import { getBackendInfo } from 'medllava'; getBackendInfo();"],
      { cwd: dir, encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/no prebuilt binary for linux-x64.*npx medllava build/);
    const cli = spawnSync(join(dir, 'node_modules/.bin/medllava'), ['info'], { cwd: dir, encoding: 'utf8' });
    expect(cli.status).toBe(1);
    expect(cli.stderr.trim().split('\n')).toHaveLength(1); // one line, no stack trace
    expect(cli.stderr.trim()).toMatch(/^medllava: .*npx medllava build.*\(E_UNSUPPORTED\)$/);
    run(join(dir, 'node_modules/.bin/medllava'), ['build', '--no-cuda'], dir);
    expect(existsSync(join(dir, 'node_modules/medllava/build/Release/medllava.node'))).toBe(true);
    expect(backendInfoIn(dir).cuda.compiled).toBe(false);
    expect(run(join(dir, 'node_modules/.bin/medllava'), ['info'], dir)).toMatch(/^cpu: /);
  }, 900_000);

  it('(a) `npm pack` ships a prebuilt binary; it installs and runs a forward pass with no compiler on the PATH', () => {
    // npm pack with its scripts: prepare (dist/), prepack (the prebuild, CUDA included when nvcc is here)
    rmSync(join(unpacked, 'build'), { recursive: true, force: true });
    prebuiltTarball = pack(unpacked, join(work, 'prebuilt'), true);
    const arch = `${process.platform}-${process.arch}`;
    const listing = run('tar', ['-tzf', prebuiltTarball], work);
    expect(listing).toContain(`package/prebuilds/${arch}/medllava.node`);
    expect(listing).not.toMatch(/package\/build\//);

    const env = { PATH: noCompilerPath() };
    expect(spawnSync('sh', ['-c', 'command -v cc || command -v c++ || command -v g++ || command -v cmake'], { env }).status).not.toBe(0);
    // npm's default install (scripts on): medllava has none — not even the node-gyp rebuild npm
    // implies for a package with a binding.gyp (package.json "gypfile": false) — so nothing compiles
    const plainInstall = freshProject('default-install');
    const r = spawnSync(process.execPath, [npmCli, 'install', '--no-audit', '--no-fund', prebuiltTarball],
      { cwd: plainInstall, env: { ...process.env, ...env }, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(`${r.stdout}${r.stderr}`).not.toMatch(/medllava@[^\s]* \((install|preinstall|postinstall)/);
    expect(existsSync(join(plainInstall, 'node_modules/medllava/build'))).toBe(false);
    // and with install scripts off, as npm's allowScripts policy will make the default
    const dir = freshProject('with-prebuild');
    run(process.execPath, [npmCli, 'install', '--ignore-scripts', '--no-audit', '--no-fund', prebuiltTarball], dir, env);
    expect(existsSync(join(dir, 'node_modules/medllava/build'))).toBe(false);
    const info = backendInfoIn(dir, env);
    // the prebuild carries CUDA when this machine has nvcc (as CI does)
    const hasNvcc = spawnSync('nvcc', ['--version']).status === 0;
    expect(info.cuda.compiled).toBe(hasNvcc && process.env.MEDLLAVA_CUDA !== 'off');
    // a forward pass through the installed package, on a fixture its own CLI writes
    run(process.execPath, [join(dir, 'node_modules/medllava/dist/lib/cli/main.js'), 'fixture', '--layout', 'gguf', '--gguf-type', 'F32',
      '--out', join(dir, 'fx')], dir, env);
    const out = run(process.execPath, ['--input-type=module', '-e', `
      import { readdirSync } from 'node:fs';
      import { loadModel } from 'medllava';
      const f = readdirSync('fx').find((n) => n.startsWith('ggml-model'));
      const m = await loadModel('fx/' + f, { device: 'cpu' });
      const logits = await m.forward({ tokens: [1, 20, 30, 40] });
      const reply = await m.createChat().send({ text: 'hello' }, { maxTokens: 4 });
      await m.dispose();
      // the bundled demo model ships in the package: loadModel() with no source
      const demo = await loadModel(undefined, { device: 'cpu' });
      const answer = await demo.createChat().send({ text: 'What type of image is this?', image: 'node_modules/medllava/models/medllava-demo/samples/' +
        readdirSync('node_modules/medllava/models/medllava-demo/samples').find((n) => n.endsWith('.png')) }, { maxTokens: 8 });
      await demo.dispose();
      process.stdout.write(JSON.stringify({ n: logits.length, finite: logits.every(Number.isFinite), tokens: reply.tokens.length,
        demo: demo.spec.family, answered: answer.text.trim().length > 0 }));`], dir, env);
    expect(JSON.parse(out)).toEqual({ n: 600, finite: true, tokens: 4, demo: 'llava-med-v1.5', answered: true });
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
