/**
 * What the native sampler (native/cpu/sample.cc, run after every forward) does, shown on hand-made logits:
 * greedy argmax and its tie rule, top-k, top-p (and its boundary rule), min-p, temperature
 * (chi-square goodness of fit against softmax(logits / T), with a negative control), the chain
 * order (penalty → top-k → top-p → min-p → temperature), CTRL's repetition-penalty sign rule,
 * the reported log-probability, and the option checks of validateSampling.
 *
 * Every expected value is computed here with plain float64 math from the logits, never by calling
 * sampling internals. Draws use SeededRandom with fixed seeds, so every test is deterministic; the
 * chi-square bounds say how unlikely a failure would be if the sampler were right.
 */
import { describe, expect, it } from 'vitest';

import { native } from '../../lib/native.js';
import { SeededRandom, validateSampling, type SamplingOptions } from '../../lib/sampling.js';
import { referenceSample } from '../support/sampling-reference.js';

/** The native sampler (native/cpu/sample.cc, what every eval step runs) on one row of logits,
 * drawing from `rng`'s mulberry32 state and advancing it as the native side does. */
function sample(logits: Float32Array, o: SamplingOptions, history: readonly number[], rng: SeededRandom) {
  const { seed: _seed, ...sampling } = o;
  const r = native().sampleLogits(logits, sampling, Int32Array.from(history), rng.state);
  rng.state = r.rngState;
  return r;
}

// ---------------------------------------------------------------------------------------------
// helpers (float64, independent of lib/sampling.ts)

/** softmax(logits / T) in float64 over the given token ids (all tokens when `ids` is omitted) */
function softmax(logits: ArrayLike<number>, T = 1, ids?: readonly number[]): Map<number, number> {
  const list = ids ?? Array.from({ length: logits.length }, (_, i) => i);
  let m = -Infinity;
  for (const i of list) m = Math.max(m, logits[i]!);
  const e = list.map((i) => Math.exp((logits[i]! - m) / T));
  const s = e.reduce((a, b) => a + b, 0);
  return new Map(list.map((i, k) => [i, e[k]! / s]));
}

/** token ids sorted by logit, largest first */
function byLogit(logits: ArrayLike<number>): number[] {
  return Array.from({ length: logits.length }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]!);
}

/** how often each token is drawn in `n` seeded draws */
function draw(logits: Float32Array, o: SamplingOptions, n: number, seed: number, history: readonly number[] = []): number[] {
  const rng = new SeededRandom(seed);
  const counts = new Array<number>(logits.length).fill(0);
  for (let k = 0; k < n; k++) counts[sample(logits, o, history, rng).token]!++;
  return counts;
}

/** the set of tokens drawn at least once */
function seen(counts: readonly number[]): number[] {
  return counts.flatMap((c, i) => (c > 0 ? [i] : []));
}

/**
 * Pearson's chi-square statistic of `counts` against `expected` probabilities. Tokens outside
 * `expected` must never have been drawn (a draw there is an infinite misfit: returned as Infinity).
 */
function chiSquare(counts: readonly number[], expected: Map<number, number>): number {
  const n = counts.reduce((a, b) => a + b, 0);
  let stat = 0;
  counts.forEach((c, i) => {
    const p = expected.get(i) ?? 0;
    if (p === 0) { if (c > 0) stat = Infinity; return; }
    stat += (c - n * p) ** 2 / (n * p);
  });
  return stat;
}

/**
 * Upper 0.1 % points of the chi-square distribution (the 99.9 % quantiles), from the standard
 * table (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.4, or R's qchisq(0.999, df)); checked against the
 * incomplete gamma function below. A right sampler fails a given test with probability 0.001.
 */
const CHI2_999: Record<number, number> = { 1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515, 6: 22.458 };

