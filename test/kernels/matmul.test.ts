/**
 * matmul: CPU (AVX2 and scalar) against a float64 reference; the CUDA kernels (tiled fp32 and
 * wmma tensor-core) executed under the SIMT emulator against the same reference. Shapes are
 * fresh each run (seeded from the clock, printed on failure) and include ragged edges.
 *
 * Tolerance (ARCHITECTURE.md): relative norm error against float64, normalised by the larger of ‖ref‖
 * and ‖|a|·|w|ᵀ+|bias|‖ (so a cancelling single output cannot blow the measure up). The plain
 * scalar fp32 path must be within 1e-5 of float64 (fp32 accumulation over K ≤ 1024 gives ~1e-7 · √K); every fast path must be within 2×
 * the scalar path's error, plus 1e-7 of slack because at tiny K both errors are ~1e-8 and a
 * different summation order alone can double them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { addon, simt } from '../support/addons.js';
import {
  activate, matmulErrorScale, matmulReference, randomNormal, randomWeights, relativeError, roundTo, toHalfBits, type Activation,
  type DType,
} from '../support/reference.js';

const RAGGED = [1, 2, 7, 33, 129];
const seedBase = Number(process.env.MEDLLAVA_TEST_SEED ?? Date.now() % 100000);

function pick<T>(xs: T[], i: number): T {
  return xs[i % xs.length]!;
}

interface Case { M: number; N: number; K: number; dtype: DType; act: Activation; bias: boolean; seed: number }

function cases(): Case[] {
  const out: Case[] = [];
  const dtypes: DType[] = ['f32', 'f16', 'bf16'];
  const acts: Activation[] = ['none', 'gelu', 'quick_gelu'];
  let i = 0;
  for (const M of RAGGED) {
    for (const N of [1, 7, 33, 65]) {
      const seed = seedBase + i;
      const K = pick([7, 33, 64, 129, 257], seed);
      out.push({ M, N, K, dtype: pick(dtypes, i), act: pick(acts, Math.floor(i / 3)), bias: i % 2 === 0, seed });
      i++;
    }
  }
  // beyond one tile in every direction, and beyond the CPU's KC = 256 / MC = 96 blocks
  out.push({ M: 130, N: 131, K: 300, dtype: 'f32', act: 'gelu', bias: true, seed: seedBase + 1000 });
  out.push({ M: 97, N: 70, K: 513, dtype: 'f16', act: 'none', bias: false, seed: seedBase + 1001 });
  out.push({ M: 100, N: 66, K: 260, dtype: 'bf16', act: 'quick_gelu', bias: true, seed: seedBase + 1002 });
  return out;
}

function makeInputs(c: Case) {
  const a = randomNormal(c.M * c.K, c.seed);
  const w = randomWeights(c.N * c.K, 1 / Math.sqrt(c.K), c.dtype, c.seed + 7);
  const bias = c.bias ? randomNormal(c.N, c.seed + 13) : null;
  return {
    a, w, bias,
    ref: matmulReference(a, w.values, bias, c.M, c.N, c.K, c.act),
    scale: matmulErrorScale(a, w.values, bias, c.M, c.N, c.K),
  };
}

const name = (c: Case) => `${c.M}x${c.N}x${c.K} ${c.dtype} ${c.act}${c.bias ? ' +bias' : ''} (seed ${c.seed})`;

async function cpu(c: Case, inputs: ReturnType<typeof makeInputs>, dispatch: 'auto' | 'avx2' | 'scalar') {
  const n = addon();
  n.setCpuDispatch(dispatch);
  const lin = new n.NativeLinear(inputs.w.raw, c.dtype, c.N, c.K, inputs.bias);
  try {
    return await lin.forward(inputs.a, c.M, { activation: c.act });
  } finally {
    lin.dispose();
    n.setCpuDispatch('auto');
  }
}

/** Activations as the decode GEMV sees them: Q8_0 blocks (d = max|x| / 127, q = round-half-even(x / d)). */
function quantizeRowsQ8(a: Float32Array, M: number, K: number): Float64Array {
  const out = new Float64Array(M * K);
  for (let b = 0; b < (M * K) / 32; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(a[b * 32 + j]!));
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(1 / d) : 0;
    for (let j = 0; j < 32; j++) {
      const v = Math.fround(a[b * 32 + j]! * id);
      const r = Math.round(v);
      const q = Math.abs(v - Math.trunc(v)) === 0.5 ? 2 * Math.round(v / 2) : r; // lrintf: ties to even
      out[b * 32 + j] = q * d;
    }
  }
  return out;
}

