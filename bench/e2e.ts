/**
 * npm run bench — end to end, one run, same files, side by side: the TinyLlama-1.1B-shaped LLM
 * (random weights, real layout; BENCHMARKS.md's llm-1.1b) in Q8_0, Q4_0 and F16 — prefill and
 * decode tokens/s, load time and peak RSS for medllava and llama.cpp (node-llama-cpp), each in its
 * own process; decode as a share of this machine's DRAM read roofline, measured in the same run;
 * and the CLIP ViT-L/14-336 + mlp2x projector image encode against the fp32 FMA peak.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import sharp from 'sharp';

import { FIXTURE_SHAPES, generateFixture } from '../lib/fixtures/generate.js';
import { getBackendInfo, loadModel, loadModelSpec } from '../lib/index.js';
import { loadVision } from '../lib/model/vision.js';
import { native, packageRoot } from '../lib/native.js';
import { importPeer } from '../test/support/peers.js';

const root = packageRoot();
const cache = join(root, '.bench-cache');
const PREFILL = Number(process.env['BENCH_PREFILL'] ?? 512);
const DECODE = Number(process.env['BENCH_DECODE'] ?? 128);
const threads = getBackendInfo().cpu.threads;
const worker = join(dirname(fileURLToPath(import.meta.url)), 'e2e-worker.js');

interface Result { loadMs: number; prefillTps: number; decodeTps: number; maxRssMiB: number }
function measure(engine: string, path: string): Result {
  const out = execFileSync(process.execPath, [worker, engine, path, String(PREFILL), String(DECODE), String(threads)],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 });
  return JSON.parse(out.trim().split('\n').pop()!) as Result;
}

async function main() {
  console.log(`medllava bench — end to end (${new Date().toISOString()}), ${threads} threads, prefill ${PREFILL}, decode ${DECODE}`);
  const bw = await native().measureReadBandwidth(threads, 2 ** 31);
  const peak = await native().measureFmaPeak(threads, 400);
  console.log(`roofline (measured now): DRAM read ${bw.toFixed(1)} GB/s, fp32 FMA ${peak.toFixed(1)} GFLOP/s`);
  const rows: string[] = [];
  for (const type of (process.env['BENCH_TYPES'] ?? 'Q8_0,Q4_0,F16').split(',').filter((t) => t && t !== 'none')) {
    const dir = join(cache, `tinyllama-1.1b-${type.toLowerCase()}`);
    const file = join(dir, `ggml-model-${type.toLowerCase()}.gguf`);
    if (!existsSync(file)) {
      console.log(`writing ${file} …`);
      await generateFixture({ layout: 'gguf', size: 'tinyllama-1.1b', ggufType: type, out: dir });
    }
    const { size } = await import('node:fs').then((fs) => fs.statSync(file));
    const ours = measure('medllava', file);
    const theirs = measure('llama.cpp', file);
    const roof = (tps: number) => `${((tps * size) / 1e9 / bw * 100).toFixed(0)} %`;
    rows.push(`| ${type} (${(size / 1e9).toFixed(2)} GB) | prefill | ${ours.prefillTps.toFixed(1)} | ${theirs.prefillTps.toFixed(1)} | ${(ours.prefillTps / theirs.prefillTps).toFixed(2)}× | |`);
    rows.push(`| | decode | ${ours.decodeTps.toFixed(2)} | ${theirs.decodeTps.toFixed(2)} | ${(ours.decodeTps / theirs.decodeTps).toFixed(2)}× | ours ${roof(ours.decodeTps)}, llama.cpp ${roof(theirs.decodeTps)} |`);
    rows.push(`| | load ms / peak RSS MiB | ${ours.loadMs.toFixed(0)} / ${ours.maxRssMiB.toFixed(0)} | ${theirs.loadMs.toFixed(0)} / ${theirs.maxRssMiB.toFixed(0)} | | |`);
  }
  console.log('');
  console.log('| model | phase | medllava tok/s | llama.cpp tok/s | ratio | decode vs DRAM roofline |');
  console.log('|---|---|---|---|---|---|');
  for (const r of rows) console.log(r);

  const spec = await loadModelSpec(join(cache, 'tinyllama-1.1b-q8_0', 'ggml-model-q8_0.gguf'));
  const vision = await loadVision(spec);
  const S = spec.vision.imageSize;
  const px = new Float32Array(3 * S * S).map((_, i) => Math.sin(i));
  await vision.encode(px);
  const t0 = performance.now();
  await vision.encode(px);
  const secs = (performance.now() - t0) / 1000;
  // ViT-L/14-336 to layer 23 + projector: ≈ 365 GFLOP (BENCHMARKS.md)
  const gflop = 365;
  console.log('');
  console.log(`CLIP ViT-L/14-336 (F16 mmproj) + mlp2x projector, one image: ${secs.toFixed(2)} s = ${(gflop / secs).toFixed(0)} GFLOP/s = ${((gflop / secs / peak) * 100).toFixed(0)} % of the FMA peak`);
  vision.dispose();
  await mtmdEncode();
}

/**
 * llama.cpp's mtmd image encode (through @fugood/llama.node) against ours on one mmproj (CLIP
 * ViT-L/14-336 + mlp2x), from the same PNG. mtmd reports no encode time of its own, so: its prompt
 * time with the image minus its prompt time for a text prompt of the same length, in front of a
 * one-layer LLM (so the LLM's share is small and cancels). Ours: model.encodeImage (decode +
 * preprocessing + tower + projector).
 */