/** P(X > x) for X ~ chi-square(df), by the series of the regularised lower incomplete gamma function */
function chiSquareTail(x: number, df: number): number {
  const a = df / 2;
  const h = x / 2;
  // Γ(a + 1) for a a multiple of 1/2
  let gamma = Number.isInteger(a) ? 1 : Math.sqrt(Math.PI) / 2; // Γ(1) or Γ(3/2)
  for (let s = Number.isInteger(a) ? 1 : 1.5; s < a + 1 - 1e-9; s++) gamma *= s;
  let term = 1;
  let sum = 1;
  for (let k = 1; k < 1000; k++) { term *= h / (a + k); sum += term; if (term < 1e-17 * sum) break; }
  return 1 - (Math.exp(a * Math.log(h) - h) / gamma) * sum;
}

const stats: string[] = [];
function expectFits(label: string, counts: readonly number[], expected: Map<number, number>): number {
  const df = expected.size - 1;
  const stat = chiSquare(counts, expected);
  stats.push(`${label}: chi2 = ${stat.toFixed(3)} (df ${df}, 99.9% critical ${CHI2_999[df]})`);
  if (process.env.SAMPLING_TEST_VERBOSE) console.log(stats[stats.length - 1]);
  expect(stat, label).toBeLessThan(CHI2_999[df]!);
  return stat;
}
function expectMisfit(label: string, counts: readonly number[], expected: Map<number, number>): number {
  const df = expected.size - 1;
  const stat = chiSquare(counts, expected);
  stats.push(`${label}: chi2 = ${stat.toFixed(3)} (df ${df}, must exceed ${CHI2_999[df]})`);
  if (process.env.SAMPLING_TEST_VERBOSE) console.log(stats[stats.length - 1]);
  expect(stat, label).toBeGreaterThan(CHI2_999[df]!);
  return stat;
}

const f32 = (xs: readonly number[]) => Float32Array.from(xs);
const logOf = (ps: readonly number[]) => f32(ps.map(Math.log));

// ---------------------------------------------------------------------------------------------

describe('the chi-square table used below', () => {
  it('holds the 99.9 % quantiles (tail probability 0.001 at each critical value)', () => {
    for (const [df, crit] of Object.entries(CHI2_999)) {
      expect(chiSquareTail(crit, Number(df))).toBeCloseTo(0.001, 5);
    }
    // and the tail function itself is right where it has a closed form: df 2 is Exp(1/2)
    expect(chiSquareTail(3, 2)).toBeCloseTo(Math.exp(-1.5), 12);
  });
});

describe('greedy', () => {
  const logits = f32([0.5, -1, 3.25, 3.0, 2.9, -7]);

  it('temperature 0 and temperature undefined pick the argmax', () => {
    expect(byLogit(logits)[0]).toBe(2);
    expect(sample(logits, { temperature: 0 }, [], new SeededRandom(1)).token).toBe(2);
    expect(sample(logits, {}, [], new SeededRandom(1)).token).toBe(2);
  });

  it('ignores top-k / top-p / min-p and does not advance the random generator', () => {
    const rng = new SeededRandom(7);
    const t = sample(logits, { temperature: 0, topK: 1, topP: 0.1, minP: 0.9, seed: 3 }, [], rng);
    expect(t.token).toBe(2);
    // the generator is where a fresh one with the same seed is
    expect(rng.next()).toBe(new SeededRandom(7).next());
  });

  it('ties: the lowest token id among the tied maxima wins', () => {
    // documented behaviour: the scan keeps the first maximum (strict >), so ties go to the lowest id
    expect(sample(f32([1, 4, 0, 4, 4]), {}, [], new SeededRandom(1)).token).toBe(1);
    expect(sample(f32([9, 9]), {}, [], new SeededRandom(1)).token).toBe(0);
    expect(sample(f32([0, 0, 0, 0]), { temperature: 0 }, [], new SeededRandom(1)).token).toBe(0);
  });

  it('a sampled draw with top-k 1 is the argmax, ties again to the lowest id', () => {
    expect(seen(draw(logits, { temperature: 1.3, topK: 1 }, 200, 5))).toEqual([2]);
    expect(seen(draw(f32([1, 4, 0, 4, 4]), { temperature: 1.3, topK: 1 }, 200, 5))).toEqual([1]);
  });
});

