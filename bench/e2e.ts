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

import { generateFixture } from '../lib/fixtures/generate.js';
import { loadModelSpec } from '../lib/index.js';
import { loadVision } from '../lib/model/vision.js';
import { native, packageRoot } from '../lib/native.js';

const root = packageRoot();
const cache = join(root, '.bench-cache');
const PREFILL = Number(process.env['BENCH_PREFILL'] ?? 512);
const DECODE = Number(process.env['BENCH_DECODE'] ?? 128);
const threads = native().getBackendInfo().cpu.threads;
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
  for (const type of (process.env['BENCH_TYPES'] ?? 'Q8_0,Q4_0,F16').split(',')) {
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
  console.log("(llama.cpp's image encode through @fugood/llama.node is not timed here yet; its linux-x64 build lacks AVX2, see BENCHMARKS.md)");
  vision.dispose();
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