async function mtmdEncode() {
  const dir = join(cache, 'clip-l336-probe');
  const paths = { llm: join(dir, 'ggml-model-f16.gguf'), mmproj: join(dir, 'mmproj-model-f16.gguf') };
  if (!existsSync(paths.mmproj)) {
    const big = FIXTURE_SHAPES['tinyllama-1.1b'];
    await generateFixture({ layout: 'gguf', out: dir, ggufType: 'F16',
      shape: { ...big, llm: { ...big.llm, layers: 1, ffn: 256, vocab: 600, context: 1024 } } });
  }
  const png = join(dir, 'image.png');
  const S = 336;
  const raw = Buffer.alloc(S * S * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (i * 7 + ((i / 1000) | 0) * 13) & 255;
  await sharp(raw, { raw: { width: S, height: S, channels: 3 } }).png().toFile(png);

  const model = await loadModel(paths.llm);
  await model.encodeImage(png);
  const t0 = performance.now();
  await model.encodeImage(png);
  const ours = (performance.now() - t0) / 1000;
  await model.dispose();

  type Ctx = { initMultimodal(o: object): boolean; release(): Promise<void>;
    completion(o: object): Promise<{ timings: { prompt_n: number; prompt_ms: number } }> };
  const lib = await importPeer<{ loadModel(o: object): Promise<Ctx> }>('@fugood/llama.node', 'lib/index.js');
  const ctx = await lib.loadModel({ model: paths.llm, n_ctx: 1024, n_batch: 1024, n_ubatch: 1024, n_gpu_layers: 0, n_threads: threads });
  if (!ctx.initMultimodal({ path: paths.mmproj, use_gpu: false })) throw new Error('llama.node: initMultimodal failed');
  const withImage = await ctx.completion({ prompt: 'Image: <__media__> Findings:', media_paths: [png], n_predict: 1, temperature: 0 });
  // the same number of prompt positions, text only
  const text = await ctx.completion({ prompt: `Findings:${' a'.repeat(withImage.timings.prompt_n - 4)}`, n_predict: 1, temperature: 0 });
  await ctx.release();
  const theirs = (withImage.timings.prompt_ms - text.timings.prompt_ms) / 1000;
  console.log('');
  console.log('| image encode (CLIP ViT-L/14-336 + mlp2x, F16 mmproj, one 336 px PNG) | seconds |');
  console.log('|---|---|');
  console.log(`| medllava encodeImage | ${ours.toFixed(2)} |`);
  console.log(`| llama.cpp mtmd (@fugood/llama.node ${withImage.timings.prompt_n} vs ${text.timings.prompt_n} prompt positions) | ${theirs.toFixed(2)} |`);
  console.log(`| ratio (theirs / ours) | ${(theirs / ours).toFixed(2)}× |`);
  console.log("(@fugood/llama.node's linux-x64 prebuilt has no AVX2 — BENCHMARKS.md — so this ratio flatters us; PyTorch's 5.4 s is the fairer anchor)");
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