describe('top-k', () => {
  // the 3 largest are tokens 1, 5, 3 (not the first ids); token 6 is only a hair behind them
  const logits = f32([0.1, 2.0, -0.5, 1.9, 0.3, 1.95, 1.85, -1, 0, 0.5]);

  it('k = 3: only the 3 largest-logit tokens ever appear, and all 3 appear', () => {
    expect(byLogit(logits).slice(0, 3).sort()).toEqual([1, 3, 5]);
    const counts = draw(logits, { temperature: 1, topK: 3 }, 5000, 11);
    expect(seen(counts)).toEqual([1, 3, 5]);
  });

  it('negative control: without top-k the 4th (and others) do appear', () => {
    const counts = draw(logits, { temperature: 1 }, 5000, 11);
    expect(counts[6]).toBeGreaterThan(100);
    expect(seen(counts).length).toBe(10);
  });

  it('k larger than the vocabulary or 0 means no cut', () => {
    expect(seen(draw(logits, { temperature: 1, topK: 50 }, 5000, 12)).length).toBe(10);
    expect(seen(draw(logits, { temperature: 1, topK: 0 }, 5000, 12)).length).toBe(10);
  });
});

describe('top-p', () => {
  // Rule used by the code: walk the tokens by decreasing probability (at temperature 1, over what
  // top-k left), accumulate, and keep the smallest prefix whose cumulative probability is ≥ topP:
  // the token that makes the sum reach topP is kept, an exact hit included.

  it('probabilities [0.5, 0.3, 0.15, 0.05], topP 0.8: keeps exactly {0, 1}', () => {
    const logits = logOf([0.5, 0.3, 0.15, 0.05]);
    // from float32 logits the cumulative sum is 0.8 only to ~1e-8: show where it lands
    const p = softmax(logits);
    const cum2 = p.get(0)! + p.get(1)!;
    expect(Math.abs(cum2 - 0.8)).toBeLessThan(1e-8);
    expect(cum2).toBeGreaterThanOrEqual(0.8);
    const counts = draw(logits, { temperature: 1, topP: 0.8 }, 4000, 21);
    // both kept tokens appear (a rule one token short would give {0}), token 2 never does (one too long)
    expect(seen(counts)).toEqual([0, 1]);
    expectFits('top-p 0.8 on [.5,.3,.15,.05], T=1', counts, softmax(logits, 1, [0, 1]));
  });

  it('same logits, topP just above / below a cumulative sum: 0.81 keeps {0,1,2}, 0.79 keeps {0,1}, 0.5 keeps {0}', () => {
    const logits = logOf([0.5, 0.3, 0.15, 0.05]);
    expect(seen(draw(logits, { temperature: 1, topP: 0.81 }, 4000, 22))).toEqual([0, 1, 2]);
    expect(seen(draw(logits, { temperature: 1, topP: 0.79 }, 4000, 22))).toEqual([0, 1]);
    expect(seen(draw(logits, { temperature: 1, topP: 0.49 }, 4000, 22))).toEqual([0]);
    expect(seen(draw(logits, { temperature: 1, topP: 0.51 }, 4000, 22))).toEqual([0, 1]);
    expect(seen(draw(logits, { temperature: 1, topP: 1 }, 4000, 22))).toEqual([0, 1, 2, 3]);
  });

  it('exact boundary hit (probabilities exactly 1/4 each): topP 0.5 keeps 2 tokens, 0.75 keeps 3', () => {
    // equal logits: exp(0) = 1, each probability is exactly 0.25 and every cumulative sum is exact;
    // equal logits are ordered by token id, so the kept prefix is {0, 1} / {0, 1, 2}
    const logits = f32([1.5, 1.5, 1.5, 1.5]);
    // ≥ keeps the token that reaches 0.5 exactly; a strict > would also keep token 2
    expect(seen(draw(logits, { temperature: 1, topP: 0.5 }, 4000, 23))).toEqual([0, 1]);
    expect(seen(draw(logits, { temperature: 1, topP: 0.75 }, 4000, 23))).toEqual([0, 1, 2]);
    expect(seen(draw(logits, { temperature: 1, topP: 0.25 }, 4000, 23))).toEqual([0]);
    // just past an exact sum takes one more
    expect(seen(draw(logits, { temperature: 1, topP: 0.5000001 }, 4000, 23))).toEqual([0, 1, 2]);
  });

  it('works on probabilities at temperature 1, not on tempered ones', () => {
    // at T = 3 the tempered probabilities of [.5,.3,.15,.05] are ∝ p^(1/3): [.37,.31,.25,.15]
    // (cumulative .37, .68, ...), so a tempered top-p 0.8 would keep 3 tokens; the code keeps 2
    const logits = logOf([0.5, 0.3, 0.15, 0.05]);
    const pt = softmax(logits, 3);
    expect(pt.get(0)! + pt.get(1)!).toBeLessThan(0.79);
    expect(seen(draw(logits, { temperature: 3, topP: 0.8 }, 4000, 24))).toEqual([0, 1]);
  });
});