describe('matmul on the CPU', () => {
  for (const c of cases()) {
    it(name(c), async () => {
      const inputs = makeInputs(c);
      const scalar = relativeError(await cpu(c, inputs, 'scalar'), inputs.ref, inputs.scale);
      expect(scalar).toBeLessThan(1e-5);
      // 'auto' is AVX-512 where the CPU has it; 'avx2' forces the AVX2 kernels
      for (const d of ['auto', 'avx2'] as const) {
        const fast = relativeError(await cpu(c, inputs, d), inputs.ref, inputs.scale);
        expect(fast, d).toBeLessThanOrEqual(2 * scalar + 1e-7);
      }
    });
  }

  for (const act of ['gelu', 'quick_gelu'] as const) {
    it(`the ${act} epilogue is accurate element by element over [-12, 12], in both CPU paths`, async () => {
      // out[m, n] = act(x[m] · 1 + bias[n]): 16 outputs per row so full register tiles (the vector epilogue) run
      const M = 601;
      const N = 16;
      const x = Float32Array.from({ length: M }, (_, i) => -12 + (24 * i) / (M - 1));
      const bias = Float32Array.from({ length: N }, (_, n) => Math.fround((n - 8) / 64));
      const lin = new (addon().NativeLinear)(new Float32Array(N).fill(1), 'f32', N, 1, bias);
      for (const dispatch of ['auto', 'avx2', 'scalar'] as const) {
        addon().setCpuDispatch(dispatch);
        const out = await lin.forward(x, M, { activation: act });
        addon().setCpuDispatch('auto');
        for (let m = 0; m < M; m++) {
          for (let n = 0; n < N; n++) {
            const v = Math.fround(x[m]! + bias[n]!);
            const ref = activate(v, act);
            // erf's absolute error (≤ ~1.5e-7) enters GELU scaled by |x|/2; for quick_gelu, rounding the
            // argument 1.702·x to float already costs |1.702·x|·2^-24 relative in exp — in any fp32 code
            const tol = act === 'gelu'
              ? 3e-7 * Math.abs(ref) + 1e-7 * Math.abs(v)
              : (3e-7 + 1.702 * Math.abs(v) * 2 ** -24) * Math.abs(ref) + 1e-30;
            if (!(Math.abs(out[m * N + n]! - ref) <= tol))
              throw new Error(`${dispatch} ${act}(${v}) = ${out[m * N + n]}, float64 says ${ref}`);
          }
        }
      }
      lin.dispose();
    });
  }

  for (const dtype of ['q8_0', 'q4_0'] as const) {
    for (const [M, N, K] of [[1, 7, 64], [2, 33, 96], [7, 65, 288], [130, 40, 512]] as const) {
      it(`${M}x${N}x${K} ${dtype} weights (GGML blocks, decoded per 8 values in the kernels)`, async () => {
        const n = addon();
        const seed = seedBase + M * 7 + K;
        const w32 = randomNormal(N * K, seed).map((x) => x / Math.sqrt(K));
        const raw = n.ggmlQuantize(dtype.toUpperCase(), w32);
        // the exact values the blocks hold (the block decoder is checked against the layout in test/formats)
        const values = n.ggmlDequantize(dtype.toUpperCase(), raw, N * K);
        const a = randomNormal(M * K, seed + 1);
        const bias = randomNormal(N, seed + 2);
        const ref = matmulReference(a, values, bias, M, N, K, 'gelu');
        const scale = matmulErrorScale(a, values, bias, M, N, K);
        const lin = new n.NativeLinear(raw, dtype, N, K, bias);
        const run = async (d: 'auto' | 'avx512-novnni' | 'avx2' | 'scalar') => {
          n.setCpuDispatch(d);
          try {
            return await lin.forward(a, M, { activation: 'gelu' });
          } finally {
            n.setCpuDispatch('auto');
          }
        };
        const scalar = relativeError(await run('scalar'), ref, scale);
        const outs = { avx2: await run('avx2'), 'avx512-novnni': await run('avx512-novnni'), auto: await run('auto') };
        lin.dispose();
        expect(scalar).toBeLessThan(1e-5);
        // decode (M ≤ 2) on AVX2 — and on AVX-512 without VNNI, which uses the same GEMV — and every M on
        // AVX-512 VNNI quantize the activations to Q8_0, as llama.cpp does: judged against the float64
        // product of exactly those activations, with what the rounding costs bounded separately
        const aq = quantizeRowsQ8(a, M, K);
        const refQ = matmulReference(aq, values, bias, M, N, K, 'gelu');
        const info = n.getBackendInfo().cpu;
        const has512 = info.features.includes('avx512f') && info.features.includes('avx512bw') && info.features.includes('avx512vl');
        const vnni = has512 && info.features.includes('avx512vnni');
        const quantizes = { avx2: M <= 2, 'avx512-novnni': M <= 2, auto: M <= 2 || vnni };
        for (const d of ['avx2', 'avx512-novnni', 'auto'] as const) {
          const err = relativeError(outs[d], quantizes[d] ? refQ : ref, scale);
          expect(err, `${d}: ${err} vs the ${quantizes[d] ? 'Q8_0-activation' : 'float64'} reference`).toBeLessThanOrEqual(2 * scalar + 1e-7);
          if (quantizes[d]) expect(relativeError(outs[d], ref, scale)).toBeLessThan(1e-2);
        }
        // negative control: the quantized reference is far enough from the exact one that judging a
        // quantizing kernel against the wrong one would fail (so the two checks above are distinct)
        expect(relativeError(refQ, ref, scale)).toBeGreaterThan(10 * (2 * scalar + 1e-7));
      });
    }
  }

  for (const dtype of ['q4_k', 'q6_k'] as const) {
    for (const [M, N, K] of [[1, 9, 256], [2, 17, 512], [70, 33, 768]] as const) {
      it(`${M}x${N}x${K} ${dtype} weights (super-blocks decoded one at a time)`, async () => {
        const n = addon();
        const bytes = dtype === 'q4_k' ? 144 : 210;
        const raw = new Uint8Array((N * K) / 256 * bytes);
        let s = (M * 31 + K) >>> 0;
        for (let i = 0; i < raw.length; i++) { s = (Math.imul(s, 1103515245) + 12345) >>> 0; raw[i] = s >>> 24; }
        const dv = new DataView(raw.buffer);
        for (let b = 0; b < raw.length / bytes; b++) { // modest, finite f16 scales
          for (const o of dtype === 'q6_k' ? [208] : [0, 2]) dv.setUint16(b * bytes + o, o === 2 ? 0x2000 : 0x2400, true);
        }
        const values = n.ggmlDequantize(dtype.toUpperCase(), raw, N * K);
        const a = randomNormal(M * K, seedBase + K);
        const ref = matmulReference(a, values, null, M, N, K, 'none');
        const scale = matmulErrorScale(a, values, null, M, N, K);
        const lin = new n.NativeLinear(raw, dtype, N, K, null);
        n.setCpuDispatch('scalar');
        const scalar = relativeError(await lin.forward(a, M, {}), ref, scale);
        n.setCpuDispatch('avx2');
        const avx2 = relativeError(await lin.forward(a, M, {}), ref, scale);
        n.setCpuDispatch('auto');
        const fastOut = await lin.forward(a, M, {});
        lin.dispose();
        expect(scalar).toBeLessThan(1e-5);
        expect(avx2).toBeLessThanOrEqual(2 * scalar + 1e-7);
        const info = n.getBackendInfo().cpu;
        if (info.dispatch === 'avx512' && info.features.includes('avx512vnni')) {
          // VNNI: int8 products of Q8_0-quantized activations, the sub-block scales d·sc (and dmin·m) rounded
          // to f16 in the repacked layout (≤ 2^-12 relative each): against the float64 product of exactly
          // those activations, then bound the total cost
          const refQ = matmulReference(quantizeRowsQ8(a, M, K), values, null, M, N, K, 'none');
          expect(relativeError(fastOut, refQ, scale)).toBeLessThan(1e-3);
          expect(relativeError(fastOut, ref, scale)).toBeLessThan(1e-2);
        } else {
          expect(relativeError(fastOut, ref, scale)).toBeLessThanOrEqual(2 * scalar + 1e-7);
        }
      });
    }
  }

  it('quantized rows that are not whole blocks are refused', () => {
    const n = addon();
    expect(() => new n.NativeLinear(new Uint8Array(34), 'q8_0', 2, 16, null)).toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
  });

  it('uses the widest kernels this machine has (the fast paths above are not the scalar one)', () => {
    const n = addon();
    const f = n.getBackendInfo().cpu.features;
    const avx2 = f.includes('avx2') && f.includes('fma') && f.includes('f16c');
    const avx512 = avx2 && f.includes('avx512f') && f.includes('avx512bw') && f.includes('avx512vl');
    expect(n.getBackendInfo().cpu.dispatch).toBe(avx512 ? 'avx512' : avx2 ? 'avx2' : 'scalar');
    n.setCpuDispatch('avx2');
    expect(n.getBackendInfo().cpu.dispatch).toBe(avx2 ? 'avx2' : 'scalar');
    n.setCpuDispatch('scalar');
    expect(n.getBackendInfo().cpu.dispatch).toBe('scalar');
    n.setCpuDispatch('auto');
  });
});

