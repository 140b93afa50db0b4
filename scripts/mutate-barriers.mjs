// npm run test:mutation — deletes each __syncthreads() in native/cuda/*.cuh in turn, rebuilds the
// SIMT test addon, runs the kernel tests, and reports whether they caught it. Every mutant must be
// killed (some test must fail); the source is restored after each one, and on exit.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cudaDir = join(root, 'native', 'cuda');
const run = (cmd, args) => spawnSync(cmd, args, { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 });

const build = () => run('cmake', ['--build', join(root, 'build'), '--target', 'medllava_simt']);
if (build().status !== 0) {
  console.error('build/ is not configured with the test addon: run `npm run build:native:test` first');
  process.exit(2);
}
let survivors = 0;
for (const file of readdirSync(cudaDir).filter((f) => f.endsWith('.cuh'))) {
  const path = join(cudaDir, file);
  const original = readFileSync(path, 'utf8');
  const restore = () => writeFileSync(path, original);
  process.on('exit', restore);
  const lines = original.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (!/^\s*__syncthreads\(\);/.test(lines[i])) continue;
    const mutant = [...lines];
    mutant[i] = mutant[i].replace('__syncthreads();', ';');
    writeFileSync(path, mutant.join('\n'));
    const b = build();
    if (b.status !== 0) { restore(); console.error(b.stdout + b.stderr); process.exit(2); }
    const t = run(process.execPath, [join(root, 'node_modules/vitest/vitest.mjs'), 'run', 'test/kernels', 'test/simt']);
    const summary = (t.stdout.trim().split('\n').pop() ?? '').trim();
    const killed = t.status !== 0;
    if (!killed) survivors++;
    console.log(`${file}:${i + 1} without __syncthreads(): ${killed ? 'caught' : 'NOT CAUGHT'} (${summary})`);
    restore();
  }
}
build();
console.log(survivors ? `${survivors} mutant(s) survived` : 'every deleted __syncthreads() was caught');
process.exit(survivors ? 1 : 0);
