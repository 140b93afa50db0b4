/**
 * Correctness at real size: the TinyLlama-1.1B-shaped file (hidden 2048, ffn 5632, vocab 32000,
 * head_dim 64 — sizes that trigger K-blocking, the lm_head split across threads, chunked prefill)
 * against llama.cpp on the same GGUF: the next-token distribution after a 64-token prompt (max
 * |Δ log p| over the tokens llama.cpp gives p > 1e-4, top-10 overlap) and 16 greedy tokens.
 * Run by `npm run bench` on each benched type; `node dist/bench/correctness.js FILE` runs one.
 */
import { loadModelSpec } from '../lib/index.js';
import { loadLlm } from '../lib/model/llm.js';
import { llamaCppNext, logpGap } from '../test/support/llama-cpp.js';
import { logSoftmax } from '../test/support/reference.js';

export interface RealSizeResult { maxAbsLogp: number; compared: number; top10Overlap: number; greedyEqual: number; greedy: number[] }

const argmax = (x: ArrayLike<number>) => {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
};

export async function realSizeCheck(file: string, threads: number): Promise<RealSizeResult> {
  const prompt = [1, ...Array.from({ length: 63 }, (_, i) => 100 + ((i * 7919) % 31000))];
  const G = 16;
  // ours: the prompt's last logits, then G greedy steps
  const llm = await loadLlm(await loadModelSpec(file));
  const ctx = llm.createContext({ capacity: prompt.length + G + 1 });
  let logits = await ctx.eval(Int32Array.from(prompt));
  const ours = logSoftmax(logits);
  const greedy: number[] = [];
  for (let i = 0; i < G; i++) {
    greedy.push(argmax(logits));
    logits = await ctx.eval(Int32Array.of(greedy.at(-1)!));
  }
  ctx.dispose();
  llm.dispose();
  // llama.cpp
  const { probs, greedy: theirs } = await llamaCppNext(file, prompt, { threads, greedy: G });
  const { worst, compared } = logpGap(probs, ours);
  const top = (entries: [number, number][]) => new Set(entries.sort((a, b) => b[1] - a[1]).slice(0, 10).map(([id]) => id));
  const theirTop = top([...probs.entries()]);
  const ourTop = top(Array.from(ours, (v, i) => [i, v] as [number, number]));
  let overlap = 0;
  for (const id of ourTop) if (theirTop.has(id)) overlap++;
  let equal = 0;
  while (equal < G && greedy[equal] === theirs[equal]) equal++;
  return { maxAbsLogp: worst, compared, top10Overlap: overlap, greedyEqual: equal, greedy };
}

if (process.argv[1]?.endsWith('correctness.js') && process.argv[2]) {
  const r = await realSizeCheck(process.argv[2], Number(process.argv[3] ?? 2));
  console.log(JSON.stringify(r));
}