describe('min-p', () => {
  // probabilities relative to the largest: 1, 0.5, 0.25, 0.21, 0.19, 0.1 (shuffled over the ids)
  const rel = [0.25, 1, 0.19, 0.5, 0.1, 0.21];
  const logits = logOf(rel);

  it('minP 0.2 keeps the tokens with p ≥ 0.2 · pmax only', () => {
    const p = softmax(logits);
    const pmax = Math.max(...p.values());
    const keep = [...p.entries()].filter(([, q]) => q >= 0.2 * pmax).map(([i]) => i).sort();
    expect(keep).toEqual([0, 1, 3, 5]);
    const counts = draw(logits, { temperature: 1, minP: 0.2 }, 8000, 31);
    expect(seen(counts)).toEqual(keep);
    expectFits('min-p 0.2, T=1', counts, softmax(logits, 1, keep));
  });

  it('minP 0.18 also keeps the 0.19 token; minP 0.22 drops the 0.21 one', () => {
    expect(seen(draw(logits, { temperature: 1, minP: 0.18 }, 8000, 32))).toEqual([0, 1, 2, 3, 5]);
    expect(seen(draw(logits, { temperature: 1, minP: 0.22 }, 8000, 32))).toEqual([0, 1, 3]);
  });

  it('compares probabilities at temperature 1, before temperature is applied', () => {
    // at T = 3 the 0.19 token's tempered ratio is 0.19^(1/3) ≈ 0.57, which a tempered min-p would keep
    expect(seen(draw(logits, { temperature: 3, minP: 0.2 }, 8000, 33))).toEqual([0, 1, 3, 5]);
  });
});

describe('temperature', () => {
  const logits = f32([0.3, 1.2, -1.4, 0.8, -0.6, -0.1]);
  const N = 20000;

  for (const T of [0.7, 1.5]) {
    it(`T = ${T}: frequencies over ${N} draws fit softmax(logits / T) (chi-square, df 5, 0.1 %); T = 1 does not`, () => {
      const counts = draw(logits, { temperature: T }, N, 41);
      expectFits(`temperature ${T} vs softmax(logits/${T})`, counts, softmax(logits, T));
      // negative control: the very same frequencies against the untempered distribution
      expectMisfit(`temperature ${T} vs softmax(logits) (negative control)`, counts, softmax(logits, 1));
    });
  }

  it('T = 1 fits softmax(logits), and a different seed gives a different sample that fits too', () => {
    const a = draw(logits, { temperature: 1 }, N, 42);
    const b = draw(logits, { temperature: 1 }, N, 43);
    expect(a).not.toEqual(b);
    expectFits('temperature 1 seed 42', a, softmax(logits, 1));
    expectFits('temperature 1 seed 43', b, softmax(logits, 1));
  });
});

