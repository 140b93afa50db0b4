/**
 * npm run bench — end to end, same files, side by side: the TinyLlama-1.1B-shaped LLM (random
 * weights, real layout; BENCHMARKS.md's llm-1.1b) in Q8_0, Q4_0 and F16 — prefill and decode
 * tokens/s, load time and memory (peak, anonymous, file-backed) for medllava and llama.cpp
 * (node-llama-cpp, flash attention on and off), each run in its own process, BENCH_RUNS (5)
 * interleaved rounds with the order rotated each round, medians with their min–max; decode as a
 * share of this machine's DRAM read roofline and the CLIP ViT-L/14-336 + mlp2x projector image
 * encode against the fp32 FMA peak, both measured in the same run.
 *
 * Environment: BENCH_RUNS (5), BENCH_TYPES (Q8_0,Q4_0,F16), BENCH_PREFILL (512), BENCH_DECODE (128),
 * BENCH_FA (both | on | off: llama.cpp's flash attention), BENCH_IMAGE_RUNS (3), BENCH_IMAGE (1; 0
 * skips the image encode).
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import sharp from 'sharp';

import { FIXTURE_SHAPES, generateFixture } from '../lib/fixtures/generate.js';
import { getBackendInfo, loadModel, loadModelSpec, type ModelSpec } from '../lib/index.js';
import { loadVision } from '../lib/model/vision.js';
import { native, packageRoot } from '../lib/native.js';
import { realSizeCheck } from './correctness.js';
import { importPeer, peersDir } from '../test/support/peers.js';
import type { WorkerResult } from './e2e-worker.js';

const root = packageRoot();
const cache = join(root, '.bench-cache');
const int = (name: string, def: number, min: number) => {
  const v = Number(process.env[name] ?? def);
  if (!Number.isInteger(v) || v < min) throw new Error(`${name} must be an integer ≥ ${min}, got ${process.env[name]}`);
  return v;
};
const PREFILL = int('BENCH_PREFILL', 512, 1);
const DECODE = int('BENCH_DECODE', 128, 1);
const RUNS = int('BENCH_RUNS', 5, 1);
const IMAGE_RUNS = int('BENCH_IMAGE_RUNS', 3, 1);
const IMAGE = process.env['BENCH_IMAGE'] !== '0';
const FA = process.env['BENCH_FA'] ?? 'both';
if (!['both', 'on', 'off'].includes(FA)) throw new Error(`BENCH_FA must be both, on or off, got ${FA}`);
const TYPES = (process.env['BENCH_TYPES'] ?? 'Q8_0,Q4_0,F16').split(',').filter((t) => t && t !== 'none');
const threads = getBackendInfo().cpu.threads;
const worker = join(dirname(fileURLToPath(import.meta.url)), 'e2e-worker.js');
const pins = JSON.parse(readFileSync(join(root, 'bench', 'peers.json'), 'utf8')) as Record<string, string>;

interface Side { name: string; engine: 'medllava' | 'llama.cpp'; fa?: 'on' | 'off' }
const OURS: Side = { name: 'medllava', engine: 'medllava' };
const THEIRS: Side[] = (FA === 'both' ? ['on', 'off'] as const : [FA as 'on' | 'off'])
  .map((fa) => ({ name: `llama.cpp FA ${fa}`, engine: 'llama.cpp', fa }));
const SIDES = [OURS, ...THEIRS];

/** Reads `file` through once (untimed): the page cache holds it before every run, on both sides. */
function readThrough(file: string): void {
  const buf = Buffer.allocUnsafe(8 << 20);
  const fd = openSync(file, 'r');
  try {
    while (readSync(fd, buf, 0, buf.length, null) > 0) { /* page cache → buffer */ }
  } finally {
    closeSync(fd);
  }
}

function measure(side: Side, path: string): WorkerResult {
  readThrough(path);
  const out = execFileSync(process.execPath,
    [worker, side.engine, path, String(PREFILL), String(DECODE), String(threads), ...(side.fa ? [side.fa] : [])],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 });
  const r = JSON.parse(out.trim().split('\n').pop()!) as Record<string, number | null | boolean>;
  // JSON writes NaN (no /proc) as null
  for (const k of Object.keys(r)) if (r[k] === null) r[k] = NaN;
  return r as unknown as WorkerResult;
}

