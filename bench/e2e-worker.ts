/**
 * One measurement in a fresh process (so its peak RSS is its own):
 *   node dist/bench/e2e-worker.js medllava|llama.cpp <model.gguf> <prefill tokens> <decode tokens> <threads>
 * prints { loadMs, prefillTps, decodeTps, maxRssMiB } as JSON.
 */
import { loadModelSpec } from '../lib/index.js';
import { loadLlm } from '../lib/model/llm.js';
import { native } from '../lib/native.js';
import { importPeer } from '../test/support/peers.js';

const [engine, path, prefillArg, decodeArg, threadsArg] = process.argv.slice(2);
const P = Number(prefillArg);
const G = Number(decodeArg);
const threads = Number(threadsArg);
const prompt = Array.from({ length: P }, (_, i) => 300 + ((i * 7919) % 20000));

async function ours() {
  native().setThreads(threads);
  const t0 = performance.now();
  const llm = await loadLlm(await loadModelSpec(path!), { contextLength: P + G + 8 });
  const ctx = llm.createContext();
  const loadMs = performance.now() - t0;
  const t1 = performance.now();
  await ctx.eval(Int32Array.from(prompt));
  const prefill = performance.now() - t1;
  const t2 = performance.now();
  for (let i = 0; i < G; i++) await ctx.eval(Int32Array.from([500 + i]));
  const decode = performance.now() - t2;
  return { loadMs, prefillTps: (P / prefill) * 1000, decodeTps: (G / decode) * 1000 };
}

interface Nlc {
  getLlama(o: object): Promise<{ loadModel(o: object): Promise<{ createContext(o: object): Promise<{ getSequence(): {
    evaluateWithoutGeneratingNewTokens(t: number[]): Promise<void>; evaluate(t: number[], o: object): AsyncIterable<number> } }> }> }>;
  LlamaLogLevel: { error: unknown };
}

async function llamaCpp() {
  const nlc = await importPeer<Nlc>('node-llama-cpp', 'dist/index.js');
  const llama = await nlc.getLlama({ gpu: false, build: 'never', logLevel: nlc.LlamaLogLevel.error });
  const t0 = performance.now();
  const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
  const ctx = await model.createContext({ contextSize: P + G + 64, batchSize: P, threads });
  const seq = ctx.getSequence();
  const loadMs = performance.now() - t0;
  const t1 = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(prompt);
  const prefill = performance.now() - t1;
  const t2 = performance.now();
  let n = 0;
  for await (const _ of seq.evaluate([500], { temperature: 0 })) {
    if (++n >= G) break;
  }
  const decode = performance.now() - t2;
  return { loadMs, prefillTps: (P / prefill) * 1000, decodeTps: (n / decode) * 1000 };
}

const r = engine === 'medllava' ? await ours() : await llamaCpp();
process.stdout.write(`${JSON.stringify({ ...r, maxRssMiB: process.resourceUsage().maxRSS / 1024 })}\n`);
process.exit(0);
