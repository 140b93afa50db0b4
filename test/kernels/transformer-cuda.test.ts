/**
 * The CUDA transformer kernels (native/cuda/{norm,rope,activation,attention,elements,topk}.cuh) executed under the SIMT emulator
 * against the CPU backend (native/cpu/*.cc of the same stems, itself checked against float64 in
 * transformer.test.ts) on fresh random inputs (seeded from the clock, printed on failure), with
 * ragged and edge shapes: sequences 1, 2, 17, 577 and 1000; head dims 64, 80, 128; GQA ratios 1,
 * 4, 8; batches of 1 and 3 sequences. Outputs are poisoned (NaN) before each launch, so an element
 * no thread writes fails the comparison. Ops without a CPU runner (GELU, residual, embedding,
 * KV append, top-k) are checked against float64 / exact references.
 */
import { afterAll, describe, expect, it } from 'vitest';

import { addon, simt } from '../support/addons.js';
import { activate, fromHalfBits, randomNormal, relativeError, toHalfBits } from '../support/reference.js';
import { attentionCachedRef, attentionFullRef } from '../support/transformer-reference.js';

const seedBase = Number(process.env.MEDLLAVA_TEST_SEED ?? Date.now() % 100000);
const orders = ['forward', 'reverse', 'shuffle'] as const;
afterAll(() => simt().setOptions({ blockOrder: 'forward' }));

/** cudaOp under a block order picked per case (the kernels must not depend on block scheduling). */
function cuda(i: number, name: string, args: Record<string, unknown>) {
  simt().setOptions({ blockOrder: orders[i % 3]!, seed: seedBase + i, reverseThreads: i % 2 === 1 });
  return simt().cudaOp(name, args);
}

function near(got: Float32Array, want: ArrayLike<number>, tol: number, what: string) {
  expect(got.length, what).toBe(want.length);
  for (let i = 0; i < got.length; i++) if (Number.isNaN(got[i])) throw new Error(`${what}: element ${i} was never written`);
  const err = relativeError(got, want);
  expect(err, `${what} (seed ${seedBase}): relative error ${err}`).toBeLessThan(tol);
}

describe('CUDA normalisation and element-wise kernels vs the CPU', () => {
  for (const [i, [T, D]] of ([[1, 7], [3, 64], [17, 1000], [2, 4096]] as const).entries()) {
    it(`rmsnorm, layernorm ${T}×${D}`, () => {
      const x = randomNormal(T * D, seedBase + i).map((v, j) => v * (1 + (j % 3)) + 0.5);
      const w = randomNormal(D, seedBase + i + 1);
      const b = randomNormal(D, seedBase + i + 2);
      near(cuda(i, 'rmsnorm', { x, w, T, D, eps: 1e-5 }), addon().cpuOp('rmsnorm', { x, w, T, D, eps: 1e-5 }), 1e-6, 'rmsnorm');
      near(cuda(i + 1, 'layernorm', { x, w, b, T, D, eps: 1e-6 }), addon().cpuOp('layernorm', { x, w, b, T, D, eps: 1e-6 }), 1e-6,
        'layernorm');
    });
  }

  for (const [i, [T, H, hd, pos0, mode]] of ([[1, 1, 64, 0, 'half'], [17, 3, 80, 1000, 'adjacent'], [2, 32, 128, 4090, 'half'],
    [5, 4, 64, 7, 'adjacent']] as const).entries()) {
    it(`RoPE ${mode}: ${T} tokens × ${H} heads × ${hd} from ${pos0}`, () => {
      const x = randomNormal(T * H * hd, seedBase + 10 + i);
      const args = { x, T, heads: H, hd, pos0, theta: 10000, mode };
      near(cuda(i, 'rope', args), addon().cpuOp('rope', args), 1e-6, 'rope');
    });
  }

  it('SiLU·mul, GELU, quick_gelu and the residual add (with and without LayerScale)', () => {
    const n = 3000;
    const gate = Float32Array.from({ length: n }, (_, j) => -15 + (30 * j) / n);
    const up = randomNormal(n, seedBase + 20);
    near(cuda(0, 'siluMul', { gate, up, n }), addon().cpuOp('siluMul', { gate, up, n }), 1e-6, 'siluMul');
    for (const act of ['gelu', 'quick_gelu'] as const) {
      near(cuda(1, 'activation', { x: gate, n, act }), Float64Array.from(gate, (v) => activate(v, act)), 1e-6, act);
    }
    const D = 48;
    const h = randomNormal(n - (n % D), seedBase + 21);
    const a = randomNormal(h.length, seedBase + 22);
    const gamma = randomNormal(D, seedBase + 23);
    near(cuda(2, 'residual', { h, a, gamma, D, n: h.length }), Float64Array.from(h, (v, j) => v + gamma[j % D]! * a[j]!), 1e-7,
      'residual with γ');
    near(cuda(0, 'residual', { h, a, gamma: null, D, n: h.length }), Float64Array.from(h, (v, j) => v + a[j]!), 1e-7, 'residual');
  });
});