interface Stat { median: number; min: number; max: number }
function stat(xs: number[]): Stat {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  const median = n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
  return { median, min: s[0]!, max: s[n - 1]! };
}
const fmt = (x: number, d: number) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const fmtStat = (s: Stat, d: number) => `${fmt(s.median, d)} [${fmt(s.min, d)}–${fmt(s.max, d)}]`;

type Metric = 'prefillTps' | 'decodeTps' | 'loadMs' | 'peakRssMiB' | 'rssAnonMiB' | 'rssFileMiB';
const METRICS: { key: Metric; label: string; higherIsBetter: boolean; digits: number }[] = [
  { key: 'prefillTps', label: `prefill ${PREFILL} tok/s`, higherIsBetter: true, digits: 1 },
  { key: 'decodeTps', label: `decode ${DECODE} tok/s`, higherIsBetter: true, digits: 2 },
  { key: 'loadMs', label: 'load ms', higherIsBetter: false, digits: 0 },
  { key: 'peakRssMiB', label: 'peak RSS MiB (VmHWM)', higherIsBetter: false, digits: 0 },
  { key: 'rssAnonMiB', label: 'RSS anon MiB', higherIsBetter: false, digits: 0 },
  { key: 'rssFileMiB', label: 'RSS file MiB', higherIsBetter: false, digits: 0 },
];

/**
 * Bytes a decode step streams from DRAM: every weight once, except the token-embedding table, of
 * which a step reads one row (when the LM head is tied to it, it is streamed whole as the LM head and
 * stays in). The GGUF header, metadata and alignment padding (the rest of the file) are ~MBs of a
 * GB; the KV cache a step also reads (≤ 22 layers × 2 × 640 positions × 256 × 4 bytes ≈ 29 MB at
 * the end of the run) is not counted, so the share is a slight underestimate on both sides alike.
 */
async function streamedPerToken(file: string): Promise<{ fileBytes: number; embedBytes: number; streamed: number }> {
  const fileBytes = statSync(file).size;
  const { tensors } = await native().readGguf(file);
  const embed = tensors.find((t) => t.name === 'token_embd.weight');
  const tied = !tensors.some((t) => t.name === 'output.weight');
  const embedBytes = embed && !tied ? embed.byteLength : 0;
  return { fileBytes, embedBytes, streamed: fileBytes - embedBytes };
}

function llmFile(type: string) {
  const dir = join(cache, `tinyllama-1.1b-${type.toLowerCase()}`);
  return { dir, file: join(dir, `ggml-model-${type.toLowerCase()}.gguf`) };
}
const probeDir = join(cache, 'clip-l336-probe');
const probe = { llm: join(probeDir, 'ggml-model-f16.gguf'), mmproj: join(probeDir, 'mmproj-model-f16.gguf'), png: join(probeDir, 'image.png') };

/** Writes whatever fixture is missing, then sync(1) so their writeback does not land in a timed run. */
async function fixtures(): Promise<void> {
  let wrote = false;
  for (const type of TYPES) {
    const { dir, file } = llmFile(type);
    if (!existsSync(file)) {
      console.log(`writing ${file} …`);
      await generateFixture({ layout: 'gguf', size: 'tinyllama-1.1b', ggufType: type, out: dir });
      wrote = true;
    }
  }
  if (IMAGE && !existsSync(probe.mmproj)) {
    // a one-layer LLM in front of the real-size tower + projector (its projector is as wide as the 1.1B LLM)
    const big = FIXTURE_SHAPES['tinyllama-1.1b'];
    console.log(`writing ${probeDir} …`);
    await generateFixture({ layout: 'gguf', out: probeDir, ggufType: 'F16',
      shape: { ...big, llm: { ...big.llm, layers: 1, ffn: 256, vocab: 600, context: 1024 } } });
    wrote = true;
  }
  if (IMAGE) {
    const S = 336;
    const raw = Buffer.alloc(S * S * 3);
    for (let i = 0; i < raw.length; i++) raw[i] = (i * 7 + ((i / 1000) | 0) * 13) & 255;
    await sharp(raw, { raw: { width: S, height: S, channels: 3 } }).png().toFile(probe.png);
  }
  execFileSync('sync');
  if (wrote) console.log('fixtures written and synced');
}