describe('the chain', () => {
  it('top-k 3 + temperature 0.8: frequencies fit softmax over the 3 kept tokens, renormalised', () => {
    const logits = f32([0.1, 2.0, -0.5, 1.4, 0.3, 0.8, 0.6, -1, 0, 0.5]);
    const kept = byLogit(logits).slice(0, 3);
    expect([...kept].sort()).toEqual([1, 3, 5]);
    const counts = draw(logits, { temperature: 0.8, topK: 3 }, 20000, 51);
    expectFits('top-k 3 + T 0.8', counts, softmax(logits, 0.8, kept));
    expectMisfit('top-k 3 + T 0.8 vs T 1 (negative control)', counts, softmax(logits, 1, kept));
  });

  it('top-k 5 → top-p 0.82 (on the renormalised top 5) → temperature 1.5: 3 tokens, tempered', () => {
    // probabilities .40 .25 .15 .10 .05 .03 .02 on shuffled ids
    const ps = [0.03, 0.15, 0.4, 0.02, 0.1, 0.25, 0.05];
    const logits = logOf(ps);
    const order = byLogit(logits); // [2, 5, 1, 4, 6, 0, 3]
    // after top-k 5 the renormalised cumulative sums are .421 .684 .842 .947 1 → top-p 0.82 keeps 3.
    // Top-p over the full distribution (.40 .65 .80 .90) would keep 4; so would a top-p applied after
    // temperature 1.5 (p^(2/3) over the top 5: cumulative .345 .597 .777 .914): both wrong orders fail.
    const top5 = softmax(logits, 1, order.slice(0, 5));
    const cum: number[] = [];
    let acc = 0;
    for (const i of order.slice(0, 5)) cum.push((acc += top5.get(i)!));
    expect(cum[1]).toBeLessThan(0.82);
    expect(cum[2]).toBeGreaterThanOrEqual(0.82);
    const kept = order.slice(0, 3);
    const counts = draw(logits, { temperature: 1.5, topK: 5, topP: 0.82 }, 20000, 52);
    expect(seen(counts)).toEqual([...kept].sort());
    expectFits('top-k 5 + top-p 0.82 + T 1.5', counts, softmax(logits, 1.5, kept));
  });

  it('repetition penalty comes first and changes the sampled distribution', () => {
    // token 0 (positive) and token 2 (negative) are in the history, penalty 1.5:
    // effective logits [1/1.5, 0.5, -0.5·1.5] = [0.667, 0.5, -0.75]
    const logits = f32([1, 0.5, -0.5]);
    const counts = draw(logits, { temperature: 1, repetitionPenalty: 1.5 }, 20000, 53, [0, 2, 2]);
    const eff = [Math.fround(1) / 1.5, Math.fround(0.5), Math.fround(-0.5) * 1.5];
    expectFits('penalty 1.5 on {0,2}, T=1', counts, softmax(eff, 1));
    expectMisfit('penalty 1.5 vs unpenalised (negative control)', counts, softmax(logits, 1));
  });
});

describe('repetition penalty (CTRL sign rule), seen through greedy choices', () => {
  const pick = (xs: number[], history: number[], repetitionPenalty?: number) =>
    sample(f32(xs), { temperature: 0, repetitionPenalty }, history, new SeededRandom(1)).token;

  it('a positive logit in the history is divided: [2.0, 1.9], token 0 seen, 1.1 → 1.818 < 1.9, token 1 wins', () => {
    expect(pick([2.0, 1.9], [0], 1.1)).toBe(1);
    expect(pick([2.0, 1.9], [], 1.1)).toBe(0); // negative control: no history
    expect(pick([2.0, 1.9], [0])).toBe(0); // negative control: no penalty
  });

  it('a negative logit in the history is multiplied: [-1.0, -1.05], token 0 seen, 1.1 → -1.1 < -1.05, token 1 wins', () => {
    // dividing instead (-1.0 / 1.1 = -0.909) would make token 0 *more* likely and keep it on top
    expect(pick([-1.0, -1.05], [0], 1.1)).toBe(1);
    expect(pick([-1.0, -1.05], [], 1.1)).toBe(0); // negative control
  });

  it('tokens not in the history are unchanged', () => {
    // only token 0 penalised: 2/1.1 = 1.818 < 1.85 → token 1. Penalising all would give 1.818 > 1.68 → token 0
    expect(pick([2.0, 1.85, 1.83], [0], 1.1)).toBe(1);
    // negative logits: only token 0 penalised: [-1.1, -1.05, -1.08] → token 1.
    // Multiplying all would give [-1.1, -1.155, -1.188] → token 0
    expect(pick([-1.0, -1.05, -1.08], [0], 1.1)).toBe(1);
  });

  it('applies once per distinct token, however often it was seen; ignores ids outside the vocabulary', () => {
    // once: 2/1.1 = 1.818 > 1.7 → token 0; three times would give 2/1.331 = 1.503 < 1.7 → token 1
    expect(pick([2.0, 1.7], [0, 0, 0], 1.1)).toBe(0);
    expect(pick([2.0, 1.9], [0, 5, -1, 99], 1.1)).toBe(1);
    expect(pick([2.0, 1.7], [5, -1, 99], 1.1)).toBe(0);
  });

  it('a zero logit stays zero; a penalty below 1 boosts', () => {
    expect(pick([0, -0.01], [0], 100)).toBe(0);
    // penalty 0.5: 1.0 → 2.0 beats 1.9; -2.0 → -1.0 beats -1.05
    expect(pick([1.0, 1.9], [0], 0.5)).toBe(0);
    expect(pick([-2.0, -1.05], [0], 0.5)).toBe(0);
  });
});

