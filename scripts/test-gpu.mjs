#!/usr/bin/env node
// npm run test:gpu — the whole GPU check in one command, sized for one 10-minute call on a fresh
// machine with an NVIDIA GPU:
//   1. probe the device (nvidia-smi: name, compute capability, memory, driver);
//   2. build the addon and the test addon with CUDA for that architecture only;
//   3. run every op of the op table on the real device against the CPU and the emulator (the one
//      harness: test/kernels/ops.test.ts), and the model suites on the real device (test/gpu, the
//      boundary and generation suites with MEDLLAVA_EXPECT_GPU=1: a missing device fails them);
//   4. time the kernels against the device's peaks measured in the same run (npm run bench:kernels);
//   5. write the report: gpu-report.json and gpu-report.md in MEDLLAVA_GPU_REPORT_DIR, else $OUT
//      (the device tool's output folder), else ./gpu-report.
// Every step has a time limit inside one overall deadline (MEDLLAVA_GPU_DEADLINE_S, 570 s), so the
// script ends and writes its report even when a step hangs. Without a GPU it stops at step 1 with a
// one-line reason and exit code 2 (a failed step: 1). `--plan` prints the steps it would run.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const started = Date.now();
const deadline = started + 1000 * Number(process.env.MEDLLAVA_GPU_DEADLINE_S ?? 570);
const probeMs = Number(process.env.MEDLLAVA_GPU_PROBE_TIMEOUT_MS ?? 20000);
const reportDir = process.env.MEDLLAVA_GPU_REPORT_DIR || process.env.OUT || join(root, 'gpu-report');
const plan = process.argv.includes('--plan');

const report = { started: new Date(started).toISOString(), status: 'running', device: null, steps: [], tests: null, bench: null };

function writeReport() {
  report.seconds = Math.round((Date.now() - started) / 100) / 10;
  mkdirSync(reportDir, { recursive: true });
  writeFileSync(join(reportDir, 'gpu-report.json'), JSON.stringify(report, null, 2) + '\n');
  const lines = [`# medllava GPU check — ${report.status}`, '', `started ${report.started}, ${report.seconds} s`, ''];
  if (report.device) lines.push(`device: ${report.device.name} (sm_${report.device.arch}), ${report.device.memory}, driver ${report.device.driver}`, '');
  if (report.reason) lines.push(`reason: ${report.reason}`, '');
  lines.push('| step | ok | seconds |', '| --- | --- | --- |');
  for (const s of report.steps) lines.push(`| ${s.name} | ${s.ok ? 'yes' : 'NO'} | ${s.seconds} |`);
  if (report.tests) lines.push('', `tests: ${report.tests.passed} passed, ${report.tests.failed} failed, ${report.tests.skipped} skipped`);
  if (report.bench) lines.push('', '## bench:kernels', '', '```', report.bench.trim(), '```');
  for (const s of report.steps.filter((x) => !x.ok)) lines.push('', `## ${s.name} (failed)`, '', '```', s.tail.trim(), '```');
  writeFileSync(join(reportDir, 'gpu-report.md'), lines.join('\n') + '\n');
}

function finish(status, code, reason) {
  report.status = status;
  if (reason) report.reason = reason;
  writeReport();
  console.log(`test:gpu: ${status}${reason ? ` — ${reason}` : ''} (report: ${join(reportDir, 'gpu-report.md')})`);
  process.exit(code);
}

/** Runs one step with the time left (at most `maxS`), echoing its output; records it in the report. */
function step(name, cmd, args, { maxS, env = {}, reserveS = 0 } = {}) {
  const left = (deadline - Date.now()) / 1000 - reserveS;
  if (left < 5) {
    report.steps.push({ name, ok: false, seconds: 0, tail: 'not started: the overall deadline is reached' });
    return { ok: false, out: '' };
  }
  const limit = Math.min(maxS, left);
  console.log(`test:gpu: ${name} (up to ${Math.round(limit)} s): ${cmd} ${args.join(' ')}`);
  const t0 = Date.now();
  const r = spawnSync(cmd, args, { cwd: root, env: { ...process.env, ...env }, encoding: 'utf8', timeout: limit * 1000,
    killSignal: 'SIGKILL', maxBuffer: 256 << 20 });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  process.stdout.write(out);
  const timedOut = r.error?.code === 'ETIMEDOUT' || r.signal === 'SIGKILL';
  const ok = !r.error && r.status === 0;
  const why = timedOut ? `\n(stopped after ${Math.round(limit)} s)` : r.error ? `\n(${r.error.message})` : '';
  report.steps.push({ name, ok, seconds: Math.round((Date.now() - t0) / 100) / 10, tail: (out + why).slice(-6000) });
  return { ok, out };
}

