/**
 * One measurement in a fresh process (so its memory is its own):
 *   node dist/bench/e2e-worker.js medllava|llama.cpp <model.gguf> <prefill tokens> <decode tokens> <threads> [on|off]
 * (the last argument: llama.cpp's flash attention) prints one line of JSON, a WorkerResult.
 *
 * The same work on both sides, timed the same way:
 * - load: from nothing to a context ready for the prompt, reading every weight byte of the LLM
 *   file (the parent has read the file through once before this process started, untimed, so both
 *   sides find it in the page cache). llama.cpp: mmap with MAP_POPULATE (its default on Linux:
 *   llama_model_loader::init_mappings(prefetch = true) → llama_mmap adds MAP_POPULATE) + its CPU
 *   repack + createContext (which allocates the KV cache). medllava: loadModel's prefetch step (the
 *   file read through in 8 MiB chunks, what `loadModel(path, { prefetch: true })` does) on the LLM
 *   file only, then loadLlm + createContext — the LLM half of loadModel; loadModel itself would also
 *   read and load the mmproj and the vision tower, which llama.cpp's loadModel does not.
 * - prefill: the same P token ids in one call. medllava's first eval also allocates its KV cache
 *   and computes the last position's logits (llama.cpp: neither — both against us, both small).
 * - decode: G steps, each evaluating one token, taking the greedy argmax over the full vocabulary's
 *   logits and feeding it back — node-llama-cpp's evaluate() at temperature 0 runs llama.cpp's
 *   greedy sampler (an O(vocab) pass over every logit), we run an O(vocab) argmax in JS over the
 *   logits eval returns. yieldEogToken keeps llama.cpp going when the random model's argmax is the
 *   EOS id (it would stop early otherwise); both sides start from token 500.
 * - memory: RssAnon / RssFile from /proc/self/status after load, after prefill and after decode
 *   (the max of each), and VmHWM (the kernel's peak of their sum, incl. transient buffers). Ours
 *   includes the 8 MiB read-through buffer (until it is collected); RssFile counts the pages of the
 *   mapped weight file this process has touched (llama.cpp: all, by MAP_POPULATE).
 */
import { readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';

import { loadModelSpec } from '../lib/index.js';
import { loadLlm } from '../lib/model/llm.js';
import { native } from '../lib/native.js';
import { importPeer } from '../test/support/peers.js';

export interface WorkerResult {
  loadMs: number;
  prefillTps: number;
  decodeTps: number;
  /** tokens decoded (= G) */
  decodeTokens: number;
  /** VmHWM: peak resident set of the process */
  peakRssMiB: number;
  /** max of RssAnon / RssFile sampled after load, after prefill, after decode */
  rssAnonMiB: number;
  rssFileMiB: number;
  /** llama.cpp only: the flash-attention setting asked for */
  flashAttention?: boolean;
}

const [engine, path, prefillArg, decodeArg, threadsArg, faArg] = process.argv.slice(2);
const P = Number(prefillArg);
const G = Number(decodeArg);
const threads = Number(threadsArg);
const prompt = Array.from({ length: P }, (_, i) => 300 + ((i * 7919) % 20000));

/** Resident memory by kind (MiB) from /proc/self/status; NaN where there is no /proc. */
function memory(): { anon: number; file: number; hwm: number } {
  let s = '';
  try {
    s = readFileSync('/proc/self/status', 'utf8');
  } catch {
    // not Linux
  }
  const mib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) / 1024;
  return { anon: mib('RssAnon'), file: mib('RssFile'), hwm: mib('VmHWM') };
}
const samples: { anon: number; file: number; hwm: number }[] = [];
const sample = () => { samples.push(memory()); };

/** loadModel's prefetch: the file read through in 8 MiB chunks (lib/model/model.ts prefetchFiles). */
async function readThrough(file: string): Promise<void> {
  const buf = Buffer.allocUnsafe(8 << 20);
  const fh = await open(file, 'r');
  try {
    while ((await fh.read(buf, 0, buf.length, null)).bytesRead > 0) { /* page cache → buffer */ }
  } finally {
    await fh.close();
  }
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

async function ours(): Promise<Omit<WorkerResult, 'peakRssMiB' | 'rssAnonMiB' | 'rssFileMiB'>> {
  native().setThreads(threads);
  const capacity = P + G + 8;
  const t0 = performance.now();
  const spec = await loadModelSpec(path!);
  await readThrough(path!);
  const llm = await loadLlm(spec, { contextLength: capacity });
  const ctx = llm.createContext({ capacity });
  const loadMs = performance.now() - t0;
  sample();
  const t1 = performance.now();
  await ctx.eval(Int32Array.from(prompt));
  const prefill = performance.now() - t1;
  sample();
  // greedy, like llama.cpp's evaluate() at temperature 0: argmax of each step's logits is the next input
  let token = 500;
  const t2 = performance.now();
  for (let i = 0; i < G; i++) token = argmax(await ctx.eval(Int32Array.of(token)));
  const decode = performance.now() - t2;
  sample();
  return { loadMs, prefillTps: (P / prefill) * 1000, decodeTps: (G / decode) * 1000, decodeTokens: G };
}

interface NlcSequence {
  evaluateWithoutGeneratingNewTokens(t: number[]): Promise<void>;
  evaluate(t: number[], o: object): AsyncGenerator<number, void, void | number | number[]>;
}
interface Nlc {
  getLlama(o: object): Promise<{ loadModel(o: object): Promise<{
    createContext(o: object): Promise<{ getSequence(): NlcSequence }> }> }>;
  LlamaLogLevel: { error: unknown };
}

async function llamaCpp(): Promise<Omit<WorkerResult, 'peakRssMiB' | 'rssAnonMiB' | 'rssFileMiB'>> {
  if (faArg !== 'on' && faArg !== 'off') throw new Error(`llama.cpp needs a flash-attention argument on|off, got ${String(faArg)}`);
  const flashAttention = faArg === 'on';
  const nlc = await importPeer<Nlc>('node-llama-cpp', 'dist/index.js');
  const llama = await nlc.getLlama({ gpu: false, build: 'never', logLevel: nlc.LlamaLogLevel.error, maxThreads: threads });
  const t0 = performance.now();
  // useMmap default: mmap + MAP_POPULATE (reads every page of the file into this process's mapping)
  const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
  const ctx = await model.createContext({ contextSize: P + G + 64, batchSize: P, threads: { ideal: threads, min: threads },
    flashAttention });
  const seq = ctx.getSequence();
  const loadMs = performance.now() - t0;
  sample();
  const t1 = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(prompt);
  const prefill = performance.now() - t1;
  sample();
  // temperature 0 → llama.cpp's greedy sampler; each yielded token is fed back as the next input
  let n = 0;
  const t2 = performance.now();
  for await (const _ of seq.evaluate([500], { temperature: 0, yieldEogToken: true })) {
    if (++n >= G) break;
  }
  const decode = performance.now() - t2;
  sample();
  return { loadMs, prefillTps: (P / prefill) * 1000, decodeTps: (n / decode) * 1000, decodeTokens: n, flashAttention };
}

const r = engine === 'medllava' ? await ours() : await llamaCpp();
const m = memory();
const result: WorkerResult = {
  ...r,
  peakRssMiB: Number.isFinite(m.hwm) ? m.hwm : process.resourceUsage().maxRSS / 1024,
  rssAnonMiB: Math.max(...samples.map((s) => s.anon)),
  rssFileMiB: Math.max(...samples.map((s) => s.file)),
};
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);
