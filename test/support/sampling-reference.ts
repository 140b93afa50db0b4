/**
 * The sampler as medllava's TypeScript once ran it (before sampling moved to native/cpu/sample.cc):
 * an independent implementation in another language, kept as the reference the native sampler is
 * checked against draw for draw (same mulberry32 stream, same float64 arithmetic).
 */
import { SeededRandom, type SamplingOptions } from '../../lib/sampling.js';

export interface Choice {
  token: number;
  /** log-probability of the chosen token under the model's own (untempered, unfiltered) distribution */
  logprob: number;
}

export function referenceSample(logits: Float32Array, o: SamplingOptions, history: readonly number[], rng: SeededRandom): Choice {
  const V = logits.length;
  const x = Float64Array.from(logits);
  // log-softmax of the raw logits, for the reported log-probability
  let m = -Infinity;
  for (let i = 0; i < V; i++) m = Math.max(m, x[i]!);
  let z = 0;
  for (let i = 0; i < V; i++) z += Math.exp(x[i]! - m);
  const lse = m + Math.log(z);
  const rp = o.repetitionPenalty ?? 1;
  if (rp !== 1) {
    for (const t of new Set(history)) {
      if (t >= 0 && t < V) x[t] = x[t]! > 0 ? x[t]! / rp : x[t]! * rp;
    }
  }
  const temperature = o.temperature ?? 0;
  let choice: number;
  if (temperature === 0) {
    choice = 0;
    for (let i = 1; i < V; i++) if (x[i]! > x[choice]!) choice = i;
  } else {
    let ids = Array.from({ length: V }, (_, i) => i).sort((a, b) => x[b]! - x[a]! || a - b);
    if (o.topK && o.topK > 0) ids = ids.slice(0, o.topK);
    const softmax = (list: number[], t: number) => {
      const top = x[list[0]!]!;
      const e = list.map((i) => Math.exp((x[i]! - top) / t));
      const s = e.reduce((a, b) => a + b, 0);
      return e.map((v) => v / s);
    };
    if (o.topP !== undefined && o.topP < 1) {
      const p = softmax(ids, 1);
      let acc = 0;
      let keep = ids.length;
      for (let i = 0; i < ids.length; i++) {
        acc += p[i]!;
        if (acc >= o.topP) { keep = i + 1; break; }
      }
      ids = ids.slice(0, keep);
    }
    if (o.minP !== undefined && o.minP > 0) {
      const p = softmax(ids, 1);
      ids = ids.filter((_, i) => p[i]! >= o.minP! * p[0]!);
    }
    const p = softmax(ids, temperature);
    let r = rng.next();
    choice = ids[ids.length - 1]!;
    for (let i = 0; i < ids.length; i++) {
      r -= p[i]!;
      if (r < 0) { choice = ids[i]!; break; }
    }
  }
  return { token: choice, logprob: logits[choice]! - lse };
}
