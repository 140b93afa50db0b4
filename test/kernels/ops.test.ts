/**
 * The op table (native/ops/op_list.h) through the one harness (native/napi/op_harness.h): every op
 * runs by name on every backend — the CPU (cpuOp), the SIMT-emulated CUDA device (the test addon's
 * cudaOp) and, where one is present, a real CUDA device (the addon's cudaOp) — against a float64
 * reference written here. A new op in the table fails this file until it has a case below. Outputs
 * start as NaN, so an element nothing writes fails.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { getBackendInfo } from '../../lib/index.js';
import { native, packageRoot } from '../../lib/native.js';
import { addon, simt } from '../support/addons.js';
import { python } from '../support/python.js';
import { activate, fromBf16Bits, fromHalfBits, randomNormal, relativeError, toBf16Bits, toHalfBits } from '../support/reference.js';
import { attentionCachedRef, attentionFullRef, layernormRef, rmsnormRef, ropeRef, siluMulRef } from '../support/transformer-reference.js';

type Run = (name: string, args: Record<string, unknown>) => unknown;
const gpu = getBackendInfo().cuda.available || process.env.MEDLLAVA_EXPECT_GPU === '1';
const backends: [string, Run][] = [
  ['cpu', (n, a) => addon().cpuOp(n, a)],
  ['emulated CUDA', (n, a) => simt().cudaOp(n, a)],
  ...(gpu ? [['CUDA', (n: string, a: Record<string, unknown>) => addon().cudaOp(n, a)] as [string, Run]] : []),
];

const seed = Number(process.env.MEDLLAVA_TEST_SEED ?? Date.now() % 100000);
const halfs = (x: Float32Array) => Uint16Array.from(x, toHalfBits);

/** one case: the arguments, the float64 reference, and how to read the result */
interface Case {
  what: string;
  args: Record<string, unknown>;
  want: ArrayLike<number>;
  tol: number;
  get?: (r: unknown) => ArrayLike<number>;
  /** a second exact computation a backend may do instead (and why): the result must match one of the two */
  alt?: { want: ArrayLike<number>; why: string };
}

/** float64 C = alpha · op(A) · op(B) + beta · C over strided storage; untouched elements keep c's values */
function gemmRef(o: { a: ArrayLike<number>; b: ArrayLike<number>; c: ArrayLike<number> | null; M: number; N: number; K: number;
  lda: number; ldb: number; ldc: number; transA: boolean; transB: boolean; alpha: number; beta: number }, size: number): Float64Array {
  const out = o.c ? Float64Array.from(o.c) : new Float64Array(size).fill(NaN);
  for (let m = 0; m < o.M; m++) {
    for (let n = 0; n < o.N; n++) {
      let s = 0;
      for (let k = 0; k < o.K; k++) {
        const a = o.transA ? o.a[k * o.lda + m]! : o.a[m * o.lda + k]!;
        const b = o.transB ? o.b[n * o.ldb + k]! : o.b[k * o.ldb + n]!;
        s += a * b;
      }
      const i = m * o.ldc + n;
      out[i] = o.alpha * s + (o.beta === 0 ? 0 : o.beta * out[i]!);
    }
  }
  return out;
}