async function roofline(): Promise<{ bw: number; peak: number }> {
  return { bw: await native().measureReadBandwidth(threads, 2 ** 31), peak: await native().measureFmaPeak(threads, 400) };
}

interface TypeResult { type: string; bytes: Awaited<ReturnType<typeof streamedPerToken>>; runs: Map<string, WorkerResult[]> }

async function llmBench(type: string): Promise<TypeResult> {
  const { file } = llmFile(type);
  const bytes = await streamedPerToken(file);
  const runs = new Map<string, WorkerResult[]>(SIDES.map((s) => [s.name, []]));
  for (let round = 0; round < RUNS; round++) {
    // rotate the order each round (2 sides: AB, BA, AB, …; 3: ABC, BCA, CAB, …): every side takes
    // every position equally often over a full cycle, so drift (thermal, neighbours) cancels
    const order = SIDES.map((_, i) => SIDES[(i + round) % SIDES.length]!);
    for (const side of order) {
      const r = measure(side, file);
      runs.get(side.name)!.push(r);
      console.log(`  ${type} round ${round + 1}/${RUNS} ${side.name.padEnd(16)} load ${fmt(r.loadMs, 0)} ms, prefill ${fmt(r.prefillTps, 1)} tok/s, ` +
        `decode ${fmt(r.decodeTps, 2)} tok/s, RSS peak ${fmt(r.peakRssMiB, 0)} / anon ${fmt(r.rssAnonMiB, 0)} / file ${fmt(r.rssFileMiB, 0)} MiB`);
    }
  }
  return { type, bytes, runs };
}

/** llama.cpp's figure for one metric: the better median of its flash-attention settings, and which. */
function bestTheirs(t: TypeResult, m: (typeof METRICS)[number]): { stat: Stat; side: Side } {
  let best: { stat: Stat; side: Side } | undefined;
  for (const side of THEIRS) {
    const s = stat(t.runs.get(side.name)!.map((r) => r[m.key]));
    if (!best || (m.higherIsBetter ? s.median > best.stat.median : s.median < best.stat.median)) best = { stat: s, side };
  }
  return best!;
}

function llmTable(results: TypeResult[], bw: number): string[] {
  const out: string[] = [];
  const theirsHead = THEIRS.length > 1 ? 'llama.cpp, better of FA on/off' : `llama.cpp (FA ${THEIRS[0]!.fa})`;
  out.push(`| model | metric | medllava median [min–max] | ${theirsHead} median [min–max] | ratio of medians (medllava / llama.cpp) |`);
  out.push('|---|---|---|---|---|');
  for (const t of results) {
    let first = true;
    const ours = (k: Metric) => stat(t.runs.get(OURS.name)!.map((r) => r[k]));
    for (const m of METRICS) {
      const o = ours(m.key);
      const b = bestTheirs(t, m);
      const which = THEIRS.length > 1 ? ` (FA ${b.side.fa})` : '';
      const model = first ? `${t.type} (${(t.bytes.fileBytes / 1e9).toFixed(2)} GB)` : '';
      first = false;
      out.push(`| ${model} | ${m.label} | ${fmtStat(o, m.digits)} | ${fmtStat(b.stat, m.digits)}${which} | ${fmt(o.median / b.stat.median, 2)}× |`);
    }
    // decode × bytes streamed per token (file − token_embd, see streamedPerToken) / DRAM read bandwidth
    const share = (tps: number) => `${fmt(((tps * t.bytes.streamed) / 1e9 / bw) * 100, 0)} %`;
    const d = METRICS.find((m) => m.key === 'decodeTps')!;
    const b = bestTheirs(t, d);
    out.push(`| | decode × ${(t.bytes.streamed / 1e9).toFixed(2)} GB/token vs DRAM roofline (median) | ${share(ours('decodeTps').median)} | ` +
      `${share(b.stat.median)}${THEIRS.length > 1 ? ` (FA ${b.side.fa})` : ''} | |`);
  }
  return out;
}