describe('matmul CUDA kernels under the SIMT emulator', () => {
  const orders = ['forward', 'reverse', 'shuffle'] as const;
  afterAll(() => simt().setOptions({ blockOrder: 'forward' }));
  beforeAll(() => simt().setOptions({ blockOrder: 'forward' }));

  cases().forEach((c, i) => {
    const order = pick([...orders], i);
    it(`${name(c)}, ${order} block order`, async () => {
      const s = simt();
      s.setOptions({ blockOrder: order, seed: c.seed, reverseThreads: i % 4 === 3 });
      const inputs = makeInputs(c);
      const scalar = relativeError(await cpu(c, inputs, 'scalar'), inputs.ref, inputs.scale);
      // the output starts as NaN in the emulator: an element the kernel never writes fails here
      const tiled = await s.matmul(inputs.a, inputs.w.raw, c.dtype, inputs.bias, c.M, c.N, c.K, c.act, 'tiled');
      expect(relativeError(tiled, inputs.ref, inputs.scale)).toBeLessThanOrEqual(2 * scalar + 1e-7);
      if (c.dtype !== 'f32') {
        // Tensor cores take 16-bit operands: the activations are rounded to the weight type. Judge the
        // kernel against the float64 product of exactly those operands…
        const rounded = matmulReference(roundTo(inputs.a, c.dtype), inputs.w.values, inputs.bias, c.M, c.N, c.K, c.act);
        const wmma = await s.matmul(inputs.a, inputs.w.raw, c.dtype, inputs.bias, c.M, c.N, c.K, c.act, 'tensor');
        expect(relativeError(wmma, rounded, inputs.scale)).toBeLessThanOrEqual(2 * scalar + 1e-7);
        // …and bound the cost of that rounding against the unrounded reference (f16: 2^-11, bf16: 2^-8 per operand)
        expect(relativeError(wmma, inputs.ref, inputs.scale)).toBeLessThan(c.dtype === 'f16' ? 2e-3 : 1.6e-2);
      }
    });
  });

  it('picks the tensor-core kernel for 16-bit weights by default', async () => {
    const c: Case = { M: 17, N: 20, K: 40, dtype: 'f16', act: 'none', bias: false, seed: seedBase };
    const inputs = makeInputs(c);
    const s = simt();
    const auto = await s.matmul(inputs.a, inputs.w.raw, 'f16', null, c.M, c.N, c.K, 'none', 'auto');
    const tensor = await s.matmul(inputs.a, inputs.w.raw, 'f16', null, c.M, c.N, c.K, 'none', 'tensor');
    const tiled = await s.matmul(inputs.a, inputs.w.raw, 'f16', null, c.M, c.N, c.K, 'none', 'tiled');
    expect(Array.from(auto)).toEqual(Array.from(tensor));
    expect(Array.from(auto)).not.toEqual(Array.from(tiled));
  });

  // GGML block weights on the device: the decode GEMV (a warp per output column, M ≤ 8) and the tiled
  // kernel decoding blocks as it stages them (prefill); Q4_K / Q6_K from random blocks with sane scales
  for (const dtype of ['q8_0', 'q4_0', 'q4_k', 'q6_k'] as const) {
    for (const [i, [M, N, K]] of ([[1, 37, 256], [3, 20, 512], [70, 65, 256]] as const).entries()) {
      it(`${dtype} weights, ${M}×${N}×${K} (${M <= 8 ? 'GEMV' : 'tiled, blocks decoded while staging'})`, async () => {
        const n = addon();
        const seed = seedBase + 2000 + i;
        let raw: Uint8Array;
        if (dtype === 'q4_k' || dtype === 'q6_k') {
          const bytes = dtype === 'q4_k' ? 144 : 210;
          raw = Uint8Array.from({ length: ((N * K) / 256) * bytes }, (_, j) => (j * 2654435761 + seed) >>> 24);
          for (let b = 0; b < (N * K) / 256; b++) {
            const put = (k: number, h: number) => { raw[b * bytes + k] = h & 255; raw[b * bytes + k + 1] = h >> 8; };
            if (dtype === 'q4_k') { put(0, toHalfBits(0.004)); put(2, toHalfBits(0.01)); } else put(208, toHalfBits(0.002));
          }
        } else {
          raw = n.ggmlQuantize(dtype.toUpperCase(), randomNormal(N * K, seed).map((x) => x / Math.sqrt(K)));
        }
        const values = n.ggmlDequantize(dtype.toUpperCase(), raw, N * K);
        const a = randomNormal(M * K, seed + 1);
        const bias = randomNormal(N, seed + 2);
        const ref = matmulReference(a, values, bias, M, N, K, 'gelu');
        const scale = matmulErrorScale(a, values, bias, M, N, K);
        simt().setOptions({ blockOrder: pick([...orders], i), seed });
        const got = await simt().matmul(a, raw, dtype, bias, M, N, K, 'gelu', 'auto');
        expect(relativeError(got, ref, scale)).toBeLessThan(1e-5);
      });
    }
  }
});