describe('CUDA embedding gather and KV-cache append', () => {
  const V = 37, D = 256;
  for (const [i, type] of (['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_K', 'Q6_K'] as const).entries()) {
    it(`${type} table: rows decoded on the device as the CPU decodes them`, () => {
      const n = addon();
      let table: Uint8Array;
      if (type === 'Q4_K' || type === 'Q6_K') {
        // no K-quant writer: random blocks with sane scale fields are valid blocks
        const bytes = type === 'Q4_K' ? 144 : 210;
        table = Uint8Array.from({ length: (V * D / 256) * bytes }, (_, j) => (j * 2654435761 + seedBase) >>> 24);
        for (let blk = 0; blk < (V * D) / 256; blk++) {
          const at = (k: number, h: number) => { table[blk * bytes + k] = h & 255; table[blk * bytes + k + 1] = h >> 8; };
          if (type === 'Q4_K') { at(0, toHalfBits(0.01 + blk * 1e-4)); at(2, toHalfBits(0.02)); } else at(208, toHalfBits(0.003));
        }
      } else {
        table = n.ggmlQuantize(type, randomNormal(V * D, seedBase + i));
      }
      const ids = Int32Array.from([0, 36, 5, 5, 17, 1]);
      const all = n.ggmlDequantize(type, table, V * D);
      const want = new Float64Array(ids.length * D);
      ids.forEach((id, t) => { for (let d = 0; d < D; d++) want[t * D + d] = all[id * D + d]!; });
      const got = cuda(i, 'embed', { table, type: type.toLowerCase(), ids, T: ids.length, D, vocab: V });
      for (let j = 0; j < got.length; j++) {
        if (!(Math.abs(got[j]! - want[j]!) <= 1e-6 * Math.abs(want[j]!))) throw new Error(`${type} element ${j}: ${got[j]} vs ${want[j]}`);
      }
    });
  }

  it('appends f16 rows at a position, leaving the rest of the cache as it was', () => {
    const width = 2 * 64, rows = 10, T = 3, pos = 4;
    const cache = Uint16Array.from({ length: rows * width }, (_, j) => j & 0x3fff);
    const src = randomNormal(T * width, seedBase + 30);
    const out = simt().cudaOp('kvAppend', { src, cache, pos, T, width }) as unknown as Uint16Array;
    for (let j = 0; j < rows * width; j++) {
      const r = Math.floor(j / width);
      const want = r >= pos && r < pos + T ? toHalfBits(src[j - pos * width]!) : cache[j]!;
      if (out[j] !== want) throw new Error(`cache element ${j}: ${out[j]} (${fromHalfBits(out[j]!)}) vs ${want}`);
    }
  });
});

