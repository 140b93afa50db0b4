#!/usr/bin/env node
// `medllava build` / `npm run build:native`: compiles the addon from source into build/Release
// with cmake-js — for platforms without a prebuilt binary. Needs cmake ≥ 3.19 and a C++17
// compiler (nvcc optional: with it, the CUDA backend is built too; MEDLLAVA_CUDA=off skips it).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
let cmakeJs;
try {
  cmakeJs = join(dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
} catch {
  console.error('medllava build: cmake-js is missing (npm install cmake-js, then run this again)');
  process.exit(1);
}
const r = spawnSync(process.execPath, [cmakeJs, 'compile', ...process.argv.slice(2)], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error('medllava build: the compile failed; it needs cmake ≥ 3.19, ninja or make, and a C++17 compiler on the PATH');
}
process.exit(r.status ?? 1);