function faTable(results: TypeResult[]): string[] {
  if (THEIRS.length < 2) return [];
  const out = ['| model | llama.cpp | prefill tok/s median [min–max] | decode tok/s median [min–max] |', '|---|---|---|---|'];
  for (const t of results) {
    for (const side of THEIRS) {
      const rs = t.runs.get(side.name)!;
      out.push(`| ${side === THEIRS[0] ? t.type : ''} | FA ${side.fa} | ${fmtStat(stat(rs.map((r) => r.prefillTps)), 1)} | ` +
        `${fmtStat(stat(rs.map((r) => r.decodeTps)), 2)} |`);
    }
  }
  return out;
}

/**
 * Matmul FLOPs of one image through the vision tower (to mm_vision_select_layer) and the projector,
 * from the spec's shapes; 2 FLOP per multiply-add; layer norms, softmax, GELU and bias adds (< 1 %)
 * not counted. T = (S/p)² patches + the class token, d width, f MLP width, D the LLM's width:
 *   patch embedding   2 · N · 3p² · d                        (N = (S/p)² patches)
 *   per layer         2 · T · (4d² + 2df)  (q, k, v, o projections; fc1, fc2)
 *                   + 4 · T² · d           (QKᵀ and attention · V)
 *   mlp2x projector   2 · N' · (d·D + D·D)  (linear: 2 · N' · d · D; N' = N, or T for cls_patch)
 * ViT-L/14-336 (T 577, d 1024, f 4096; 23 of its 24 layers at select layer −2): 0.7 + 23 × 15.88
 * = 366.0 GFLOP; the projector adds 24.2 into a 4096-wide LLM (LLaVA-Med 7B: ≈ 390 in all) and 7.2
 * into this fixture's 2048-wide one (≈ 373).
 */
function clipGflop(spec: ModelSpec): number {
  const v = spec.vision;
  const N = (v.imageSize / v.patchSize) ** 2;
  const T = N + 1;
  const d = v.hidden;
  const f = v.ffn;
  const run = v.selectLayer < 0 ? v.layers + 1 + v.selectLayer : v.selectLayer;
  const rows = v.selectFeature === 'cls_patch' ? T : N;
  const D = spec.projector.outDim;
  const patch = 2 * N * 3 * v.patchSize ** 2 * d;
  const layer = 2 * T * (4 * d * d + 2 * d * f) + 4 * T * T * d;
  const projector = spec.projector.type === 'mlp2x_gelu' ? 2 * rows * (d * D + D * D) : 2 * rows * d * D;
  return (patch + run * layer + projector) / 1e9;
}

async function timeIt(n: number, f: () => Promise<unknown>): Promise<number[]> {
  const secs: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await f();
    secs.push((performance.now() - t0) / 1000);
  }
  return secs;
}

/**
 * The image encode, F16 mmproj (CLIP ViT-L/14-336 + mlp2x), one warm-up then IMAGE_RUNS timed on
 * every line: ours on pixels (tower + projector; against the FMA peak) and from the PNG
 * (model.encodeImage: decode + preprocessing + tower + projector); and llama.cpp's mtmd through
 * @fugood/llama.node as a correctness peer only — its linux-x64 prebuilt is an SSE-only build
 * (`objdump -d index.node` shows no VEX/EVEX instruction and no ymm/zmm register: no AVX, AVX2,
 * FMA or AVX-512), so its time says nothing about llama.cpp's speed and no ratio is printed. mtmd
 * reports no encode time of its own: its prompt time with the image minus its prompt time for a
 * text prompt of the same length (cache cleared before each), in front of a one-layer LLM.
 */
