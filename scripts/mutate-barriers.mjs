// npm run test:mutation — deletes each __syncthreads() in native/cuda/*.cuh in turn, rebuilds the
// SIMT test addon, runs the kernel tests, and reports whether they caught it. Every mutant must be
// killed (some test must fail); the source is restored after each one, and on exit.
//   node scripts/mutate-barriers.mjs [--tests <path>]... [<file.cuh>[:<line>]]...
// Files (names in native/cuda, a :line for one barrier) restrict the run to their barriers; --tests
// replaces the test paths each mutant runs (default: test/kernels test/simt). The unmutated build
// must pass those tests first, and every __syncthreads() must stand alone on its line (else it could
// not be deleted, and so would go untested): either failing stops the run (exit 2).
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cudaDir = join(root, 'native', 'cuda');
const run = (cmd, args) => spawnSync(cmd, args, { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 });

const tests = [];
const only = new Map();  // file → the lines to mutate (null: all)
for (let a = process.argv.slice(2); a.length;) {
  const arg = a.shift();
  if (arg === '--tests') {
    if (!a.length) { console.error('--tests needs a path'); process.exit(2); }
    tests.push(a.shift());
    continue;
  }
  const [file, line] = arg.replace(/^native\/cuda\//, '').split(':');
  if (!readdirSync(cudaDir).includes(file)) { console.error(`no native/cuda/${file}`); process.exit(2); }
  if (line === undefined) only.set(file, null);
  else if (only.get(file) !== null) only.set(file, [...(only.get(file) ?? []), Number(line)]);
}
if (!tests.length) tests.push('test/kernels', 'test/simt');

const build = () => run('cmake', ['--build', join(root, 'build'), '--target', 'medllava_simt']);
const runTests = () => run(process.execPath, [join(root, 'node_modules/vitest/vitest.mjs'), 'run', ...tests]);
const lastLine = (t) => (t.stdout.trim().split('\n').pop() ?? '').trim();

const barrier = /^\s*__syncthreads\(\);/;
const files = readdirSync(cudaDir).filter((f) => f.endsWith('.cuh') && (!only.size || only.has(f)));
let hidden = 0;
for (const file of files) {
  const lines = readFileSync(join(cudaDir, file), 'utf8').split('\n');
  lines.forEach((l, i) => {
    if (l.includes('__syncthreads') && !barrier.test(l) && !/^\s*\/\//.test(l)) {
      console.error(`${file}:${i + 1}: a __syncthreads() not alone on its line cannot be mutated: ${l.trim()}`);
      hidden++;
    }
  });
  for (const l of only.get(file) ?? []) {
    if (!barrier.test(lines[l - 1] ?? '')) { console.error(`${file}:${l} is not a __syncthreads() line`); process.exit(2); }
  }
}
if (hidden) process.exit(2);

if (build().status !== 0) {
  console.error('build/ is not configured with the test addon: run `npm run build:native:test` first');
  process.exit(2);
}
const baseline = runTests();
if (baseline.status !== 0) {
  console.error(`the unmutated build fails ${tests.join(' ')} (${lastLine(baseline)}): nothing to measure`);
  process.exit(2);
}
let survivors = 0, mutants = 0;
for (const file of files) {
  const path = join(cudaDir, file);
  const original = readFileSync(path, 'utf8');
  const restore = () => writeFileSync(path, original);
  process.on('exit', restore);
  const lines = original.split('\n');
  const wanted = only.get(file);
  for (let i = 0; i < lines.length; i++) {
    if (!barrier.test(lines[i]) || (wanted && !wanted.includes(i + 1))) continue;
    const mutant = [...lines];
    mutant[i] = mutant[i].replace('__syncthreads();', ';');
    writeFileSync(path, mutant.join('\n'));
    const b = build();
    if (b.status !== 0) { restore(); console.error(b.stdout + b.stderr); process.exit(2); }
    const t = runTests();
    const killed = t.status !== 0;
    mutants++;
    if (!killed) survivors++;
    console.log(`${file}:${i + 1} without __syncthreads(): ${killed ? 'caught' : 'NOT CAUGHT'} (${lastLine(t)})`);
    restore();
  }
}
build();
console.log(survivors ? `${survivors} of ${mutants} mutant(s) survived` : `every deleted __syncthreads() was caught (${mutants})`);
process.exit(survivors ? 1 : 0);