describe('logprob', () => {
  // V = 600 random float32 logits in [-8, 8]
  const V = 600;
  const gen = new SeededRandom(12345);
  const logits = Float32Array.from({ length: V }, () => gen.next() * 16 - 8);
  // float64 log-softmax of the raw logits
  let m = -Infinity;
  for (const v of logits) m = Math.max(m, v);
  let z = 0;
  for (const v of logits) z += Math.exp(v - m);
  const lse = m + Math.log(z);
  const logSoftmax = (t: number) => logits[t]! - lse;

  // Bound: |got - expected| ≤ 1e-9 · max(1, |expected|). Float32 → float64 conversion is exact, so both
  // sides are float64 sums of the same 600 exponentials and differ only by summation rounding,
  // ~V · 2^-53 ≈ 1e-13. Computing in float32 (relative error ~1e-7) or from the penalised, tempered or
  // filtered distribution (differences ≥ 1e-3 here) would break it.
  const expectLogprob = (got: number, t: number) => {
    const want = logSoftmax(t);
    expect(Math.abs(got - want)).toBeLessThanOrEqual(1e-9 * Math.max(1, Math.abs(want)));
  };

  it('greedy: argmax token, logprob = log_softmax(raw logits)[token]', () => {
    const argmax = byLogit(logits)[0]!;
    const c = sample(logits, { temperature: 0 }, [], new SeededRandom(1));
    expect(c.token).toBe(argmax);
    expectLogprob(c.logprob, c.token);
    expect(c.logprob).toBeLessThan(0);
  });

  it('greedy with a repetition penalty that moves the choice: still the raw log-probability', () => {
    const [first, second] = byLogit(logits) as [number, number];
    const c = sample(logits, { temperature: 0, repetitionPenalty: 5 }, [first], new SeededRandom(1));
    expect(c.token).toBe(second);
    expectLogprob(c.logprob, c.token);
  });

  it('sampled draws with temperature, top-k, top-p, min-p and a penalty on: raw log-probability every time', () => {
    const order = byLogit(logits);
    const history = [order[0]!, order[3]!, order[10]!, 7];
    const o: SamplingOptions = { temperature: 0.8, topK: 40, topP: 0.9, minP: 0.05, repetitionPenalty: 1.01 };
    const rng = new SeededRandom(99);
    const tokens = new Set<number>();
    for (let k = 0; k < 300; k++) {
      const c = sample(logits, o, history, rng);
      tokens.add(c.token);
      expectLogprob(c.logprob, c.token);
    }
    expect(tokens.size).toBeGreaterThan(3); // more than one token was exercised
    // including penalised ones (1.01 moves a logit near 8 by ~0.08, far beyond the bound)
    expect(tokens.has(order[0]!) && tokens.has(order[3]!)).toBe(true);
  });
});