// 1. the device
const smi = spawnSync('nvidia-smi', ['--query-gpu=name,compute_cap,memory.total,driver_version', '--format=csv,noheader'],
  { encoding: 'utf8', timeout: probeMs, killSignal: 'SIGKILL' });
if (smi.error || smi.status !== 0 || !smi.stdout.trim()) {
  const why = smi.error?.code === 'ENOENT' ? 'nvidia-smi is not on the PATH: this machine has no NVIDIA driver'
    : smi.error?.code === 'ETIMEDOUT' || smi.signal === 'SIGKILL' ? `nvidia-smi did not answer within ${probeMs} ms`
      : `nvidia-smi failed: ${(smi.stderr || smi.stdout || smi.error?.message || `exit ${smi.status}`).trim()}`;
  finish('no-gpu', 2, `no NVIDIA GPU to test on (${why})`);
}
const [name, cc, memory, driver] = smi.stdout.trim().split('\n')[0].split(',').map((s) => s.trim());
const arch = (cc ?? '').replace('.', '');
if (!/^\d{2,3}$/.test(arch)) finish('no-gpu', 2, `nvidia-smi reported no compute capability ('${smi.stdout.trim()}')`);
report.device = { name, arch, memory, driver };
console.log(`test:gpu: ${name}, compute capability ${cc}, ${memory}, driver ${driver}`);

let cmakeJs;
try {
  cmakeJs = join(dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
} catch {
  finish('failed', 1, 'cmake-js is missing: run npm install first (the node_modules folder must travel with the tree)');
}
const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs');
const buildArgs = ['--CDMEDLLAVA_TESTS=on', '--CDMEDLLAVA_CUDA=on', `--CDCMAKE_CUDA_ARCHITECTURES=${arch}`];
const tests = ['test/kernels/ops.test.ts', 'test/gpu', 'test/napi/boundary.test.ts', 'test/model/generate.test.ts'];
const vitestJson = join(reportDir, 'vitest.json');
if (plan) {
  console.log(JSON.stringify({ device: report.device, build: [cmakeJs, 'configure', ...buildArgs], tests, bench: 'dist/bench/kernels/matmul.js' }));
  process.exit(0);
}

// 2. build for this architecture (the bench and the tests need the rest of the deadline)
if (!step('configure', process.execPath, [cmakeJs, 'configure', ...buildArgs], { maxS: 120, reserveS: 240 }).ok ||
    !step('build', process.execPath, [cmakeJs, 'build'], { maxS: 330, reserveS: 200 }).ok ||
    !step('typescript', process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'],
      { maxS: 60, reserveS: 190 }).ok) finish('failed', 1, 'the build failed');

// 3. the tests on the device
mkdirSync(reportDir, { recursive: true });
const t = step('tests', process.execPath, [vitest, 'run', ...tests, '--reporter=default', '--reporter=json', `--outputFile.json=${vitestJson}`],
  { maxS: 240, reserveS: 70, env: { MEDLLAVA_EXPECT_GPU: '1' } });
if (existsSync(vitestJson)) {
  const j = JSON.parse(readFileSync(vitestJson, 'utf8'));
  report.tests = { passed: j.numPassedTests, failed: j.numFailedTests, skipped: j.numPendingTests + (j.numTodoTests ?? 0) };
}

// 4. the kernels against the device's peaks
const b = step('bench:kernels', process.execPath, [join(root, 'dist', 'bench', 'kernels', 'matmul.js')], { maxS: 90 });
report.bench = b.out.slice(-12000);

const ok = report.steps.every((s) => s.ok) && report.tests && report.tests.failed === 0;
finish(ok ? 'passed' : 'failed', ok ? 0 : 1, ok ? '' : t.ok ? 'a step failed' : 'tests failed on the device');
