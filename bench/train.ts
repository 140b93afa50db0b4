/**
 * npm run bench:train — the bench-small stage-2 training step (BENCHMARKS.md): a frozen CLIP ViT-S/16-224,
 * the mlp2x_gelu projector 384→512→512 and a 512-wide, 8-layer LLaMA-style LLM (vocab 32000) trained with
 * AdamW in fp32 on 2 × (196 image + 188 text) tokens — medllava (bench/train-worker.ts) against PyTorch
 * (bench/train_torch.py, Debian's python3-torch; OpenBLAS when libopenblas0-pthread is installed) on the same
 * shapes, each in its own process, in the same run. Prints s/step, tokens/s, the ratio, the step's achieved
 * GFLOP/s as a share of the FMA peak measured here, and each side's peak RSS.
 *
 * Environment: BENCH_THREADS (2), BENCH_WARMUP (1), BENCH_STEPS (3), BENCH_OPENBLAS_CORETYPE (the CPU's widest: SkylakeX
 * with AVX-512, Haswell with AVX2; 'auto' = OpenBLAS's own detection, which picks Prescott on this machine).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { generateFixture, type FixtureShape } from '../lib/fixtures/generate.js';
import { getBackendInfo } from '../lib/index.js';
import { native, packageRoot } from '../lib/native.js';

const int = (name: string, def: number, min: number) => {
  const v = Number(process.env[name] ?? def);
  if (!Number.isInteger(v) || v < min) throw new Error(`${name} must be an integer ≥ ${min}, got ${process.env[name]}`);
  return v;
};
const THREADS = int('BENCH_THREADS', 2, 1), WARMUP = int('BENCH_WARMUP', 1, 0), STEPS = int('BENCH_STEPS', 3, 1);
const root = packageRoot();
const here = dirname(fileURLToPath(import.meta.url));

const SHAPE: FixtureShape = {
  llm: { hidden: 512, layers: 8, heads: 8, kvHeads: 8, ffn: 1376, vocab: 32000, ropeTheta: 10000, rmsEps: 1e-5, context: 512 },
  vision: { imageSize: 224, patchSize: 16, hidden: 384, layers: 12, heads: 6, ffn: 1536, eps: 1e-5 },
  projector: 'mlp2x_gelu',
};

/** FLOPs of one step, the work it needs, counted the same for both sides (multiply-add = 2; causal attention: half the square) */
function stepFlops(): { total: number; parts: Record<string, number> } {
  const v = SHAPE.vision, l = SHAPE.llm, B = 2, np = (v.imageSize / v.patchSize) ** 2, Tv = np + 1, T = np + 188;
  const vLayers = v.layers - 1;  // mm_vision_select_layer -2
  const visionFwd = B * (2 * np * v.hidden * 3 * v.patchSize ** 2
    + vLayers * (2 * Tv * (4 * v.hidden ** 2 + 2 * v.hidden * v.ffn) + 4 * Tv * Tv * v.hidden));
  const rows = B * np;
  const projector = 2 * rows * (v.hidden * l.hidden) * 2 + 2 * rows * (l.hidden * l.hidden) * 3;  // proj0: fwd + dW; proj2: fwd + dW + dX
  const perLayer = 4 * l.hidden ** 2 + 3 * l.hidden * l.ffn;
  const llmLayers = l.layers * (6 * B * T * perLayer + 3 * B * 2 * T * T * l.hidden);  // fwd + 2× in backward; causal half
  // the lm_head and loss over the rows that have a label (187 per sequence: the last image row and the
  // text but its last token); logits of the image and prompt rows are work a step does not need, and
  // medllava's fused loss head skips it (PyTorch computes them all: its share of the peak is lower than counted)
  const head = 6 * B * 187 * l.hidden * l.vocab;
  const parts = { visionFwd, projector, llmLayers, head };
  return { total: Object.values(parts).reduce((a, b) => a + b, 0), parts };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const dir = join(root, '.bench-cache', 'bench-small');
if (!existsSync(join(dir, 'llava-med-v1.5-mistral-7b', 'config.json'))) {
  console.log('writing the bench-small fixture …');
  await generateFixture({ layout: 'llava-med-v1.5', out: dir, shape: SHAPE });
}
const model = join(dir, 'llava-med-v1.5-mistral-7b');
const peak = await native().measureFmaPeak(THREADS, 500);
const flops = stepFlops();

// PyTorch at its best here: Debian's OpenBLAS 0.3.21 does not recognise this CPU model and falls back
// to its Prescott (SSE3) kernels — ~60 GFLOP/s on a 768 × 512 × 32000 GEMM on 2 threads, against
// ~230 with its SkylakeX (AVX-512) kernels. Name the widest kernel set the CPU has (BENCH_OPENBLAS_CORETYPE
// overrides; 'auto' leaves OpenBLAS's own detection).
const env = { ...process.env };
delete env['OPENBLAS_L2_SIZE'];
const dispatch = getBackendInfo().cpu.dispatch;
const coretype = process.env['BENCH_OPENBLAS_CORETYPE'] ?? (dispatch === 'avx512' ? 'SkylakeX' : dispatch === 'avx2' ? 'Haswell' : 'auto');
if (coretype === 'auto') delete env['OPENBLAS_CORETYPE']; else env['OPENBLAS_CORETYPE'] = coretype;
const run = (cmd: string, args: string[]) =>
  JSON.parse(execFileSync(cmd, args, { encoding: 'utf8', env, maxBuffer: 64 << 20 }).trim().split('\n').pop()!) as {
    stepMs: number[]; maxRssKiB: number; trainable: number; torch?: string; blas?: string;
  };
console.log(`bench-small stage-2 step, ${THREADS} threads, ${WARMUP} warm-up + ${STEPS} timed steps per side; OpenBLAS core ${coretype}; ` +
  `${(flops.total / 1e9).toFixed(1)} GFLOP/step; FMA peak ${peak.toFixed(0)} GFLOP/s`);
const ours = run(process.execPath, [join(here, 'train-worker.js'), model, String(THREADS), String(WARMUP), String(STEPS)]);
const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const theirs = run(python, [join(root, 'bench', 'train_torch.py'), String(THREADS), String(WARMUP), String(STEPS)]);
const tokens = 2 * (196 + 188);
const row = (name: string, r: typeof ours) => {
  const ms = median(r.stepMs), gflops = flops.total / (ms / 1000) / 1e9;
  console.log(`${name.padEnd(28)} ${(ms / 1000).toFixed(2)} s/step  ${(tokens / (ms / 1000)).toFixed(0).padStart(5)} tok/s  ` +
    `${gflops.toFixed(1).padStart(6)} GFLOP/s (${((gflops / peak) * 100).toFixed(0)} % of FMA peak)  peak RSS ${(r.maxRssKiB / 1024).toFixed(0)} MiB  ` +
    `trainable ${(r.trainable / 1e6).toFixed(1)} M  [${r.stepMs.map((x) => (x / 1000).toFixed(2)).join(', ')}]`);
  return ms;
};
const a = row('medllava', ours);
const b = row(`PyTorch ${theirs.torch ?? ''} (${theirs.blas ?? '?'})`, theirs);
console.log(`ratio medllava / PyTorch tokens/s: ${(b / a).toFixed(2)}× (goal ≥ 1.5×); peak RSS ratio ${(ours.maxRssKiB / theirs.maxRssKiB).toFixed(2)}`);
// ---- end to end: the same stage through train() from LLaVA JSON and 512 × 512 JPEGs on disk ----
{
  // twice the timed steps and one more warm-up: the pipeline fills during the first steps
  const e2e = run(process.execPath, [join(here, 'train-worker.js'), model, String(THREADS), String(WARMUP + 1), String(2 * STEPS), 'cpu', 'e2e']) as
    unknown as { stepMs: number[]; tokens: number[]; prepMs: number; maxRssKiB: number };
  const secs = e2e.stepMs.reduce((x, y) => x + y, 0) / 1000, toks = e2e.tokens.reduce((x, y) => x + y, 0);
  const e2eTps = toks / secs, stepTps = tokens / (a / 1000);
  console.log(`${'medllava train() end to end'.padEnd(28)} ${(secs / e2e.stepMs.length).toFixed(2)} s/step  ${e2eTps.toFixed(0).padStart(5)} tok/s  ` +
    `${((2 * e2e.stepMs.length) / secs).toFixed(2)} samples/s  (${(toks / e2e.stepMs.length).toFixed(0)} tokens/step; data loading, tokenizing and ` +
    `image preprocessing included)  [${e2e.stepMs.map((x) => (x / 1000).toFixed(2)).join(', ')}]`);
  console.log(`end-to-end / step-only tokens/s: ${(e2eTps / stepTps).toFixed(3)} (input pipeline cost ${((1 - e2eTps / stepTps) * 100).toFixed(1)} %; goal ≤ 5 %; ` +
    `run-to-run noise on this 2-core machine is ±10 %)`);
  console.log(`input pipeline alone: ${e2e.prepMs.toFixed(0)} ms of one core per step (tokenize + decode, resize, normalise 2 × 512² JPEG) = ` +
    `${((e2e.prepMs / a) * 100).toFixed(1)} % of the step's time — the CPU it takes from the step on a machine with no spare core`);

  // ---- data parallel: 2 MPI ranks of 1 thread (one sample of each step each) against 1 process of 2 threads ----
  const hasMpirun = (() => { try { execFileSync('mpirun', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; } })();
  if (!hasMpirun || !native().mpi.info().compiled) {
    console.log('no mpirun or an addon without MPI: the 2-rank scaling row is skipped');
  } else {
    const mpiEnv = { ...process.env, OMPI_MCA_btl_vader_single_copy_mechanism: 'none', BENCH_MICRO: '1' };
    const out = execFileSync('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', '2', process.execPath, join(here, 'train-worker.js'), model, '1',
      String(WARMUP + 1), String(2 * STEPS), 'cpu', 'e2e'], { encoding: 'utf8', env: mpiEnv, maxBuffer: 1 << 26 });
    const r = JSON.parse(out.trim().split('\n').filter((l) => l.startsWith('{')).pop()!) as { stepMs: number[]; tokens: number[] };
    const s2 = r.stepMs.reduce((x, y) => x + y, 0) / 1000, t2 = r.tokens.reduce((x, y) => x + y, 0) / s2;
    console.log(`${'2 MPI ranks × 1 thread'.padEnd(28)} ${(s2 / r.stepMs.length).toFixed(2)} s/step  ${t2.toFixed(0).padStart(5)} tok/s  ` +
      `scaling vs 1 process × 2 threads: ${(t2 / e2eTps).toFixed(2)}× (the same 2 cores: 1.0× is the ceiling; the gradient ` +
      `all-reduce and two model copies are the cost)  [${r.stepMs.map((x) => (x / 1000).toFixed(2)).join(', ')}]`);
  }
}
console.log(`FLOPs per step: ${Object.entries(flops.parts).map(([k, v]) => `${k} ${(v / 1e9).toFixed(1)}`).join(', ')} GFLOP`);

// ---- on a GPU, when one is present: the same step on CUDA (bf16 compute), and a LoRA step at 7B widths ----
// MFU = the step's FLOPs / time / the device's bf16 tensor-core peak measured here (cudaBenchKernels).
// The 7B-shaped model has LLaMA-7B's layer widths (4096 wide, 11008 FFN, 32 heads, vocab 32000) but
// BENCH_7B_LAYERS layers (default 4) so that its random fixture stays a few GB; per-layer cost is what scales.
if (getBackendInfo().cuda.available) {
  const gpuPeak = (await native().cudaBenchKernels(0)).peaks.tensorTFlops * 1e12;
  const gpuRow = (name: string, r: { stepMs: number[] }, stepFlops: number, tokensPerStep: number) => {
    const ms = median(r.stepMs);
    console.log(`${name.padEnd(28)} ${(ms / 1000).toFixed(3)} s/step  ${(tokensPerStep / (ms / 1000)).toFixed(0).padStart(6)} tok/s  ` +
      `MFU ${((stepFlops / (ms / 1000) / gpuPeak) * 100).toFixed(1)} % of ${(gpuPeak / 1e12).toFixed(0)} TFLOP/s bf16  ` +
      `[${r.stepMs.map((x) => (x / 1000).toFixed(3)).join(', ')}]`);
  };
  const small = run(process.execPath, [join(here, 'train-worker.js'), model, String(THREADS), String(WARMUP), String(STEPS), 'cuda', 'instruct']);
  gpuRow('medllava CUDA bench-small', small, flops.total, tokens);

  const layers = int('BENCH_7B_LAYERS', 4, 1);
  const SHAPE7: FixtureShape = {
    llm: { hidden: 4096, layers, heads: 32, kvHeads: 32, ffn: 11008, vocab: 32000, ropeTheta: 10000, rmsEps: 1e-5, context: 1024 },
    vision: SHAPE.vision, projector: 'mlp2x_gelu',
  };
  const dir7 = join(root, '.bench-cache', `lora-7b-shaped-${layers}`);
  if (!existsSync(join(dir7, 'llava-med-v1.5-mistral-7b', 'config.json'))) {
    console.log(`writing the 7B-shaped fixture (${layers} layers) …`);
    await generateFixture({ layout: 'llava-med-v1.5', out: dir7, shape: SHAPE7 });
  }
  // LoRA step FLOPs: the frozen LLM forward + its dX (no dW), attention forward + backward, the head over the
  // labelled rows (forward + dX), the projector (trained), the frozen tower forward; the r-64 adapters are < 2 %
  const l7 = SHAPE7.llm, T = 196 + 188, B = 2;
  const perLayer = 4 * l7.hidden ** 2 + 3 * l7.hidden * l7.ffn;
  const lora7 = flops.parts['visionFwd']! + flops.parts['projector']! + l7.layers * (4 * B * T * perLayer + 3 * B * 2 * T * T * l7.hidden) +
    4 * B * 187 * l7.hidden * l7.vocab;
  const big = run(process.execPath, [join(here, 'train-worker.js'), join(dir7, 'llava-med-v1.5-mistral-7b'), String(THREADS), String(WARMUP),
    String(STEPS), 'cuda', 'lora']);
  gpuRow(`medllava CUDA LoRA 7B-shaped (${layers}/32 layers)`, big, lora7, tokens);
} else {
  console.log(`no CUDA device (${getBackendInfo().cuda.reason ?? 'none found'}): the GPU rows (bench-small on CUDA, a 7B-shaped LoRA step, MFU) are skipped`);
}