function gemmCases(): Case[] {
  const cases: Case[] = [];
  let s = seed;
  const shapes = [[5, 7, 9], [1, 33, 64], [17, 3, 32], [3, 4, 0], [64, 48, 96]] as const;
  for (const [M, N, K] of shapes) {
    for (const [transA, transB] of [[false, true], [false, false], [true, false], [true, true]] as const) {
      for (const bType of ['f32', 'f16', 'bf16', 'q8_0'] as const) {
        if (bType === 'q8_0' && ((transB ? K : N) % 32 || K === 0)) continue;
        if (bType !== 'f32' && !(M === 5 || M === 64)) continue;
        const pad = (M + N + K) % 3;  // leading dimensions past the row, on some cases
        const lda = (transA ? M : K) + pad, ldb = (transB ? K : N) + (bType === 'q8_0' ? 0 : pad), ldc = N + pad;
        const aRows = transA ? K : M, bRows = transB ? N : K;
        const aN = aRows ? (aRows - 1) * lda + (transA ? M : K) : 0, bN = bRows ? (bRows - 1) * ldb + (transB ? K : N) : 0;
        const cN = M ? (M - 1) * ldc + N : 0;
        const a = randomNormal(aN, s++);
        const bf = randomNormal(bN, s++);
        let b: Float32Array | Uint16Array | Uint8Array = bf;
        let bv: ArrayLike<number> = bf;
        if (bType === 'f16') { b = halfs(bf); bv = Float64Array.from(b, fromHalfBits); }
        if (bType === 'bf16') { b = Uint16Array.from(bf, toBf16Bits); bv = Float64Array.from(b, fromBf16Bits); }
        if (bType === 'q8_0') { b = native().ggmlQuantize('Q8_0', bf); bv = native().ggmlDequantize('Q8_0', b, bN); }
        const beta = pad === 1 ? 0.5 : 0, alpha = pad === 2 ? -1.5 : 1;
        const c = randomNormal(cN, s++);
        const o = { M, N, K, lda, ldb, ldc, transA, transB, alpha, beta };
        const round16 = bType === 'f16' ? (v: number) => fromHalfBits(toHalfBits(v)) : (v: number) => fromBf16Bits(toBf16Bits(v));
        cases.push({
          what: `gemm ${M}×${N}×${K} ${transA ? 'Aᵀ' : 'A'}·${transB ? 'Bᵀ' : 'B'} ${bType} ld +${pad} α ${alpha} β ${beta}`,
          args: { ...o, a, b, bType, c }, want: gemmRef({ ...o, a, b: bv, c }, cN), tol: 1e-5,
          ...(bType === 'f16' || bType === 'bf16' ? {
            alt: { want: gemmRef({ ...o, a: Float64Array.from(a, round16), b: bv, c }, cN),
              why: `tensor cores (CUDA, B stored ${bType} as a Linear weight) multiply A rounded to ${bType}` },
          } : {}),
        });
      }
    }
  }
  return cases;
}