async function imageBench(): Promise<(peak: number) => string[]> {
  native().setThreads(threads);
  const spec = await loadModelSpec(probe.llm);
  const gflop = clipGflop(spec);
  const vision = await loadVision(spec);
  const S = spec.vision.imageSize;
  const px = new Float32Array(3 * S * S).map((_, i) => Math.sin(i));
  await vision.encode(px);
  const tower = stat(await timeIt(IMAGE_RUNS, () => vision.encode(px)));
  vision.dispose();

  const model = await loadModel(probe.llm, { device: 'cpu', prefetch: true });
  await model.encodeImage(probe.png);
  const fromPng = stat(await timeIt(IMAGE_RUNS, () => model.encodeImage(probe.png)));
  await model.dispose();

  type Timings = { prompt_n: number; prompt_ms: number };
  type Ctx = { initMultimodal(o: object): boolean; release(): Promise<void>; clearCache(clearData?: boolean): void;
    completion(o: object): Promise<{ timings: Timings }> };
  const lib = await importPeer<{ loadModel(o: object): Promise<Ctx> }>('@fugood/llama.node', 'lib/index.js');
  const ctx = await lib.loadModel({ model: probe.llm, n_ctx: 1024, n_batch: 1024, n_ubatch: 1024, n_gpu_layers: 0, n_threads: threads });
  if (!ctx.initMultimodal({ path: probe.mmproj, use_gpu: false })) throw new Error('llama.node: initMultimodal failed');
  const run = async (prompt: string, media?: string): Promise<Timings> => {
    ctx.clearCache(true);
    return (await ctx.completion({ prompt, ...(media ? { media_paths: [media] } : {}), n_predict: 1, temperature: 0 })).timings;
  };
  const imagePrompt = 'Image: <__media__> Findings:';
  const warm = await run(imagePrompt, probe.png);
  // the same number of prompt positions, text only
  const textPrompt = `Findings:${' a'.repeat(warm.prompt_n - 4)}`;
  const warmText = await run(textPrompt);
  const mtmd: number[] = [];
  for (let i = 0; i < IMAGE_RUNS; i++) {
    const img = await run(imagePrompt, probe.png);
    if (img.prompt_n !== warm.prompt_n) throw new Error(`llama.node evaluated ${img.prompt_n} prompt positions, not ${warm.prompt_n}: a cache was reused`);
    if (img.prompt_ms <= 0) throw new Error('llama.node reported no prompt time for the image prompt');
    const txt = await run(textPrompt);
    mtmd.push((img.prompt_ms - txt.prompt_ms) / 1000);
  }
  await ctx.release();

  const rate = (s: number, peak: number) => `${fmt(gflop / s, 0)} GFLOP/s = ${fmt((gflop / s / peak) * 100, 0)} % of the FMA peak`;
  return (peak: number) => [
    `| image encode, CLIP ViT-L/14-336 + mlp2x → ${spec.projector.outDim} (F16 mmproj, ${gflop.toFixed(1)} GFLOP from the shapes) | seconds, median [min–max] of ${IMAGE_RUNS} after 1 warm-up | |`,
    '|---|---|---|',
    `| medllava vision.encode (tower + projector, pixels in) | ${fmtStat(tower, 2)} | ${rate(tower.median, peak)} |`,
    `| medllava encodeImage (336 px PNG: decode + preprocess + tower + projector) | ${fmtStat(fromPng, 2)} | |`,
    `| llama.cpp mtmd via @fugood/llama.node ${pins['@fugood/llama.node'] ?? ''} — **SSE-only build (its linux-x64 binary has no AVX instructions): a correctness peer, not a speed comparison** | ${fmtStat(stat(mtmd), 2)} | image prompt (${warm.prompt_n} positions) minus text prompt (${warmText.prompt_n}) |`,
  ];
}

