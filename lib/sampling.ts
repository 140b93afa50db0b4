/**
 * Sampling options and their validation. The sampler itself runs natively after each forward
 * (native/cpu/sample.cc: repetition penalty → top-k → top-p → min-p → temperature, greedy at
 * temperature 0), so only the chosen token and its log-probability cross to JS. SeededRandom is the
 * same mulberry32 stream the native sampler draws from (the fixtures use it for weights).
 */
import { medllavaError } from './errors.js';

export interface SamplingOptions {
  /** 0 (default) = greedy */
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  seed?: number;
}

export function validateSampling(o: SamplingOptions): void {
  const check = (name: string, v: number | undefined, ok: (x: number) => boolean, what: string) => {
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || !ok(v))) {
      throw medllavaError('E_ARGUMENT', `${name} must be ${what}, got ${String(v)}`);
    }
  };
  check('temperature', o.temperature, (x) => x >= 0, '≥ 0');
  check('topK', o.topK, (x) => Number.isInteger(x) && x >= 0, 'an integer ≥ 0 (0 = off)');
  check('topP', o.topP, (x) => x > 0 && x <= 1, 'in (0, 1]');
  check('minP', o.minP, (x) => x >= 0 && x < 1, 'in [0, 1)');
  check('repetitionPenalty', o.repetitionPenalty, (x) => x > 0, '> 0');
  check('seed', o.seed, (x) => Number.isInteger(x), 'an integer');
}

/** mulberry32: small, fast, and the same sequence on every platform for a given seed */
export class SeededRandom {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** the 32-bit state (what the native sampler takes and returns as rngState) */
  get state(): number {
    return this.s;
  }
  set state(v: number) {
    this.s = v >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  }
}
