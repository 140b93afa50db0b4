/**
 * The transformer ops (native/ops/ops.h, native/cpu/{norm,rope,activation,attention}.cc) one by one on fresh random
 * shapes (seeded from the clock, printed on failure), against float64 references written from
 * their definitions, in every CPU dispatch this machine has (AVX-512 where present, AVX2, scalar).
 * Tolerance (ARCHITECTURE.md): relative norm error against float64 below 1e-5 for fp32 math; the
 * attention over an f16 cache is judged against the float64 attention of the same f16 values.
 */
import { describe, expect, it } from 'vitest';

import { addon } from '../support/addons.js';
import { randomNormal, relativeError, toHalfBits } from '../support/reference.js';
import {
  attentionCachedRef, attentionFullRef, layernormRef, rmsnormRef, ropeRef, siluMulRef,
} from '../support/transformer-reference.js';

const seedBase = Number(process.env.MEDLLAVA_TEST_SEED ?? Date.now() % 100000);
const DISPATCHES = ['auto', 'avx2', 'scalar'] as const;

function eachDispatch(run: () => Float32Array): Record<string, Float32Array> {
  const n = addon();
  const out: Record<string, Float32Array> = {};
  try {
    for (const d of DISPATCHES) {
      n.setCpuDispatch(d);
      out[d] = run();
    }
  } finally {
    n.setCpuDispatch('auto');
  }
  return out;
}

function check(name: string, outs: Record<string, Float32Array>, ref: Float64Array, tol = 1e-5) {
  for (const [d, got] of Object.entries(outs)) {
    expect(got.length, `${name} ${d}`).toBe(ref.length);
    const err = relativeError(got, ref);
    expect(err, `${name} (${d} kernels, seed ${seedBase}): relative error ${err}`).toBeLessThan(tol);
  }
}

describe('normalisation', () => {
  for (const [T, D] of [[1, 7], [3, 64], [17, 2048], [577, 1024]] as const) {
    it(`rmsnorm and layernorm ${T}×${D}`, () => {
      const seed = seedBase + T + D;
      const x = randomNormal(T * D, seed).map((v, i) => v * (1 + (i % 5)) + (i % 3));  // uneven scales, non-zero means
      const w = randomNormal(D, seed + 1);
      const b = randomNormal(D, seed + 2);
      const op = addon().cpuOp;
      check('rmsnorm', eachDispatch(() => op('rmsnorm', { x, w, T, D, eps: 1e-5 })), rmsnormRef(x, w, T, D, 1e-5));
      check('layernorm', eachDispatch(() => op('layernorm', { x, w, b, T, D, eps: 1e-6 })), layernormRef(x, w, b, T, D, 1e-6));
    });
  }
});

describe('RoPE', () => {
  for (const mode of ['half', 'adjacent'] as const) {
    for (const [T, H, hd, pos0] of [[1, 1, 2, 0], [2, 4, 64, 5], [17, 3, 80, 1000], [9, 2, 128, 4090]] as const) {
      it(`${mode} pairs, ${T} tokens × ${H} heads × ${hd} from position ${pos0}`, () => {
        const x = randomNormal(T * H * hd, seedBase + T * H + hd);
        const theta = hd === 128 ? 1e6 : 10000;
        const out = eachDispatch(() => addon().cpuOp('rope', { x, T, heads: H, hd, pos0, theta, mode }));
        check(`rope ${mode}`, out, ropeRef(x, T, H, hd, pos0, theta, mode));
        // and the pairing matters: the other convention is far off
        if (hd > 2) {
          expect(relativeError(out['auto']!, ropeRef(x, T, H, hd, pos0, theta, mode === 'half' ? 'adjacent' : 'half')))
            .toBeGreaterThan(1e-2);
        }
      });
    }
  }
});

describe('SiLU · mul', () => {
  it('over [-20, 20] and random values', () => {
    const n = 4099;
    const gate = Float32Array.from({ length: n }, (_, i) => -20 + (40 * i) / (n - 1));
    const up = randomNormal(n, seedBase + 3);
    check('siluMul', eachDispatch(() => addon().cpuOp('siluMul', { gate, up, n })), siluMulRef(gate, up));
  });
});

describe('attention', () => {
  const f16 = (a: Float32Array) => Uint16Array.from(a, toHalfBits);
  // (T new queries, nPast cached, H query heads, KVH kv heads, head dim)
  const cached = [[1, 0, 4, 4, 64], [1, 37, 8, 2, 64], [2, 16, 32, 4, 64], [17, 0, 8, 1, 128], [3, 100, 12, 3, 80],
    [1, 999, 8, 1, 128]] as const;
  for (const [T, nPast, H, KVH, hd] of cached) {
    it(`cached causal GQA: ${T} queries after ${nPast}, ${H}/${KVH} heads, head dim ${hd}`, () => {
      const seed = seedBase + T * 31 + nPast + H + hd;
      const q = randomNormal(T * H * hd, seed);
      const kCache = f16(randomNormal((nPast + T) * KVH * hd, seed + 1));
      const vCache = f16(randomNormal((nPast + T) * KVH * hd, seed + 2));
      const out = eachDispatch(() => addon().cpuOp('attentionCached', { q, kCache, vCache, T, nPast, H, KVH, hd }));
      check('attentionCached', out, attentionCachedRef(q, kCache, vCache, T, nPast, H, KVH, hd));
    });
  }

  // ViT: 577 tokens (CLIP-L/336), also below and above the CPU's GEMM threshold (32) and 1000
  for (const [T, H, hd] of [[1, 2, 64], [17, 3, 64], [32, 2, 80], [577, 2, 64], [1000, 1, 128]] as const) {
    it(`full (ViT) attention: ${T} tokens, ${H} heads, head dim ${hd}`, () => {
      const seed = seedBase + T + H * 7 + hd;
      const q = randomNormal(T * H * hd, seed).map((v) => v * 2);  // peaky softmax rows too
      const k = randomNormal(T * H * hd, seed + 1);
      const v = randomNormal(T * H * hd, seed + 2);
      const out = eachDispatch(() => addon().cpuOp('attentionFull', { q, k, v, T, H, hd }));
      check('attentionFull', out, attentionFullRef(q, k, v, T, H, hd));
    });
  }

  it('bad arguments are E_ARGUMENT / E_SHAPE, not a crash', () => {
    const op = addon().cpuOp;
    expect(() => op('attentionCached', { q: new Float32Array(64), kCache: new Uint16Array(64), vCache: new Uint16Array(64),
      T: 1, nPast: 0, H: 3, KVH: 2, hd: 64 })).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
    expect(() => op('rmsnorm', { x: new Float32Array(5), w: new Float32Array(2), T: 3, D: 2, eps: 1e-5 }))
      .toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
    expect(() => op('softmax', {})).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
  });
});