function cases(): Record<string, Case[]> {
  let s = seed + 1000;
  const out: Record<string, Case[]> = {};
  // matmul: f32 and Q8_0 weights, bias and the epilogues
  out.matmul = ([[3, 40, 64, 'f32', 'gelu'], [1, 17, 96, 'q8_0', 'none'], [19, 33, 32, 'q8_0', 'quick_gelu'], [2, 5, 7, 'f32', 'none']] as const)
    .map(([M, N, K, wType, act]) => {
      const a = randomNormal(M * K, s++), wf = randomNormal(N * K, s++), bias = randomNormal(N, s++);
      const w = wType === 'f32' ? wf : native().ggmlQuantize('Q8_0', wf);
      const wv = wType === 'f32' ? wf : native().ggmlDequantize('Q8_0', w as Uint8Array, N * K);
      const ref = (av: ArrayLike<number>) => {
        const want = new Float64Array(M * N);
        for (let m = 0; m < M; m++) {
          for (let n = 0; n < N; n++) {
            let v = bias[n]!;
            for (let k = 0; k < K; k++) v += av[m * K + k]! * wv[n * K + k]!;
            want[m * N + n] = activate(v, act);
          }
        }
        return want;
      };
      // the CPU's int8 paths for GGML blocks quantize the activations to Q8_0 first, as llama.cpp does
      const aq = () => native().ggmlDequantize('Q8_0', native().ggmlQuantize('Q8_0', a), M * K);
      // q8_0: 5e-4 — the CPU rounds the activations' block scale through f16 and may break rounding ties
      // unlike ggmlQuantize (measured 7e-5 against that reference; the f32-activation reference is 7e-3 away)
      return { what: `matmul ${M}×${N}×${K} ${wType} ${act}`, args: { a, w, wType, bias, M, N, K, act }, want: ref(a),
        tol: wType === 'q8_0' ? 5e-4 : 1e-5,
        ...(wType === 'q8_0' ? { alt: { want: ref(aq()), why: 'int8 dot products against activations quantized to Q8_0' } } : {}) };
    });
  out.gemm = gemmCases();
  out.rmsnorm = ([[1, 7], [5, 64], [3, 1000]] as const).map(([T, D]) => {
    const x = randomNormal(T * D, s++), w = randomNormal(D, s++);
    return { what: `rmsnorm ${T}×${D}`, args: { x, w, T, D, eps: 1e-5 }, want: rmsnormRef(x, w, T, D, 1e-5), tol: 1e-6 };
  });
  out.layernorm = ([[1, 7], [5, 64], [3, 1000]] as const).map(([T, D]) => {
    const x = randomNormal(T * D, s++).map((v) => v + 3), w = randomNormal(D, s++), b = randomNormal(D, s++);
    return { what: `layernorm ${T}×${D}`, args: { x, w, b, T, D, eps: 1e-6 }, want: layernormRef(x, w, b, T, D, 1e-6), tol: 1e-6 };
  });
  // the statistics backward needs, as a second output
  out.rmsnorm.push(...([[4, 96]] as const).map(([T, D]) => {
    const x = randomNormal(T * D, s++), w = randomNormal(D, s++);
    const rstd = Float64Array.from({ length: T }, (_, t) => {
      let ss = 0;
      for (let d = 0; d < D; d++) ss += x[t * D + d]! ** 2;
      return 1 / Math.sqrt(ss / D + 1e-5);
    });
    return { what: `rmsnorm ${T}×${D}: rstd`, args: { x, w, T, D, eps: 1e-5, stats: true }, want: rstd, tol: 1e-6,
      get: (r: unknown) => (r as { rstd: Float32Array }).rstd };
  }));
  out.layernorm.push(...([[4, 96]] as const).map(([T, D]) => {
    const x = randomNormal(T * D, s++).map((v) => v + 2), w = randomNormal(D, s++), b = randomNormal(D, s++);
    const stats = Array.from({ length: T }, (_, t) => {
      let m = 0, v = 0;
      for (let d = 0; d < D; d++) m += x[t * D + d]!;
      m /= D;
      for (let d = 0; d < D; d++) v += (x[t * D + d]! - m) ** 2;
      return [m, 1 / Math.sqrt(v / D + 1e-6)] as const;
    });
    return { what: `layernorm ${T}×${D}: mean and rstd`, args: { x, w, b, T, D, eps: 1e-6, stats: true },
      want: stats.flatMap(([m, r]) => [m, r]), tol: 1e-6,
      get: (r: unknown) => {
        const { mean, rstd } = r as { mean: Float32Array; rstd: Float32Array };
        return Array.from(mean).flatMap((m, t) => [m, rstd[t]!]);
      } };
  }));
  // backward twins, against python3-torch's autograd in float64 (accumulating into non-zero gradients)
  {
    const rms = ([[3, 16], [5, 100], [1, 7]] as const).map(([T, D]) => {
      const x = randomNormal(T * D, s++), w = randomNormal(D, s++), dy = randomNormal(T * D, s++);
      const dx = randomNormal(T * D, s++), dw = randomNormal(D, s++);
      const rstd = Float32Array.from({ length: T }, (_, t) => {
        let ss = 0;
        for (let d = 0; d < D; d++) ss += x[t * D + d]! ** 2;
        return 1 / Math.sqrt(ss / D + 1e-5);
      });
      return { T, D, x, w, dy, dx, dw, rstd };
    });
    const silu = ([1000, 37] as const).map((n) => ({ n, gate: randomNormal(n, s++).map((v) => 4 * v), up: randomNormal(n, s++),
      dout: randomNormal(n, s++), dgate: randomNormal(n, s++), dup: randomNormal(n, s++) }));
    const ref = JSON.parse(python(`
import json, sys, torch
torch.set_default_dtype(torch.float64)
q = json.loads(sys.stdin.read())
out = {'rms': [], 'silu': []}
for c in q['rms']:
    T, D = c['T'], c['D']
    x = torch.tensor(c['x']).reshape(T, D).requires_grad_()
    w = torch.tensor(c['w']).requires_grad_()
    y = x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-5) * w
    (y * torch.tensor(c['dy']).reshape(T, D)).sum().backward()
    out['rms'].append({'dx': (torch.tensor(c['dx']) + x.grad.reshape(-1)).tolist(), 'dw': (torch.tensor(c['dw']) + w.grad).tolist()})
for c in q['silu']:
    g = torch.tensor(c['gate']).requires_grad_()
    u = torch.tensor(c['up']).requires_grad_()
    (torch.nn.functional.silu(g) * u * torch.tensor(c['dout'])).sum().backward()
    out['silu'].append({'dgate': (torch.tensor(c['dgate']) + g.grad).tolist(), 'dup': (torch.tensor(c['dup']) + u.grad).tolist()})
print(json.dumps(out))
`, [], JSON.stringify({ rms: rms.map((c) => ({ ...c, x: [...c.x], w: [...c.w], dy: [...c.dy], dx: [...c.dx], dw: [...c.dw] })),
      silu: silu.map((c) => ({ gate: [...c.gate], up: [...c.up], dout: [...c.dout], dgate: [...c.dgate], dup: [...c.dup] })) })));
    out.rmsnormBackward = rms.flatMap((c, k) => {
      const args = { dy: c.dy, x: c.x, w: c.w, rstd: c.rstd, dx: c.dx, dw: c.dw, T: c.T, D: c.D };
      return [
        { what: `rmsnormBackward ${c.T}×${c.D}: dx`, args, want: ref.rms[k].dx as number[], tol: 1e-5, get: (r: unknown) => (r as { dx: Float32Array }).dx },
        { what: `rmsnormBackward ${c.T}×${c.D}: dw`, args, want: ref.rms[k].dw as number[], tol: 1e-5, get: (r: unknown) => (r as { dw: Float32Array }).dw },
      ];
    });
    out.siluMulBackward = silu.flatMap((c, k) => {
      const args = { dout: c.dout, gate: c.gate, up: c.up, dgate: c.dgate, dup: c.dup, n: c.n };
      return [
        { what: `siluMulBackward ${c.n}: dgate`, args, want: ref.silu[k].dgate as number[], tol: 1e-6, get: (r: unknown) => (r as { dgate: Float32Array }).dgate },
        { what: `siluMulBackward ${c.n}: dup`, args, want: ref.silu[k].dup as number[], tol: 1e-6, get: (r: unknown) => (r as { dup: Float32Array }).dup },
      ];
    });
  }
  out.rope = ([[1, 2, 64, 0, 'half'], [7, 3, 80, 1000, 'adjacent'], [2, 4, 128, 4090, 'half']] as const).map(([T, H, hd, pos0, mode]) => {
    const x = randomNormal(T * H * hd, s++);
    return { what: `rope ${mode} ${T}×${H}×${hd} @${pos0}`, args: { x, T, heads: H, hd, pos0, theta: 10000, mode },
      want: ropeRef(x, T, H, hd, pos0, 10000, mode), tol: 1e-6 };
  });
  {
    const n = 1000, gate = Float32Array.from({ length: n }, (_, j) => -12 + (24 * j) / n), up = randomNormal(n, s++);
    out.siluMul = [{ what: 'siluMul', args: { gate, up, n }, want: siluMulRef(gate, up), tol: 1e-6 }];
    out.activation = (['gelu', 'quick_gelu', 'none'] as const).map((act) =>
      ({ what: `activation ${act}`, args: { x: gate, n, act }, want: Float64Array.from(gate, (v) => activate(v, act)), tol: 1e-6 }));
  }
  out.attentionCached = ([[1, 9, 4, 2, 64], [5, 0, 2, 2, 32], [3, 40, 8, 2, 128]] as const).map(([T, nPast, H, KVH, hd]) => {
    const q = randomNormal(T * H * hd, s++);
    const kCache = halfs(randomNormal((nPast + T) * KVH * hd, s++)), vCache = halfs(randomNormal((nPast + T) * KVH * hd, s++));
    return { what: `attentionCached ${T} after ${nPast}, ${H}/${KVH} heads × ${hd}`, args: { q, kCache, vCache, T, nPast, H, KVH, hd },
      want: attentionCachedRef(q, kCache, vCache, T, nPast, H, KVH, hd), tol: 1e-5 };
  });
  out.attentionFull = ([[1, 1, 64], [37, 2, 64], [50, 1, 80]] as const).map(([T, H, hd]) => {
    const q = randomNormal(T * H * hd, s++), k = randomNormal(T * H * hd, s++), v = randomNormal(T * H * hd, s++);
    return { what: `attentionFull ${T} × ${H}×${hd}`, args: { q, k, v, T, H, hd }, want: attentionFullRef(q, k, v, T, H, hd), tol: 1e-5 };
  });
  // each row's log-sum-exp too (what the vision tower's backward needs); T ≥ 32 takes the CPU's GEMM path
  out.attentionFull.push(...([[5, 2, 32], [40, 2, 64]] as const).map(([T, H, hd]) => {
    const q = randomNormal(T * H * hd, s++), k = randomNormal(T * H * hd, s++), v = randomNormal(T * H * hd, s++);
    const lse = new Float64Array(H * T);
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        const sc: number[] = [];
        for (let u = 0; u < T; u++) {
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += q[(t * H + h) * hd + d]! * k[(u * H + h) * hd + d]!;
          sc.push(dot / Math.sqrt(hd));
        }
        const m = Math.max(...sc);
        lse[h * T + t] = m + Math.log(sc.reduce((a, x) => a + Math.exp(x - m), 0));
      }
    }
    return { what: `attentionFull ${T} × ${H}×${hd}: lse`, args: { q, k, v, T, H, hd, stats: true }, want: lse, tol: 1e-6,
      get: (r: unknown) => (r as { lse: Float32Array }).lse };
  }));
  // one sequence causal over its own f32 K, V: the output and each row's log-sum-exp
  out.attentionCausal = ([[1, 2, 1, 64], [9, 4, 2, 32], [40, 2, 2, 128]] as const).flatMap(([T, H, KVH, hd]) => {
    const q = randomNormal(T * H * hd, s++), k = randomNormal(T * KVH * hd, s++), v = randomNormal(T * KVH * hd, s++);
    const o = new Float64Array(T * H * hd), lse = new Float64Array(H * T);
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / (H / KVH));
      for (let t = 0; t < T; t++) {
        const sc: number[] = [];
        for (let u = 0; u <= t; u++) {
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += q[(t * H + h) * hd + d]! * k[(u * KVH + kvh) * hd + d]!;
          sc.push(dot / Math.sqrt(hd));
        }
        const m = Math.max(...sc), p = sc.map((x) => Math.exp(x - m)), z = p.reduce((a, x) => a + x, 0);
        lse[h * T + t] = m + Math.log(z);
        for (let d = 0; d < hd; d++) {
          let acc = 0;
          for (let u = 0; u <= t; u++) acc += p[u]! * v[(u * KVH + kvh) * hd + d]!;
          o[(t * H + h) * hd + d] = acc / z;
        }
      }
    }
    const args = { q, k, v, T, H, KVH, hd };
    return [
      { what: `attentionCausal ${T} × ${H}/${KVH} heads × ${hd}: out`, args, want: o, tol: 1e-5, get: (r: unknown) => (r as { out: Float32Array }).out },
      { what: `attentionCausal ${T} × ${H}/${KVH} heads × ${hd}: lse`, args, want: lse, tol: 1e-6, get: (r: unknown) => (r as { lse: Float32Array }).lse },
    ];
  });
  out.residual = ([[3, 16, true, 1], [2, 7, false, 0.25]] as const).map(([T, D, ls, scale]) => {
    const h = randomNormal(T * D, s++), a = randomNormal(T * D, s++), gamma = ls ? randomNormal(D, s++) : null;
    return { what: `residual ${T}×${D}${ls ? ' γ' : ''} ×${scale}`, args: { h, a, gamma, scale, n: T * D, D },
      want: Float64Array.from(h, (v, j) => v + scale * (gamma ? gamma[j % D]! : 1) * a[j]!), tol: 1e-7 };
  });
  out.embed = (['f32', 'f16', 'q8_0'] as const).map((type) => {
    const V = 11, D = 64, tf = randomNormal(V * D, s++);
    const table = type === 'f32' ? new Uint8Array(tf.buffer) : type === 'f16' ? new Uint8Array(halfs(tf).buffer)
      : native().ggmlQuantize('Q8_0', tf);
    const values = type === 'f32' ? tf : type === 'f16' ? Float64Array.from(halfs(tf), fromHalfBits)
      : native().ggmlDequantize('Q8_0', table, V * D);
    const ids = Int32Array.from([3, 0, 10, 3, 7]);
    const want = Float64Array.from({ length: ids.length * D }, (_, j) => values[ids[Math.floor(j / D)]! * D + (j % D)]!);
    return { what: `embed ${type}`, args: { table, type, ids, T: ids.length, D, vocab: V }, want, tol: 0 };
  });
  {
    const width = 24, rows = 6, pos = 2, T = 3;
    const cache = Uint16Array.from({ length: rows * width }, (_, j) => j), src = randomNormal(T * width, s++);
    const want = Float64Array.from(cache, (v, j) => (j >= pos * width && j < (pos + T) * width ? toHalfBits(src[j - pos * width]!) : v));
    out.kvAppend = [{ what: 'kvAppend', args: { src, cache, pos, T, width }, want, tol: 0 }];
  }
  {
    const n = 3000, x = randomNormal(n, s++);
    x[17] = NaN;
    x[5] = x[9] = 4.5;  // a tie: the lower index first
    const order = Array.from(x.keys()).sort((i, j) => {
      const a = Number.isNaN(x[i]!) ? -Infinity : x[i]!, b = Number.isNaN(x[j]!) ? -Infinity : x[j]!;
      return b - a || i - j;
    });
    out.topk = [1, 40].map((k) => ({ what: `topk ${k} of ${n}`, args: { x, n, k }, want: order.slice(0, k), tol: 0,
      get: (r: unknown) => (r as { idx: Int32Array }).idx }));
  }
  return out;
}

