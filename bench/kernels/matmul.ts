/**
 * npm run bench:kernels — the matmul at the projector's real shapes (LLaVA mlp2x_gelu on CLIP
 * ViT-L/14-336: 576 patches, 1024 → 4096 → 4096), llm.c dev/cuda style: validate every variant
 * against a float64 reference first, then time it.
 *
 * Reports CPU GFLOP/s and the ratio to this machine's fp32 FMA peak, measured here in the same
 * run (independent FMA chains on every thread); the goal is ≥ 60 % of peak in f32. Also times the
 * CUDA kernels under the SIMT emulator on one 64×64 output tile and extrapolates to the full
 * shape — the emulator is for correctness, and this says which sizes tests can afford.
 * A CUDA device, when present, is timed too; here there is none and the bench says so.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { native, packageRoot, type NativeDType } from '../../lib/native.js';
import { activate, randomNormal, randomWeights } from '../../test/support/reference.js';

interface Shape { name: string; M: number; N: number; K: number; act: 'gelu' | 'none' }
const SHAPES: Shape[] = [
  { name: 'projector fc1  576×1024 · (4096×1024)ᵀ', M: 576, N: 4096, K: 1024, act: 'gelu' },
  { name: 'projector fc2  576×4096 · (4096×4096)ᵀ', M: 576, N: 4096, K: 4096, act: 'none' },
];
const DTYPES = ['f32', 'f16', 'bf16'] as const satisfies readonly NativeDType[];

async function time(fn: () => Promise<unknown>, reps: number): Promise<number> {
  const t: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    await fn();
    t.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  t.sort((a, b) => a - b);
  return t[Math.floor(t.length / 2)]!;
}

const pct = (x: number) => `${(100 * x).toFixed(1)} %`;

async function main() {
  const n = native();
  const info = n.getBackendInfo();
  const threads = info.cpu.threads;
  console.log(`medllava bench:kernels — matmul (${new Date().toISOString()})`);
  console.log(`cpu: ${threads} threads, ${info.cpu.features.join(' ')}, kernels ${info.cpu.dispatch}`);
  const peak1 = await n.measureFmaPeak(1, 400);
  const peak = await n.measureFmaPeak(threads, 400);
  console.log(`fp32 FMA peak (measured now): ${peak1.toFixed(1)} GFLOP/s on 1 thread, ${peak.toFixed(1)} GFLOP/s on ${threads}`);
  console.log('');
  console.log('| shape | weights | max rel err (16 sampled outputs vs float64) | time | GFLOP/s | % of peak |');
  console.log('|---|---|---|---|---|---|');
  const results: { shape: string; dtype: string; ratio: number }[] = [];
  for (const s of SHAPES) {
    const a = randomNormal(s.M * s.K, 3);
    const bias = randomNormal(s.N, 5).map((x) => 0.1 * x);
    for (const dtype of DTYPES) {
      const w = randomWeights(s.N * s.K, 1 / Math.sqrt(s.K), dtype, 7);
      const lin = new n.NativeLinear(w.raw, dtype, s.N, s.K, bias);
      const out = await lin.forward(a, s.M, { activation: s.act });
      let worst = 0;
      for (let i = 0; i < 16; i++) {
        const m = (i * 131) % s.M, c = (i * 2477) % s.N;
        let acc = bias[c]!;
        for (let k = 0; k < s.K; k++) acc += a[m * s.K + k]! * w.values[c * s.K + k]!;
        const ref = activate(acc, s.act);
        worst = Math.max(worst, Math.abs(out[m * s.N + c]! - ref) / Math.max(Math.abs(ref), 1e-3));
      }
      if (!(worst < 1e-4)) throw new Error(`validation failed: ${s.name} ${dtype} relative error ${worst}`);
      const secs = await time(() => lin.forward(a, s.M, { activation: s.act }), 7);
      const gflops = (2 * s.M * s.N * s.K) / secs / 1e9;
      results.push({ shape: s.name, dtype, ratio: gflops / peak });
      console.log(`| ${s.name} | ${dtype} | ${worst.toExponential(1)} | ${(secs * 1e3).toFixed(1)} ms | ${gflops.toFixed(1)} | ${pct(gflops / peak)} |`);
      lin.dispose();
    }
  }
  console.log('');

  const simtPath = join(packageRoot(), 'build', 'test', 'medllava_simt.node');
  if (existsSync(simtPath)) {
    type Simt = { matmul(a: Float32Array, w: Float32Array | Uint16Array, t: string, b: Float32Array | null, M: number,
      N: number, K: number, act: string, kernel: string): Promise<Float32Array>; stats(): { switches: number } };
    const simt = createRequire(import.meta.url)(simtPath) as Simt;
    console.log('SIMT emulator (one 64×64 output tile timed, extrapolated to the full shape by tile count):');
    console.log('| shape | kernel | one tile | fiber switches / tile | full shape (extrapolated) |');
    console.log('|---|---|---|---|---|');
    for (const s of SHAPES) {
      const tiles = Math.ceil(s.M / 64) * Math.ceil(s.N / 64);
      const a = randomNormal(64 * s.K, 3);
      for (const [kernel, dtype] of [['tiled', 'f32'], ['tensor', 'f16']] as const) {
        const w = randomWeights(64 * s.K, 1 / Math.sqrt(s.K), dtype, 7);
        const before = simt.stats().switches;
        const secs = await time(() => simt.matmul(a, w.raw, dtype, null, 64, 64, s.K, 'none', kernel), 1);
        const switches = simt.stats().switches - before;
        console.log(`| ${s.name} | ${kernel} (${dtype}) | ${(secs * 1e3).toFixed(0)} ms | ${switches} | ${(secs * tiles).toFixed(0)} s (${tiles} tiles) |`);
      }
    }
  } else {
    console.log(`SIMT emulator: skipped (${simtPath} not built; run npm run build:native:test)`);
  }
  console.log('');
  if (info.cuda.available) {
    // every CUDA kernel at the real shapes (bench/kernels/README.md), against the device's peaks measured now
    const { peaks, kernels } = await native().cudaBenchKernels();
    console.log(`CUDA on ${info.cuda.devices[0]?.name ?? 'device 0'} — measured now: ${peaks.bandwidthGBs.toFixed(0)} GB/s (device copy), ` +
      `${peaks.fp32TFlops.toFixed(1)} TFLOP/s fp32, ${peaks.tensorTFlops.toFixed(0)} TFLOP/s bf16 tensor`);
    console.log('| kernel | shape | µs | GB/s | % of bandwidth | TFLOP/s | % of its FLOP peak |');
    console.log('|---|---|---|---|---|---|---|');
    for (const k of kernels) {
      const gbs = k.bytes / (k.ms * 1e-3) / 1e9;
      const tf = k.flops / (k.ms * 1e-3) / 1e12;
      const peak = k.kernel.startsWith('matmul_wmma') ? peaks.tensorTFlops : peaks.fp32TFlops;
      console.log(`| ${k.kernel} | ${k.shape} | ${(k.ms * 1e3).toFixed(1)} | ${gbs.toFixed(0)} | ${pct(gbs / peaks.bandwidthGBs)} | ` +
        `${tf.toFixed(2)} | ${k.flops ? pct(tf / peak) : '—'} |`);
    }
  } else {
    console.log(`CUDA kernels on a GPU: skipped: no GPU (${info.cuda.reason ?? 'not available'})`);
  }
  console.log('');
  const f32 = results.filter((r) => r.dtype === 'f32');
  const worst = Math.min(...f32.map((r) => r.ratio));
  console.log(`f32 goal ≥ 60 % of peak: worst shape ${pct(worst)} — ${worst >= 0.6 ? 'met' : 'NOT met'}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