describe('validateSampling', () => {
  const code = (o: SamplingOptions): unknown => {
    try {
      validateSampling(o);
      return undefined;
    } catch (e) {
      return (e as { code?: unknown }).code;
    }
  };

  it('accepts sane options and the edges of each range', () => {
    expect(code({})).toBeUndefined();
    expect(code({ temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, seed: 0 })).toBeUndefined();
    expect(code({ temperature: 0.7, topK: 40, topP: 0.95, minP: 0.05, repetitionPenalty: 1.1, seed: -3 })).toBeUndefined();
  });

  it.each<[string, SamplingOptions]>([
    ['negative temperature', { temperature: -0.1 }],
    ['NaN temperature', { temperature: NaN }],
    ['infinite temperature', { temperature: Infinity }],
    ['topP 0', { topP: 0 }],
    ['topP 1.5', { topP: 1.5 }],
    ['minP 1', { minP: 1 }],
    ['negative minP', { minP: -0.1 }],
    ['non-integer topK', { topK: 2.5 }],
    ['negative topK', { topK: -1 }],
    ['repetitionPenalty 0', { repetitionPenalty: 0 }],
    ['non-integer seed', { seed: 1.5 }],
    ['a string for a number', { temperature: '1' as unknown as number }],
  ])('refuses %s with E_ARGUMENT', (_, o) => {
    expect(code(o)).toBe('E_ARGUMENT');
  });
});

describe('the native sampler against the reference implementation, draw for draw', () => {
  it('same tokens and log-probabilities over 3,000 draws with random logits and every filter combination', () => {
    const gen = new SeededRandom(2024);
    const optionSets: SamplingOptions[] = [
      {}, { temperature: 0.8 }, { temperature: 1.3, topK: 40 }, { temperature: 0.7, topP: 0.9 }, { temperature: 1, minP: 0.05 },
      { temperature: 0.9, topK: 50, topP: 0.95, minP: 0.02, repetitionPenalty: 1.1 }, { temperature: 0, repetitionPenalty: 1.3 },
    ];
    let draws = 0;
    for (let round = 0; round < 430; round++) {
      const V = 50 + Math.floor(gen.next() * 700);
      const logits = Float32Array.from({ length: V }, () => (gen.next() - 0.5) * 12);
      const history = Array.from({ length: Math.floor(gen.next() * 20) }, () => Math.floor(gen.next() * (V + 10)) - 5);
      for (const o of optionSets) {
        const a = new SeededRandom(round * 7 + 1);
        const b = new SeededRandom(round * 7 + 1);
        const ours = sample(logits, o, history, a);
        const ref = referenceSample(logits, o, history, b);
        expect(ours.token, `round ${round} ${JSON.stringify(o)}`).toBe(ref.token);
        expect(Math.abs(ours.logprob - ref.logprob)).toBeLessThanOrEqual(1e-12 * Math.max(1, Math.abs(ref.logprob)));
        expect(a.state).toBe(b.state);
        draws++;
      }
    }
    expect(draws).toBeGreaterThan(3000);
  });
});

describe('degenerate logits', () => {
  it('NaN or infinite logits with every filter on never leave the sampler without a candidate (a token in range comes back)', () => {
    for (const logits of [Float32Array.from([Number.NaN, 1, 2]), Float32Array.from([Infinity, 1, Infinity]),
      Float32Array.from([Number.NaN, Number.NaN, Number.NaN])]) {
      const r = native().sampleLogits(logits, { temperature: 0.8, topK: 2, topP: 0.9, minP: 0.1, repetitionPenalty: 1.1 },
        Int32Array.from([1]), 3);
      expect(r.token).toBeGreaterThanOrEqual(0);
      expect(r.token).toBeLessThan(logits.length);
    }
    // a topK beyond any vocabulary is no filter, not an overflow
    const wide = native().sampleLogits(Float32Array.from([0, 5, 1]), { temperature: 0.5, topK: 1e20 }, new Int32Array(0), 1);
    expect(wide.token).toBeGreaterThanOrEqual(0);
    expect(wide.token).toBeLessThan(3);
  });
});
