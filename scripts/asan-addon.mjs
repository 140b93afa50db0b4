#!/usr/bin/env node
// npm run test:asan:addon — the addon itself built with AddressSanitizer + UndefinedBehaviorSanitizer
// (build-asan-addon/, CPU only) and the N-API boundary and model tests run against it in vitest:
// Node is not instrumented, so libasan is preloaded (leak checks off: Node's own allocations
// would be reported), and lib/native.ts loads this build through MEDLLAVA_ADDON_PATH. Any ASan or
// UBSan report aborts the test process, which fails the run.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const out = join(root, 'build-asan-addon');
const run = (cmd, args, env = {}) => {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.status !== 0) process.exit(r.status ?? 1);
};
const lib = (name) => spawnSync('gcc', [`-print-file-name=${name}`], { encoding: 'utf8' }).stdout.trim();

const cmakeJs = join(dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
run(process.execPath, [cmakeJs, 'compile', '--out', out, '--config', 'RelWithDebInfo', '--CDMEDLLAVA_SANITIZE=on',
  '--CDMEDLLAVA_CUDA=off']);
const addon = join(out, 'RelWithDebInfo', 'medllava.node');
if (!existsSync(addon)) {
  console.error(`asan-addon: ${addon} was not built`);
  process.exit(1);
}
// the build must really be instrumented (else the run below would prove nothing)
const symbols = spawnSync('nm', ['-D', addon], { encoding: 'utf8' }).stdout;
if (!/__asan_report_load4/.test(symbols) || !/__ubsan_handle_/.test(symbols)) {
  console.error(`asan-addon: ${addon} is not instrumented with ASan + UBSan`);
  process.exit(1);
}
const asan = lib('libasan.so');
const ubsan = lib('libubsan.so');
const files = process.argv.slice(2).length ? process.argv.slice(2)
  : ['test/napi', 'test/model/lifecycle.test.ts', 'test/model/generate.test.ts', 'test/model/llm.test.ts', 'test/model/vision.test.ts',
    'test/model/params.test.ts', 'test/model/images.test.ts', 'test/train/trainer.test.ts'];
run(process.execPath, [join(dirname(require.resolve('vitest/package.json')), 'vitest.mjs'), 'run', ...files], {
  MEDLLAVA_ADDON_PATH: addon,
  MEDLLAVA_CUDA: 'off',
  LD_PRELOAD: `${asan} ${ubsan}`,
  ASAN_OPTIONS: 'detect_leaks=0:abort_on_error=1:halt_on_error=1:allow_user_segv_handler=1',
  UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
});