describe('the op table', () => {
  const table = native().opList();

  it('every op names its two source files, and CpuOps and CudaOps both have its method', () => {
    const cpuOps = readFileSync(join(packageRoot(), 'native/cpu/ops_cpu.h'), 'utf8');
    const cudaOps = readFileSync(join(packageRoot(), 'native/cuda/ops_cuda.cuh'), 'utf8');
    const opsH = readFileSync(join(packageRoot(), 'native/ops/ops.h'), 'utf8');
    expect(table.length).toBeGreaterThanOrEqual(13);
    for (const op of table) {
      for (const file of [op.cpu, op.cuda]) expect(existsSync(join(packageRoot(), file)), file).toBe(true);
      expect(readFileSync(join(packageRoot(), op.cpu), 'utf8'), `${op.cpu} defines ${op.method}_cpu`).toMatch(new RegExp(`\\b${op.method}_cpu\\(`));
      expect(readFileSync(join(packageRoot(), op.cuda), 'utf8'), `${op.cuda} has launchers`).toMatch(/_launch\(/);
      expect(opsH, `ops.h declares ${op.method}_cpu`).toMatch(new RegExp(`\\b${op.method}_cpu\\(`));
      expect(cpuOps, `CpuOps::${op.method}`).toMatch(new RegExp(`\\bvoid ${op.method}\\(`));
      expect(cudaOps, `CudaOps::${op.method}`).toMatch(new RegExp(`\\bvoid ${op.method}\\(`));
    }
  });

  const all = cases();
  it('every op of the table has cases here', () => {
    expect(Object.keys(all).sort()).toEqual(table.map((o) => o.name).sort());
  });

  it('the real-device harness: E_CUDA without a device, E_ARGUMENT for a device that is not there', () => {
    const args = { x: new Float32Array(4), w: new Float32Array(4), T: 1, D: 4, eps: 1e-5 };
    const info = getBackendInfo().cuda;
    if (!info.available) {
      expect(() => addon().cudaOp('rmsnorm', args)).toThrow(expect.objectContaining({ code: info.compiled ? 'E_CUDA' : 'E_UNSUPPORTED' }));
    } else {
      expect(() => addon().cudaOp('rmsnorm', args, info.devices.length)).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
    }
  });

  it('an unknown op name is E_ARGUMENT', () => {
    expect(() => addon().cpuOp('noSuchOp', {})).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
    expect(() => simt().cudaOp('noSuchOp', {})).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
  });

  it('bad arguments are refused with .code before anything runs', () => {
    const f = (n: number) => new Float32Array(n);
    for (const run of [(n: string, a: Record<string, unknown>) => addon().cpuOp(n, a), (n: string, a: Record<string, unknown>) => simt().cudaOp(n, a)]) {
      // gemm: a leading dimension shorter than its row; q8_0 rows that are not whole blocks; beta ≠ 0 without c
      expect(() => run('gemm', { a: f(12), b: f(12), M: 3, N: 3, K: 4, lda: 3 })).toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
      expect(() => run('gemm', { a: f(6), b: new Uint8Array(34), bType: 'q8_0', M: 2, N: 3, K: 3, transB: false }))
        .toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
      expect(() => run('gemm', { a: f(4), b: f(4), M: 2, N: 2, K: 2, beta: 1 })).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
      expect(() => run('attentionCausal', { q: f(3 * 64), k: f(2 * 64), v: f(2 * 64), T: 1, H: 3, KVH: 2, hd: 64 }))
        .toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
      expect(() => run('rmsnormBackward', { dy: f(8), x: f(8), w: f(4), rstd: f(1), dx: f(8), T: 2, D: 4 }))
        .toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
      expect(() => run('siluMulBackward', { dout: f(4), gate: f(4), up: f(3), dgate: f(4), dup: f(4), n: 4 }))
        .toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
    }
  });

  // The backward twins against central differences of a float64 forward (the CPU code has no vector
  // dispatch: one path), on every backend, accumulating from zero
  it.each(backends)('%s: backward twins match float64 central differences of their forward', (_name, run) => {
    const h = 1e-6;
    {
      const T = 3, D = 16, eps = 1e-5;
      const x = randomNormal(T * D, seed + 7), w = randomNormal(D, seed + 8), dy = randomNormal(T * D, seed + 9);
      const loss = (xv: ArrayLike<number>, wv: ArrayLike<number>) => {
        const y = rmsnormRef(xv, wv, T, D, eps);
        let l = 0;
        for (let i = 0; i < y.length; i++) l += y[i]! * dy[i]!;
        return l;
      };
      const grad = (v: Float64Array, other: (u: Float64Array) => number) => Float64Array.from(v, (_, i) => {
        const p = Float64Array.from(v), m = Float64Array.from(v);
        p[i]! += h, m[i]! -= h;
        return (other(p) - other(m)) / (2 * h);
      });
      const x64 = Float64Array.from(x), w64 = Float64Array.from(w);
      const dxWant = grad(x64, (u) => loss(u, w64)), dwWant = grad(w64, (u) => loss(x64, u));
      const rstd = Float32Array.from({ length: T }, (_, t) => {
        let ss = 0;
        for (let d = 0; d < D; d++) ss += x[t * D + d]! ** 2;
        return 1 / Math.sqrt(ss / D + eps);
      });
      const r = run('rmsnormBackward', { dy, x, w, rstd, dx: new Float32Array(T * D), dw: new Float32Array(D), T, D }) as { dx: Float32Array; dw: Float32Array };
      expect(relativeError(r.dx, dxWant), 'rmsnorm dx').toBeLessThan(1e-5);
      expect(relativeError(r.dw, dwWant), 'rmsnorm dw').toBeLessThan(1e-5);
    }
    {
      const n = 200, gate = randomNormal(n, seed + 10).map((v) => 3 * v), up = randomNormal(n, seed + 11), dout = randomNormal(n, seed + 12);
      const silu = (g: number) => g / (1 + Math.exp(-g));
      const dg = Float64Array.from(gate, (g, i) => dout[i]! * up[i]! * (silu(g + h) - silu(g - h)) / (2 * h));
      const du = Float64Array.from(gate, (g, i) => dout[i]! * silu(g));  // linear in u: exact
      const r = run('siluMulBackward', { dout, gate, up, dgate: new Float32Array(n), dup: new Float32Array(n), n }) as { dgate: Float32Array; dup: Float32Array };
      expect(relativeError(r.dgate, dg), 'silu dgate').toBeLessThan(1e-6);
      expect(relativeError(r.dup, du), 'silu dup').toBeLessThan(1e-6);
    }
  });

  for (const [backend, run] of backends) {
    describe(backend, () => {
      for (const [name, list] of Object.entries(all)) {
        it(`${name}: ${list.length} cases against float64 (seed ${seed})`, () => {
          for (const c of list) {
            const r = run(name, c.args);
            const got = c.get ? c.get(r) : (r as ArrayLike<number>);
            expect(got.length, c.what).toBe(c.want.length);
            if (c.tol === 0) {
              expect(Array.from(got), c.what).toEqual(Array.from(c.want));
            } else {
              for (let i = 0; i < got.length; i++) if (Number.isNaN(got[i])) throw new Error(`${c.what}: element ${i} was never written`);
              const err = relativeError(got, c.want);
              const alt = c.alt ? relativeError(got, c.alt.want) : Infinity;
              expect(Math.min(err, alt), `${c.what}: relative error ${err}` + (c.alt ? `, ${alt} against ${c.alt.why}` : ''))
                .toBeLessThan(c.tol);
            }
          }
        });
      }
    });
  }
});
