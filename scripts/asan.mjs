// npm run test:asan — builds test/native/native_tests.cc (CPU matmul, the CUDA kernels under the
// SIMT emulator, the emulator's own kernels and diagnostics) with AddressSanitizer +
// UndefinedBehaviorSanitizer in build-asan/, runs it, and exits with its status.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = join(root, 'build-asan');
function run(cmd, args, env = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
run('cmake', ['-S', '.', '-B', dir, '-DCMAKE_BUILD_TYPE=RelWithDebInfo', '-DMEDLLAVA_CUDA=off',
  '-DMEDLLAVA_NATIVE_TESTS=on', '-DMEDLLAVA_SANITIZE=on']);
run('cmake', ['--build', dir, '--target', 'medllava_native_tests', '-j', '2']);
run(join(dir, 'medllava_native_tests'), [], {
  ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0:strict_string_checks=1',
  UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
});
