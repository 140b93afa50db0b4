/**
 * The CPU twins of the CUDA-only element ops (native/cpu/elements.cc) — residual add with and
 * without LayerScale, GELU / quick_gelu, embedding gather for every stored type, KV append, top-k —
 * each against a float64 / exact reference and against its CUDA kernel run under the SIMT emulator,
 * with the same arguments: one op, two backends, one expectation.
 */
import { describe, expect, it } from 'vitest';

import { native } from '../../lib/native.js';
import { simt } from '../support/addons.js';
import { randomBlocks, randomNormal } from '../support/reference.js';

const cpu = (name: string, args: Record<string, unknown>) => native().cpuOp(name, args) as unknown;
const cuda = (name: string, args: Record<string, unknown>) => simt().cudaOp(name, args) as unknown;
const f16bits = (x: number) => new Uint16Array(native().ggmlQuantize('F16', Float32Array.of(x)).buffer)[0]!;

describe('CPU twins of the CUDA element ops', () => {
  it('residual: h + a, and h + γ ⊙ a (LayerScale), as float32 computes it, equal to the CUDA kernel', () => {
    const T = 7;
    const D = 48;
    const n = T * D;
    const h = randomNormal(n, 1);
    const a = randomNormal(n, 2);
    const gamma = randomNormal(D, 3);
    for (const g of [null, gamma]) {
      const out = cpu('residual', { h, a, gamma: g, n, D }) as Float32Array;
      for (let i = 0; i < n; i++) expect(out[i]).toBe(Math.fround(h[i]! + Math.fround((g ? g[i % D]! : 1) * a[i]!)));
      expect(Array.from(cuda('residual', { h, a, gamma: g, n, D }) as Float32Array)).toEqual(Array.from(out));
    }
  });

  it('GELU (erf) and quick_gelu against float64, equal to the CUDA kernel within float32 rounding', () => {
    const x = Float32Array.from(randomNormal(1000, 4), (v) => v * 4);
    for (const act of ['gelu', 'quick_gelu'] as const) {
      const out = cpu('activation', { x, n: x.length, act }) as Float32Array;
      const dev = cuda('activation', { x, n: x.length, act }) as Float32Array;
      for (let i = 0; i < x.length; i++) {
        const v = x[i]!;
        const ref = act === 'gelu' ? 0.5 * v * (1 + erf(v / Math.SQRT2)) : v / (1 + Math.exp(-1.702 * v));
        // erff / expf: a few float32 ulps, scaled by |x| for the argument's own rounding
        expect(Math.abs(out[i]! - ref)).toBeLessThanOrEqual(4e-7 * Math.abs(ref) + 2e-7 * Math.abs(v) + 1e-30);
        expect(Math.abs(dev[i]! - out[i]!)).toBeLessThanOrEqual(2.4e-7 * Math.abs(out[i]!));
      }
    }
    expect(() => cpu('activation', { x, n: x.length, act: 'relu' })).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
  });

  for (const type of ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_k', 'q6_k'] as const) {
    it(`embedding gather from a ${type} table: the rows the block decoder gives, equal to the CUDA kernel`, () => {
      const V = 9;
      const D = type.endsWith('_k') ? 256 : 64;
      const values = randomNormal(V * D, 5);
      const table = type === 'f32' ? new Uint8Array(values.buffer)
        : type === 'q4_k' || type === 'q6_k' ? randomBlocks(type === 'q4_k' ? 'Q4_K' : 'Q6_K', V * D, 5)
          : native().ggmlQuantize(type.toUpperCase(), values);
      const decoded = type === 'f32' ? values : native().ggmlDequantize(type.toUpperCase(), table, V * D);
      const ids = Int32Array.from([3, 0, 8, 3, 5]);
      const args = { table, type, ids, T: ids.length, D, vocab: V };
      const out = cpu('embed', args) as Float32Array;
      for (let t = 0; t < ids.length; t++) expect(Array.from(out.subarray(t * D, (t + 1) * D))).toEqual(Array.from(decoded.subarray(ids[t]! * D, (ids[t]! + 1) * D)));
      expect(Array.from(cuda('embed', args) as Float32Array)).toEqual(Array.from(out));
    });
  }

  it('KV append: f16 rows at a position, the rest of the cache as it was, equal to the CUDA kernel', () => {
    const width = 24;
    const rows = 10;
    const cache = Uint16Array.from({ length: rows * width }, (_, i) => (i * 7919) & 0x3bff);
    const src = randomNormal(3 * width, 6);
    const args = { src, cache, pos: 4, T: 3, width };
    const out = cpu('kvAppend', args) as Uint16Array;
    for (let i = 0; i < rows * width; i++) {
      const inside = i >= 4 * width && i < 7 * width;
      expect(out[i]).toBe(inside ? f16bits(src[i - 4 * width]!) : cache[i]);
    }
    expect(Array.from(cuda('kvAppend', args) as Uint16Array)).toEqual(Array.from(out));
  });

  it('top-k: the k largest in order, ties to the lower index, NaN ranked as −inf; the same as the CUDA kernel', () => {
    const x = Float32Array.from([0.5, 3, -1, 3, Number.NaN, 7, -Infinity, 2, 7, 0.5]);
    const r = cpu('topk', { x, n: x.length, k: 10 }) as { idx: Int32Array; val: Float32Array };
    expect(Array.from(r.idx)).toEqual([5, 8, 1, 3, 7, 0, 9, 2, 4, 6]);
    const dev = cuda('topk', { x, n: x.length, k: 10 }) as { idx: Int32Array; val: Float32Array };
    expect(Array.from(dev.idx)).toEqual(Array.from(r.idx));
    expect(Array.from(dev.val)).toEqual(Array.from(r.val));
    const big = randomNormal(5000, 7);
    const k = 40;
    const top = cpu('topk', { x: big, n: big.length, k }) as { idx: Int32Array };
    const order = Array.from(big.keys()).sort((a, b) => big[b]! - big[a]! || a - b).slice(0, k);
    expect(Array.from(top.idx)).toEqual(order);
    expect(Array.from((cuda('topk', { x: big, n: big.length, k }) as { idx: Int32Array }).idx)).toEqual(order);
  });
});

/** erf in float64 (Abramowitz–Stegun 7.1.26 is too coarse for 1e-7: use the series / continued fraction) */
function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    // Taylor series: erf(x) = 2/√π Σ (−1)^n x^(2n+1) / (n! (2n+1))
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 60; n++) {
      term *= (-ax * ax) / n;
      sum += term / (2 * n + 1);
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc by its continued fraction (Lentz), for the tail
  let f = ax;
  let c = ax;
  let d = 0;
  for (let i = 1; i < 200; i++) {
    const an = i / 2;
    d = ax + an * d;
    d = 1 / d;
    c = ax + an / c;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-ax * ax) / (f * Math.sqrt(Math.PI));
  return Math.sign(x) * (1 - erfc);
}