async function main() {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  console.log(`medllava bench — end to end (${new Date().toISOString()}), ${cpu}, ${threads} threads (${getBackendInfo().cpu.dispatch} kernels), ` +
    `prefill ${PREFILL}, decode ${DECODE}, ${RUNS} runs per side, node-llama-cpp ${pins['node-llama-cpp'] ?? '?'}`);
  const policy = [
    `each run in a fresh process; ${RUNS} interleaved rounds, the order of ${SIDES.map((s) => s.name).join(' / ')} rotated each round; median [min–max] per side`,
    'page cache: before every run the model file is read through once, untimed, so both sides start warm',
    'load (timed): reads every weight byte on both sides — llama.cpp mmap + MAP_POPULATE (its Linux default) + createContext; ' +
      "medllava loadModel's prefetch read-through of the LLM file + loadLlm + createContext",
    'decode: greedy argmax over the logits fed back as the next token on both sides',
    `llama.cpp flash attention: ${THEIRS.map((s) => s.fa).join(' and ')}${THEIRS.length > 1 ? ', each in its own runs; the better median per metric is reported' : ''}`,
    'memory: RssAnon / RssFile from /proc/self/status (max of after-load, after-prefill, after-decode samples), peak = VmHWM',
  ];
  for (const p of policy) console.log(`policy: ${p}`);
  if (RUNS < 5) console.log(`note: BENCH_RUNS=${RUNS} (< 5): a smoke run, not the figure to publish`);

  await fixtures();
  peersDir(); // install the pinned peers now, not inside the first llama.cpp run
  const before = await roofline();
  console.log(`roofline (measured now): DRAM read ${before.bw.toFixed(1)} GB/s, fp32 FMA ${before.peak.toFixed(1)} GFLOP/s`);

  // correctness at real size first: a speed figure of a wrong engine means nothing
  const correctness: string[] = ['| type | max abs Δ log p vs llama.cpp (tokens p > 1e-4) | top-10 overlap | greedy tokens equal (of 16) |', '|---|---|---|---|'];
  for (const type of TYPES) {
    const c = await realSizeCheck(llmFile(type).file, threads);
    console.log(`correctness ${type}: max |Δ log p| ${c.maxAbsLogp.toExponential(2)} over ${c.compared} tokens, top-10 overlap ` +
      `${c.top10Overlap}/10, greedy equal for ${c.greedyEqual}/16 (ours: ${c.greedy.join(' ')})`);
    correctness.push(`| ${type} | ${c.maxAbsLogp.toExponential(2)} (${c.compared}) | ${c.top10Overlap}/10 | ${c.greedyEqual} |`);
  }

  const results: TypeResult[] = [];
  for (const type of TYPES) results.push(await llmBench(type));
  // a failure here must not lose the LLM runs above: it is reported in place of the image table
  const image = IMAGE
    ? await imageBench().catch((e: unknown) => () => [`image encode failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}`])
    : undefined;

  const after = await roofline();
  console.log(`roofline (measured again): DRAM read ${after.bw.toFixed(1)} GB/s, fp32 FMA ${after.peak.toFixed(1)} GFLOP/s`);
  // the higher of the two measurements: a roofline is an upper bound, so the shares stay conservative
  const bw = Math.max(before.bw, after.bw);
  const peak = Math.max(before.peak, after.peak);

  console.log('');
  console.log(`TinyLlama-1.1B shape (random weights), ${cpu}, ${threads} threads, ${RUNS} runs per side, ` +
    `DRAM read ${bw.toFixed(1)} GB/s, fp32 FMA ${peak.toFixed(1)} GFLOP/s (best of start / end of this run)`);
  for (const p of policy) console.log(`- ${p}`);
  console.log('');
  console.log('Correctness at this size (next token after a 64-token prompt, then 16 greedy steps, same GGUF):');
  for (const l of correctness) console.log(l);
  console.log('');
  for (const l of llmTable(results, bw)) console.log(l);
  const fa = faTable(results);
  if (fa.length) {
    console.log('');
    for (const l of fa) console.log(l);
  }
  console.log('');
  console.log('Ratios: > 1 is better for tok/s, < 1 is better for ms and MiB. Decode roofline share: median tok/s × bytes streamed ' +
    'per token (the file minus the token-embedding table, of which a step reads one row) / the DRAM read bandwidth.');
  if (image) {
    console.log('');
    for (const l of image(peak)) console.log(l);
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