describe('CUDA attention vs the CPU', () => {
  const f16 = (a: Float32Array) => Uint16Array.from(a, toHalfBits);
  // prefill over the cache (causal, GQA): (T, nPast, H, KVH, hd)
  const prefill = [[1, 0, 4, 4, 64], [2, 5, 8, 2, 80], [17, 0, 8, 1, 128], [17, 40, 32, 4, 64], [40, 3, 4, 4, 64]] as const;
  for (const [i, [T, nPast, H, KVH, hd]] of prefill.entries()) {
    it(`flash (causal, f16 cache): ${T} queries after ${nPast}, ${H}/${KVH} heads, head dim ${hd}`, () => {
      const s = seedBase + 40 + i;
      const q = randomNormal(T * H * hd, s);
      const kCache = f16(randomNormal((nPast + T) * KVH * hd, s + 1));
      const vCache = f16(randomNormal((nPast + T) * KVH * hd, s + 2));
      const args = { q, kCache, vCache, T, nPast, H, KVH, hd };
      near(cuda(i, 'attentionCached', args), addon().cpuOp('attentionCached', args), 1e-5, 'flash causal');
    });
  }

  // ViT (non-causal): 577 tokens is CLIP-L/336's sequence; 1000 crosses many key tiles
  for (const [i, [T, H, hd]] of ([[1, 2, 64], [17, 3, 80], [577, 1, 64], [1000, 1, 128]] as const).entries()) {
    it(`flash (full, f32): ${T} tokens, ${H} heads, head dim ${hd}`, () => {
      const s = seedBase + 50 + i;
      const q = randomNormal(T * H * hd, s).map((v) => 2 * v);
      const k = randomNormal(T * H * hd, s + 1);
      const v = randomNormal(T * H * hd, s + 2);
      const got = cuda(i, 'attentionFull', { q, k, v, T, H, hd });
      near(got, T <= 64 ? attentionFullRef(q, k, v, T, H, hd) : addon().cpuOp('attentionFull', { q, k, v, T, H, hd }), 1e-5, 'flash full');
    }, 120_000);
  }

  // decode: one query over the cache, split-KV + combine, the GQA group together: (nKv, H, KVH, hd, splits)
  const decode = [[1, 4, 4, 64, 1], [2, 8, 2, 64, 2], [17, 32, 4, 128, 3], [300, 8, 1, 80, 2], [1000, 32, 4, 64, 4],
    [577, 12, 3, 64, 64]] as const;
  for (const [i, [nKv, H, KVH, hd, splits]] of decode.entries()) {
    it(`decode (split-KV ×${splits} + combine): ${nKv} cached, ${H}/${KVH} heads, head dim ${hd}`, () => {
      const s = seedBase + 60 + i;
      const q = randomNormal(H * hd, s);
      const kCache = f16(randomNormal(nKv * KVH * hd, s + 1));
      const vCache = f16(randomNormal(nKv * KVH * hd, s + 2));
      const got = cuda(i, 'attentionDecode', { q, kCache, vCache, nPast: nKv - 1, H, KVH, hd, splits });
      near(got, attentionCachedRef(q, kCache, vCache, 1, nKv - 1, H, KVH, hd), 1e-5, 'decode');
    }, 120_000);
  }

  it('batches: three sequences of different lengths, each attention on its own cache, match the CPU', () => {
    for (const [b, [T, nPast]] of ([[3, 2], [1, 9], [17, 0]] as const).entries()) {
      const s = seedBase + 70 + b;
      const H = 8, KVH = 2, hd = 64;
      const q = randomNormal(T * H * hd, s);
      const kCache = f16(randomNormal((nPast + T) * KVH * hd, s + 1));
      const vCache = f16(randomNormal((nPast + T) * KVH * hd, s + 2));
      const args = { q, kCache, vCache, T, nPast, H, KVH, hd };
      near(cuda(b, 'attentionCached', args), addon().cpuOp('attentionCached', args), 1e-5, `sequence ${b}`);
    }
  });

  it('head dims beyond the kernels\' 128 are refused with E_UNSUPPORTED', () => {
    const hd = 160;
    expect(() => simt().cudaOp('attentionFull', { q: new Float32Array(hd), k: new Float32Array(hd), v: new Float32Array(hd), T: 1,
      H: 1, hd })).toThrow(expect.objectContaining({ code: 'E_UNSUPPORTED' }));
  });
});

describe('CUDA top-k / argmax for sampling', () => {
  it('the k largest in order, ties to the lower index, NaN last; k = 1 is argmax', () => {
    const n = 32000;
    const x = randomNormal(n, seedBase + 80);
    x[123] = 9; x[7000] = 9; x[31999] = 8.5; x[5] = Number.NaN;
    const order = [...x.keys()].filter((i) => !Number.isNaN(x[i])).sort((a, b) => x[b]! - x[a]! || a - b);
    for (const k of [1, 5, 40]) {
      const r = simt().cudaOp('topk', { x, n, k }) as unknown as { idx: Int32Array; val: Float32Array };
      expect(Array.from(r.idx)).toEqual(order.slice(0, k));
      expect(Array.from(r.val)).toEqual(order.slice(0, k).map((i) => x[i]!));
    }
  });
});

describe('the GPU microbenchmark\'s peak kernels (bench/kernels) run under the emulator too', () => {
  it('fp32 FMA chains compute what float32 arithmetic says', () => {
    const iters = 5;
    const got = simt().cudaOp('peakFma', { blocks: 2, iters });
    for (let b = 0; b < 2; b++) {
      for (let t = 0; t < 64; t++) {
        let s = 0;
        for (let i = 0; i < 8; i++) {
          let a = Math.fround(t * Math.fround(1e-3) + i);
          for (let it = 0; it < iters; it++) a = Math.fround(a * Math.fround(0.999999) + Math.fround(1e-7));
          s = Math.fround(s + a);
        }
        expect(Math.abs(got[b * 64 + t]! - s)).toBeLessThanOrEqual(Math.abs(s) * 1e-6); // fused vs separate rounding
      }
    }
  });
  it('bf16 wmma loop: every accumulator counts the rounds', () => {
    const got = simt().cudaOp('peakWmma', { blocks: 3, iters: 7 });
    expect(Array.from(got)).toEqual([28, 28, 28]);
  });
});
