// npm run fuzz -- [seconds per target, default 60] — builds the libFuzzer targets with clang
// (ASan + UBSan) in build-fuzz/, seeds each corpus with valid files written by medllava itself, and
// runs each target for the given time. Findings (crash-*, leak-*, timeout-*) land in build-fuzz/.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = join(root, 'build-fuzz');
const seconds = Number(process.argv[2] ?? 60);
const only = process.argv[3]; // optional: one target
function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts });
  if (r.status !== 0 && !opts.allowFail) process.exit(r.status ?? 1);
  return r;
}
run('cmake', ['-S', '.', '-B', dir, '-DMEDLLAVA_FUZZ=on', '-DMEDLLAVA_CUDA=off', '-DCMAKE_C_COMPILER=clang',
  '-DCMAKE_CXX_COMPILER=clang++', '-DCMAKE_BUILD_TYPE=RelWithDebInfo']);
run('cmake', ['--build', dir, '--target', 'fuzz_safetensors', 'fuzz_gguf', 'fuzz_pickle', '-j', '2']);
// seeds: valid files in both formats, written by the addon
const seeds = { safetensors: join(dir, 'seeds-safetensors'), gguf: join(dir, 'seeds-gguf'), pickle: join(dir, 'seeds-pickle') };
for (const d of Object.values(seeds)) mkdirSync(d, { recursive: true });
run(process.execPath, [join(root, 'scripts', 'fuzz-seeds.mjs'), seeds.safetensors, seeds.gguf, seeds.pickle]);
let findings = 0;
for (const target of ['safetensors', 'gguf', 'pickle'].filter((t) => !only || t === only)) {
  const corpus = join(dir, `corpus-${target}`);
  mkdirSync(corpus, { recursive: true });
  console.log(`fuzz_${target}: ${seconds} s`);
  const r = run(join(dir, `fuzz_${target}`), [corpus, seeds[target], `-max_total_time=${seconds}`, '-max_len=65536',
    '-timeout=10', '-rss_limit_mb=2048', '-print_final_stats=1', `-artifact_prefix=${dir}/${target}-`],
  { allowFail: true });
  if (r.status !== 0) findings++;
}
const artifacts = readdirSync(dir).filter((f) => /-(crash|leak|timeout|oom)-/.test(f));
console.log(artifacts.length ? `findings: ${artifacts.join(', ')}` : 'no findings');
process.exit(findings || artifacts.length ? 1 : 0);
