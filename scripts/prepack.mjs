#!/usr/bin/env node
// npm pack / publish: the tarball must carry a binary, so that installing it needs no compiler and
// no install script. Builds dist/ (when the TypeScript sources are here: not in an unpacked tarball)
// and, always, this platform's prebuild (scripts/prebuild-pack.mjs: prebuildify driving cmake-js;
// CUDA included when nvcc is found) — a prebuild left from older sources must never ship. Other
// platforms' prebuilds already in prebuilds/ are packed as they are.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const step = (what, args) => {
  console.error(`medllava prepack: ${what}`);
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
};
if (existsSync(join(root, 'tsconfig.json'))) step('building dist/ (tsc)', [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.json']);
if (!existsSync(join(root, 'dist/lib/index.js'))) {
  console.error('medllava prepack: dist/ is missing and there are no TypeScript sources to build it from');
  process.exit(1);
}
step(`the prebuild for ${process.platform}-${process.arch}`, [join(root, 'scripts/prebuild-pack.mjs')]);
