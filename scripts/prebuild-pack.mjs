// npm run prebuild:pack — builds prebuilds/<platform>-<arch>/medllava.node with prebuildify,
// driving cmake-js through scripts/cmake-js-as-node-gyp.mjs. With nvcc on the PATH the prebuild
// contains the CUDA backend (static cudart); MEDLLAVA_CUDA=off builds a CPU-only one.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const prebuildify = join(dirname(require.resolve('prebuildify/package.json')), 'bin.js');
const adapter = join(root, 'scripts', 'cmake-js-as-node-gyp.mjs');
const r = spawnSync(process.execPath, [prebuildify, '--napi', '--strip', '--node-gyp', adapter], {
  cwd: root,
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
