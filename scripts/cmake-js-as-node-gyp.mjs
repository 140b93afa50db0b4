#!/usr/bin/env node
// prebuildify runs `node-gyp rebuild --target=… --devdir=… --arch=… --release` and takes the
// .node file it finds in build/Release. prebuildify has no cmake backend, so this adapter,
// passed as `--node-gyp`, turns that call into a cmake-js build of CMakeLists.txt.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const args = process.argv.slice(2);
if (args[0] !== 'rebuild') {
  console.error(`cmake-js-as-node-gyp: only 'rebuild' is supported, got ${args.join(' ')}`);
  process.exit(2);
}
const cmakeArgs = ['rebuild'];
for (const a of args.slice(1)) {
  if (a.startsWith('--arch=')) cmakeArgs.push('--arch', a.slice('--arch='.length));
  else if (a === '--debug') cmakeArgs.push('--debug');
  // --target (Node's version) and --devdir do not matter: the addon is Node-API only
}
const require = createRequire(import.meta.url);
const cmakeJs = join(dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
const r = spawnSync(process.execPath, [cmakeJs, ...cmakeArgs], { stdio: 'inherit' });
process.exit(r.status ?? 1);
