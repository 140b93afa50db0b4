#!/usr/bin/env node
// `npm install` inside a clone of the repo (npm runs `prepare` there, never for a user installing
// the package from its tarball): builds the TypeScript (dist/) and, when no loadable binary exists
// yet (no prebuild for this platform, no build/Release), compiles the addon with cmake-js.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const run = (what, args) => {
  console.error(`medllava prepare: ${what}`);
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
};

if (!existsSync(join(root, 'node_modules/typescript'))) process.exit(0); // not a development install
if (existsSync(join(root, 'tsconfig.json'))) run('building dist/ (tsc)', [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.json']);
let binary;
try {
  binary = require('node-gyp-build').resolve(root);
} catch {
  binary = undefined;
}
// npm pack / publish: prepack builds the prebuild that ships; a build/Release here would not ship
const packing = ['pack', 'publish'].includes(process.env.npm_command ?? '');
if (!binary && !packing) run('compiling the addon (cmake-js; cmake ≥ 3.19 and a C++17 compiler)', [join(dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js'), 'compile']);
