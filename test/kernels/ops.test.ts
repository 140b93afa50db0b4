/**
 * The op table (native/ops/op_list.h) through the one harness (native/napi/op_harness.h): every op
 * runs by name on every backend — the CPU (cpuOp), the SIMT-emulated CUDA device (the test addon's
 * cudaOp) and, where one is present, a real CUDA device (the addon's cudaOp) — against a float64
 * reference written here. A new op in the table fails this file until it has a case below. Outputs
 * start as NaN, so an element nothing writes fails.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { getBackendInfo } from '../../lib/index.js';
import { native, packageRoot } from '../../lib/native.js';
import { addon, simt } from '../support/addons.js';
import { python } from '../support/python.js';
import { activate, fromBf16Bits, fromHalfBits, randomNormal, relativeError, toBf16Bits, toHalfBits } from '../support/reference.js';
import { attentionCachedRef, attentionFullRef, layernormRef, rmsnormRef, ropeRef, siluMulRef } from '../support/transformer-reference.js';

type Run = (name: string, args: Record<string, unknown>) => unknown;
const gpu = getBackendInfo().cuda.available || process.env.MEDLLAVA_EXPECT_GPU === '1';
const seed = Number(process.env.MEDLLAVA_TEST_SEED ?? Date.now() % 100000);
// each emulated call under the next block order (forward, reverse, shuffled) and thread order, over
// shared memory poisoned before every block: no kernel may depend on how blocks or threads are scheduled
const orders = ['forward', 'reverse', 'shuffle'] as const;
let emulatedCalls = 0;
const emulated: Run = (n, a) => {
  const i = emulatedCalls++;
  simt().setOptions({ blockOrder: orders[i % 3]!, seed: seed + i, reverseThreads: i % 2 === 1, poisonShared: true });
  return simt().cudaOp(n, a);
};
afterAll(() => simt().setOptions({ blockOrder: 'forward' }));
// the CPU's scalar twins (the fallback without AVX2 / FMA / F16C: cross-entropy's softmax, the GEMM
// under attention's backward, …), through the same dispatch switch matmul.test.ts uses
const scalarCpu: Run = (n, a) => {
  addon().setCpuDispatch('scalar');
  try {
    return addon().cpuOp(n, a);
  } finally {
    addon().setCpuDispatch('auto');
  }
};
const backends: [string, Run][] = [
  ['cpu', (n, a) => addon().cpuOp(n, a)],
  ['cpu, scalar dispatch', scalarCpu],
  ['emulated CUDA', emulated],
  ...(gpu ? [['CUDA', (n: string, a: Record<string, unknown>) => addon().cudaOp(n, a)] as [string, Run]] : []),
];

const halfs = (x: Float32Array) => Uint16Array.from(x, toHalfBits);

/** one case: the arguments, the float64 reference, and how to read the result */
interface Case {
  what: string;
  /** the arguments, or how to make them on a backend (attentionBackward: from that backend's forward) */
  args: Record<string, unknown> | ((run: Run) => Record<string, unknown>);
  want: ArrayLike<number>;
  tol: number;
  get?: (r: unknown) => ArrayLike<number>;
  /** a second exact computation a backend may do instead (and why): the result must match one of the two */
  alt?: { want: ArrayLike<number>; why: string };
  /** the size rounding errors scale with, where larger than want's own (relativeError's `scale`) */
  scale?: ArrayLike<number>;
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

/** float64 attention of one sequence: q (T, H, hd), k, v (T, KVH, hd); query head h reads KV head
 * h / (H / KVH); causal: query t sees keys 0 … t */
function attentionRef(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, T: number, H: number, KVH: number, hd: number,
  causal: boolean): Float64Array {
  const o = new Float64Array(T * H * hd), scale = 1 / Math.sqrt(hd);
  for (let h = 0; h < H; h++) {
    const kvh = Math.floor(h / (H / KVH));
    for (let t = 0; t < T; t++) {
      const n = causal ? t + 1 : T, sc = new Float64Array(n);
      for (let u = 0; u < n; u++) {
        let dot = 0;
        for (let d = 0; d < hd; d++) dot += q[(t * H + h) * hd + d]! * k[(u * KVH + kvh) * hd + d]!;
        sc[u] = dot * scale;
      }
      const m = Math.max(...sc);
      let z = 0;
      for (let u = 0; u < n; u++) z += (sc[u] = Math.exp(sc[u]! - m));
      for (let d = 0; d < hd; d++) {
        let acc = 0;
        for (let u = 0; u < n; u++) acc += sc[u]! * v[(u * KVH + kvh) * hd + d]!;
        o[(t * H + h) * hd + d] = acc / z;
      }
    }
  }
  return o;
}

/** each row's mean and 1 / sqrt(var + eps) of x (T, D), computed in float64 and stored as f32 (what a forward saves) */
function layernormStats(x: ArrayLike<number>, T: number, D: number, eps: number) {
  const mean = new Float32Array(T), rstd = new Float32Array(T);
  for (let t = 0; t < T; t++) {
    let m = 0, v = 0;
    for (let d = 0; d < D; d++) m += x[t * D + d]!;
    m /= D;
    for (let d = 0; d < D; d++) v += (x[t * D + d]! - m) ** 2;
    mean[t] = m;
    rstd[t] = 1 / Math.sqrt(v / D + eps);
  }
  return { mean, rstd };
}

/**
 * The training ops — the backward twins, the loss and the optimizer — against python3-torch in
 * float64 (autograd, F.cross_entropy, torch.optim.AdamW; numpy for Σ x²) on shapes with ragged edges
 * (sizes off every multiple of 16 / 32 / 64, odd head dims, T = 1 and T > 64, GQA), accumulating into
 * non-zero gradients. Every tolerance is ‖got − want‖ / ‖want‖ of an fp32 result against the float64
 * reference. attentionBackward runs the forward (attentionCausal / attentionFull with stats) on the
 * same backend first and takes its out and lse, as the training graph does.
 */
/** native/ops/dropout.h's dropout_keep, from its definition */
function dropoutKeep(seed: number, i: number, p: number): boolean {
  const mix = (x: number) => {
    x ^= x >>> 16;
    x = Math.imul(x, 0x7feb352d);
    x ^= x >>> 15;
    x = Math.imul(x, 0x846ca68b);
    x ^= x >>> 16;
    return x >>> 0;
  };
  const lo = (v: number) => v >>> 0, hi = (v: number) => Math.floor(v / 2 ** 32) >>> 0;
  const s = mix(lo(seed) ^ mix(hi(seed)));
  const h = mix(lo(i) ^ mix(hi(i) ^ s));
  return Math.fround((h >>> 8) * (1 / 16777216)) >= Math.fround(p);
}

function trainingCases(s0: number): Record<string, Case[]> {
  let s = s0;
  const rnd = (n: number, k = 1, shift = 0) => randomNormal(n, s++).map((v) => k * v + shift);
  const field = (key: string) => (r: unknown) => (r as Record<string, ArrayLike<number>>)[key]!;
  const plus = (init: ArrayLike<number>, g: number[]) => Float64Array.from(g, (v, i) => init[i]! + v);
  const ints = (n: number, f: (i: number) => number) => Int32Array.from({ length: n }, (_, i) => f(i));
  const A = (x: ArrayLike<number> | null) => (x ? Array.from(x) : null);
  const eps = 1e-5;

  const ln = ([[37, 45, true], [3, 300, true], [1, 7, true], [6, 64, false], [0, 5, true]] as const).map(([T, D, trainW]) => {
    const x = rnd(T * D, 1.5, 2);
    return { T, D, x, w: rnd(D), dy: rnd(T * D), dx: rnd(T * D), dw: trainW ? rnd(D) : null, db: trainW ? rnd(D) : null,
      ...layernormStats(x, T, D, eps) };
  });
  const rope = ([[37, 3, 46, 1000, 'half', 10000], [37, 3, 46, 1000, 'adjacent', 10000], [5, 2, 80, 17, 'adjacent', 500000],
    [1, 1, 2, 4090, 'half', 10000], [2, 6, 128, 3, 'half', 10000]] as const)
    .map(([T, H, hd, pos0, mode, theta]) => ({ T, H, hd, pos0, mode, theta, dy: rnd(T * H * hd) }));
  const act = ([[1000, 'gelu'], [1000, 'quick_gelu'], [37, 'gelu'], [37, 'quick_gelu'], [45, 'none']] as const).map(([n, a]) => ({
    n, act: a, x: n === 1000 ? Float32Array.from({ length: n }, (_, j) => -10 + (20 * j) / n) : rnd(n, 3),
    dout: rnd(n), dx: rnd(n),
  }));
  // causal with GQA (and one with KVH = H), full (KVH = H); T = 1, ragged T and hd, T > 64 (several tiles of 16)
  const attn = ([[1, 6, 2, 45, true], [37, 6, 3, 64, true], [70, 6, 2, 40, true], [20, 4, 4, 128, true], [1, 2, 2, 32, false],
    [37, 3, 3, 45, false], [67, 2, 2, 80, false]] as const).map(([T, H, KVH, hd, causal]) => ({
    T, H, KVH, hd, causal, q: rnd(T * H * hd), k: rnd(T * KVH * hd), v: rnd(T * KVH * hd), dout: rnd(T * H * hd),
    dq: rnd(T * H * hd), dk: rnd(T * KVH * hd), dv: rnd(T * KVH * hd),
  }));
  // scale: LoRA's alpha / r (1/3 is not an f32: the op gets fround(1/3), and so does the reference)
  const res = ([[37, 45, true, true, 0.5], [3, 300, true, false, 2], [5, 16, false, false, undefined], [7, 9, false, false, 1 / 3]] as const)
    .map(([T, D, gamma, dgamma, scale]) => ({ n: T * D, D, scale: scale === undefined ? undefined : Math.fround(scale),
      h: rnd(T * D), a: rnd(T * D), dh: rnd(T * D), da: rnd(T * D), gamma: gamma ? rnd(D) : null, dgamma: dgamma ? rnd(D) : null }));
  const bias = ([[37, 45], [1, 300], [0, 7], [300, 3]] as const).map(([M, N]) => ({ M, N, dy: rnd(M * N), db: rnd(N) }));
  // repeated ids, and ids < 0 (spliced image rows) skipped
  const emb = ([[37, 45, 11], [5, 300, 3]] as const).map(([T, D, vocab]) => ({
    T, D, vocab, ids: ints(T, (t) => (T === 5 ? (t === 2 ? -1 : 1) : ((t * 7) % 13) - 2)), dout: rnd(T * D), dtable: rnd(vocab * D),
  }));
  // −100 (and another negative id) ignored; per-row weights; scale (a mean over the targets: 1 / their count);
  // logits far from 0 (shift ±100: exp would overflow / underflow without the max taken out first; at −100
  // every warp's Σ e^(x − m) exceeds the row's max, so a `red` reused before the max is read shows)
  const ce = ([[37, 45, true, 1 / 29, 0], [5, 1000, false, undefined, 0], [9, 300, true, 0.5, 0], [4, 1, false, 2, 0],
    [6, 300, false, undefined, -100], [6, 45, true, 0.25, 100]] as const)
    .map(([N, V, weighted, scale, shift]) => ({
      N, V, shift, scale: scale === undefined ? undefined : Math.fround(scale), logits: rnd(N * V, 3, shift),
      targets: ints(N, (i) => (i % 4 === 1 ? -100 : i === 2 ? -1 : (i * 31 + 7) % V)),
      weights: weighted ? Float32Array.from(rnd(N), (v) => Math.abs(v) + 0.1) : null,
    }));
  // the op takes its hyperparameters as f32 (AdamWArgs): the references use the same f32-rounded values
  // (1 − β2 for an f32 β2 = 0.999 is 1.3e-5 away from 0.001)
  const adam = ([[1000, 1, true, 1], [1000, 1, true, 0.37], [1000, 7, false, 0.5], [37, 1000, false, 1]] as const)
    .map(([n, step, viaTorch, gradScale]) => {
      const grad = rnd(n);
      for (let i = 0; i < 5; i++) grad[i] = 0;  // zero gradients: only the decay moves p (step 1)
      const fresh = step === 1;
      return {
        n, step, torch: viaTorch, p: rnd(n), grad, m: fresh ? new Float32Array(n) : rnd(n, 0.1),
        v: fresh ? new Float32Array(n) : Float32Array.from(rnd(n, 0.1), (x) => x * x), lr: Math.fround(0.05),
        beta1: Math.fround(fresh ? 0.9 : 0.8), beta2: Math.fround(fresh ? 0.999 : 0.95), eps: Math.fround(fresh ? 1e-8 : 1e-6),
        weightDecay: Math.fround(0.1), gradScale: Math.fround(gradScale),
      };
    });
  const ss = [0, 37, 1000, 270000].map((n) => rnd(n, 10));

  const ref = JSON.parse(python(`
import json, sys
import numpy as np, torch
import torch.nn.functional as F
torch.set_default_dtype(torch.float64)
q = json.loads(sys.stdin.read())
t = lambda a, *shape: torch.tensor(a, dtype=torch.float64).reshape(*shape)
def grad(x, n):
    return (x.grad if x.grad is not None else torch.zeros(n)).reshape(-1).tolist()
out = {k: [] for k in ['ln', 'rope', 'act', 'attn', 'res', 'bias', 'emb', 'ce', 'adam']}
for c in q['ln']:
    T, D = c['T'], c['D']
    x = t(c['x'], T, D).requires_grad_()
    w = t(c['w'], D).requires_grad_()
    b = torch.zeros(D, requires_grad=True)
    (F.layer_norm(x, (D,), w, b, ${eps}) * t(c['dy'], T, D)).sum().backward()
    out['ln'].append({'dx': grad(x, T * D), 'dw': grad(w, D), 'db': grad(b, D)})
for c in q['rope']:
    T, H, hd = c['T'], c['H'], c['hd']
    x = torch.zeros(T, H, hd, requires_grad=True)  # a rotation is linear: its gradient does not depend on x
    i = torch.arange(hd // 2, dtype=torch.float64)
    ang = (c['pos0'] + torch.arange(T, dtype=torch.float64))[:, None] * torch.pow(torch.tensor(float(c['theta'])), -2 * i / hd)[None, :]
    cs, sn = ang.cos()[:, None, :], ang.sin()[:, None, :]
    half = c['mode'] == 'half'
    x0, x1 = (x[..., :hd // 2], x[..., hd // 2:]) if half else (x[..., 0::2], x[..., 1::2])
    y0, y1 = x0 * cs - x1 * sn, x1 * cs + x0 * sn
    y = torch.cat([y0, y1], -1) if half else torch.stack([y0, y1], -1).reshape(T, H, hd)
    (y * t(c['dy'], T, H, hd)).sum().backward()
    out['rope'].append(grad(x, T * H * hd))
for c in q['act']:
    x = t(c['x'], -1).requires_grad_()
    y = F.gelu(x) if c['act'] == 'gelu' else x * torch.sigmoid(1.702 * x) if c['act'] == 'quick_gelu' else x
    (y * t(c['dout'], -1)).sum().backward()
    out['act'].append(grad(x, c['n']))
for c in q['attn']:
    T, H, KVH, hd = c['T'], c['H'], c['KVH'], c['hd']
    qq = t(c['q'], T, H, hd).requires_grad_()
    k = t(c['k'], T, KVH, hd).requires_grad_()
    v = t(c['v'], T, KVH, hd).requires_grad_()
    kk, vv = k.repeat_interleave(H // KVH, dim=1), v.repeat_interleave(H // KVH, dim=1)  # query head h reads KV head h // (H / KVH)
    sc = torch.einsum('thd,shd->hts', qq, kk) / hd ** 0.5
    if c['causal']:
        sc = sc.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float('-inf'))
    o = torch.einsum('hts,shd->thd', sc.softmax(-1), vv)
    (o * t(c['dout'], T, H, hd)).sum().backward()
    out['attn'].append({'dq': grad(qq, 0), 'dk': grad(k, 0), 'dv': grad(v, 0)})
for c in q['res']:
    n, D = c['n'], c['D']
    a = t(c['a'], n // D, D).requires_grad_()
    gm = t(c['gamma'], D).requires_grad_() if c['gamma'] is not None else None
    scale = c['scale'] if c['scale'] is not None else 1.0
    h = t(c['h'], n // D, D) + scale * (gm if gm is not None else 1.0) * a
    (h * t(c['dh'], n // D, D)).sum().backward()
    out['res'].append({'da': grad(a, n), 'dgamma': grad(gm, D) if gm is not None else []})
for c in q['bias']:
    M, N = c['M'], c['N']
    b = torch.zeros(N, requires_grad=True)
    ((torch.zeros(M, N) + b) * t(c['dy'], M, N)).sum().backward()
    out['bias'].append(grad(b, N))
for c in q['emb']:
    ids = torch.tensor(c['ids'], dtype=torch.long)
    keep = ids >= 0
    table = torch.zeros(c['vocab'], c['D'], requires_grad=True)
    (F.embedding(ids[keep], table) * t(c['dout'], c['T'], c['D'])[keep]).sum().backward()
    out['emb'].append(grad(table, c['vocab'] * c['D']))
for c in q['ce']:
    N, V = c['N'], c['V']
    x = t(c['logits'], N, V).requires_grad_()
    tg = torch.tensor(c['targets'], dtype=torch.long)
    tg = torch.where(tg < 0, torch.full_like(tg, -100), tg)
    w = t(c['weights'], N) if c['weights'] is not None else torch.ones(N)
    loss = F.cross_entropy(x, tg, reduction='none', ignore_index=-100) * w
    (loss.sum() * (c['scale'] if c['scale'] is not None else 1.0)).backward()
    out['ce'].append({'loss': loss.tolist(), 'dlogits': grad(x, N * V)})
for c in q['adam']:
    p0, g = t(c['p'], -1), t(c['grad'], -1) * c['gradScale']
    lr, b1, b2, eps, wd, step = c['lr'], c['beta1'], c['beta2'], c['eps'], c['weightDecay'], c['step']
    if c['torch']:  # one step of torch.optim.AdamW from fresh state
        p = p0.clone().requires_grad_()
        p.grad = g.clone()
        opt = torch.optim.AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
        opt.step()
        st = opt.state[p]
        out['adam'].append({'p': p.detach().tolist(), 'm': st['exp_avg'].tolist(), 'v': st['exp_avg_sq'].tolist()})
    else:  # step t > 1 from the given m, v: the order of native/ops/ops.h (PyTorch's), in float64
        m = b1 * t(c['m'], -1) + (1 - b1) * g
        v = b2 * t(c['v'], -1) + (1 - b2) * g * g
        p = p0 - lr * wd * p0
        p = p - lr * (m / (1 - b1 ** step)) / (torch.sqrt(v / (1 - b2 ** step)) + eps)
        out['adam'].append({'p': p.tolist(), 'm': m.tolist(), 'v': v.tolist()})
out['ss'] = [float(np.sum(np.square(np.array(x, dtype=np.float64)))) for x in q['ss']]
print(json.dumps(out))
`, [], JSON.stringify({
    ln: ln.map((c) => ({ T: c.T, D: c.D, x: A(c.x), w: A(c.w), dy: A(c.dy) })),
    rope: rope.map((c) => ({ ...c, dy: A(c.dy) })),
    act: act.map((c) => ({ n: c.n, act: c.act, x: A(c.x), dout: A(c.dout) })),
    attn: attn.map((c) => ({ T: c.T, H: c.H, KVH: c.KVH, hd: c.hd, causal: c.causal, q: A(c.q), k: A(c.k), v: A(c.v), dout: A(c.dout) })),
    res: res.map((c) => ({ n: c.n, D: c.D, scale: c.scale ?? null, h: A(c.h), a: A(c.a), dh: A(c.dh), gamma: A(c.gamma) })),
    bias: bias.map((c) => ({ M: c.M, N: c.N, dy: A(c.dy) })),
    emb: emb.map((c) => ({ T: c.T, D: c.D, vocab: c.vocab, ids: A(c.ids), dout: A(c.dout) })),
    ce: ce.map((c) => ({ N: c.N, V: c.V, scale: c.scale ?? null, logits: A(c.logits), targets: A(c.targets), weights: A(c.weights) })),
    adam: adam.map((c) => ({ ...c, p: A(c.p), grad: A(c.grad), m: A(c.m), v: A(c.v) })),
    ss: ss.map(A),
  })));

  const out: Record<string, Case[]> = {};
  // Tolerances: 1e-6 where each output element is a short fp32 expression of its inputs (dx: two row
  // sums of ≤ 300 terms, the f32 mean / rstd a forward saves); 1e-5 for the column sums over the rows
  // (dw, db, dgamma, a bias: the CUDA kernels add up to 300 rows in fp32, in order; the CPU in double)
  // and for attention (sums over T keys, twice, fed by the f32 forward's out and lse). Worst measured
  // over 15 seeds: ≤ 2.5e-7, but attention (4.2e-7) and the CUDA column sums (a bias over 300 rows: 7e-7).
  out.layernormBackward = ln.flatMap((c, k) => {
    const args = { dy: c.dy, x: c.x, w: c.w, mean: c.mean, rstd: c.rstd, dx: c.dx, T: c.T, D: c.D,
      ...(c.dw ? { dw: c.dw, db: c.db } : {}) };
    const what = `layernormBackward ${c.T}×${c.D}${c.dw ? '' : ' (w, b frozen)'}`;
    const r = ref.ln[k] as Record<string, number[]>;
    return [
      ...(c.T ? [{ what: `${what}: dx`, args, want: plus(c.dx, r.dx!), tol: 1e-6, get: field('dx') }] : []),
      ...(c.dw ? [{ what: `${what}: dw`, args, want: plus(c.dw, r.dw!), tol: 1e-5, get: field('dw') },
        { what: `${what}: db`, args, want: plus(c.db!, r.db!), tol: 1e-5, get: field('db') }]
        : [{ what: `${what}: no dw, db`, args, want: [], tol: 0, get: (x: unknown) => [...Array.from(field('dw')(x)), ...Array.from(field('db')(x))] }]),
    ];
  });
  // a rotation by −angle in fp32 with the angle in double, as the forward (whose tolerance this is)
  out.ropeBackward = rope.map((c, k) => ({
    what: `ropeBackward ${c.mode} ${c.T}×${c.H}×${c.hd} @${c.pos0} θ ${c.theta}`,
    args: { x: c.dy, T: c.T, heads: c.H, hd: c.hd, pos0: c.pos0, theta: c.theta, mode: c.mode }, want: ref.rope[k] as number[], tol: 1e-6,
  }));
  out.activationBackward = act.map((c, k) => ({
    what: `activationBackward ${c.act} ${c.n}`, args: { dout: c.dout, x: c.x, dx: c.dx, n: c.n, act: c.act },
    want: plus(c.dx, ref.act[k] as number[]), tol: 1e-6,
  }));
  out.attentionBackward = attn.flatMap((c, k) => {
    // the forward on the backend under test (its out and lse), once per backend
    const forwards = new Map<Run, Record<string, unknown>>();
    const args = (run: Run) => {
      let a = forwards.get(run);
      if (!a) {
        const { q, k: kk, v, T, H, KVH, hd } = c;
        const f = (c.causal ? run('attentionCausal', { q, k: kk, v, T, H, KVH, hd }) : run('attentionFull', { q, k: kk, v, T, H, hd, stats: true })) as
          { out: Float32Array; lse: Float32Array };
        a = { q, k: kk, v, out: f.out, lse: f.lse, dout: c.dout, dq: c.dq, dk: c.dk, dv: c.dv, T, H, KVH, hd, causal: c.causal };
        forwards.set(run, a);
      }
      return a;
    };
    const what = `attentionBackward ${c.causal ? 'causal' : 'full'} ${c.T} × ${c.H}/${c.KVH} heads × ${c.hd}`;
    const r = ref.attn[k] as Record<'dq' | 'dk' | 'dv', number[]>;
    return (['dq', 'dk', 'dv'] as const).map((g) => ({ what: `${what}: ${g}`, args, want: plus(c[g], r[g]), tol: 1e-5, get: field(g) }));
  });
  out.residualBackward = res.flatMap((c, k) => {
    const args = { dh: c.dh, a: c.a, n: c.n, D: c.D, da: c.da, ...(c.gamma ? { gamma: c.gamma } : {}),
      ...(c.dgamma ? { dgamma: c.dgamma } : {}), ...(c.scale === undefined ? {} : { scale: c.scale }) };
    const what = `residualBackward ${c.n / c.D}×${c.D}${c.gamma ? ' γ' : ''}${c.gamma && !c.dgamma ? ' (frozen)' : ''} ×${c.scale ?? '1 (default)'}`;
    const r = ref.res[k] as { da: number[]; dgamma: number[] };
    return [
      { what: `${what}: da`, args, want: plus(c.da, r.da), tol: 1e-6, get: field('da') },
      c.dgamma ? { what: `${what}: dgamma`, args, want: plus(c.dgamma, r.dgamma), tol: 1e-5, get: field('dgamma') }
        : { what: `${what}: no dgamma`, args, want: [], tol: 0, get: field('dgamma') },
    ];
  });
  out.biasBackward = bias.map((c, k) => ({ what: `biasBackward ${c.M}×${c.N}`, args: { dy: c.dy, db: c.db, M: c.M, N: c.N },
    want: plus(c.db, ref.bias[k] as number[]), tol: 1e-5 }));
  out.embedBackward = emb.map((c, k) => ({ what: `embedBackward ${c.T}×${c.D} into ${c.vocab} rows`,
    args: { dout: c.dout, ids: c.ids, dtable: c.dtable, T: c.T, D: c.D, vocab: c.vocab }, want: plus(c.dtable, ref.emb[k] as number[]), tol: 1e-6 }));
  out.crossEntropy = ce.flatMap((c, k) => {
    const args = { logits: c.logits, targets: c.targets, N: c.N, V: c.V, ...(c.weights ? { weights: c.weights } : {}),
      ...(c.scale === undefined ? {} : { scale: c.scale }) };
    const what = `crossEntropy ${c.N}×${c.V}${c.shift ? ` logits ${c.shift > 0 ? '+' : ''}${c.shift}` : ''}${c.weights ? ' weighted' : ''} ×${c.scale ?? '1 (default)'}`;
    const r = ref.ce[k] as { loss: number[]; dlogits: number[] };
    return [
      { what: `${what}: loss`, args, want: r.loss, tol: 1e-6, get: field('loss') },
      { what: `${what}: dlogits`, args, want: r.dlogits, tol: 1e-6, get: field('dlogits') },
    ];
  });
  out.adamw = adam.flatMap((c, k) => {
    const args = { p: c.p, grad: c.grad, m: c.m, v: c.v, n: c.n, step: c.step, lr: c.lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps,
      weightDecay: c.weightDecay, ...(c.gradScale === 1 ? {} : { gradScale: c.gradScale }) };
    const what = `adamw ${c.n} step ${c.step} ${c.torch ? 'vs torch.optim.AdamW' : 'vs the formula'} gradScale ${c.gradScale}`;
    const r = ref.adam[k] as Record<'p' | 'm' | 'v', number[]>;
    const update = (x: unknown) => Float64Array.from(field('p')(x), (v, i) => v - c.p[i]!);
    return [
      ...(['p', 'm', 'v'] as const).map((g) => ({ what: `${what}: ${g}`, args, want: r[g], tol: 1e-6, get: field(g) })),
      // the step itself, p − p₀: its f32 result is rounded to |p|·2⁻²⁴ ≈ 1.2e-6 of a step of lr = 0.05
      { what: `${what}: p − p₀`, args, want: Float64Array.from(r.p, (v, i) => v - c.p[i]!), tol: 1e-5, get: update },
    ];
  });
  // dropout: dropout.h's mask, rebuilt here from its definition (32-bit lowbias hash of seed and index)
  out.dropout = ([[1000, 0.25, 7], [37, 0.5, 2 ** 40 + 3], [45, 0, 11], [100_000, 0.05, 12345]] as const).map(([n, p, sd]) => {
    const x = rnd(n);
    const want = Float64Array.from(x, (v, i) => (dropoutKeep(sd, i, p) ? v * Math.fround(1 / Math.fround(1 - p)) : 0));
    const kept = want.filter((v) => v !== 0).length / n;
    if (n === 100_000) expect(Math.abs(kept - 0.95), 'the kept share is 1 − p').toBeLessThan(0.005);
    return { what: `dropout ${n} p ${p} seed ${sd}`, args: { x, n, p, seed: sd }, want, tol: 1e-7 };
  });
  // double sums of exact f32 squares: only the order differs from numpy's
  out.sumSquares = ss.map((x, k) => ({ what: `sumSquares ${x.length}`, args: { x, n: x.length }, want: [ref.ss[k] as number],
    tol: x.length ? 1e-12 : 0 }));
  return out;
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
  // each row's log-sum-exp too (what the vision tower's backward needs); T ≥ 32 takes the CPU's GEMM path.
  // An lse is measured against the largest Σ_d |q_d·k_d| / √hd of its row where that is larger (scale): it
  // inherits the dot products' rounding, and two scores near 0 (T = 1) would make ‖lse‖ meaninglessly small
  out.attentionFull.push(...([[5, 2, 32], [40, 2, 64]] as const).map(([T, H, hd]) => {
    const q = randomNormal(T * H * hd, s++), k = randomNormal(T * H * hd, s++), v = randomNormal(T * H * hd, s++);
    const lse = new Float64Array(H * T), size = new Float64Array(H * T);
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        const sc: number[] = [];
        for (let u = 0; u < T; u++) {
          let dot = 0, abs = 0;
          for (let d = 0; d < hd; d++) {
            dot += q[(t * H + h) * hd + d]! * k[(u * H + h) * hd + d]!;
            abs += Math.abs(q[(t * H + h) * hd + d]! * k[(u * H + h) * hd + d]!);
          }
          sc.push(dot / Math.sqrt(hd));
          size[h * T + t] = Math.max(size[h * T + t]!, abs / Math.sqrt(hd));
        }
        const m = Math.max(...sc);
        lse[h * T + t] = m + Math.log(sc.reduce((a, x) => a + Math.exp(x - m), 0));
      }
    }
    return { what: `attentionFull ${T} × ${H}×${hd}: lse`, args: { q, k, v, T, H, hd, stats: true }, want: lse, tol: 1e-6, scale: size,
      get: (r: unknown) => (r as { lse: Float32Array }).lse };
  }));
  // one sequence causal over its own f32 K, V: the output and each row's log-sum-exp
  out.attentionCausal = ([[1, 2, 1, 64], [9, 4, 2, 32], [40, 2, 2, 128]] as const).flatMap(([T, H, KVH, hd]) => {
    const q = randomNormal(T * H * hd, s++), k = randomNormal(T * KVH * hd, s++), v = randomNormal(T * KVH * hd, s++);
    const o = new Float64Array(T * H * hd), lse = new Float64Array(H * T), size = new Float64Array(H * T);
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / (H / KVH));
      for (let t = 0; t < T; t++) {
        const sc: number[] = [];
        for (let u = 0; u <= t; u++) {
          let dot = 0, abs = 0;
          for (let d = 0; d < hd; d++) {
            dot += q[(t * H + h) * hd + d]! * k[(u * KVH + kvh) * hd + d]!;
            abs += Math.abs(q[(t * H + h) * hd + d]! * k[(u * KVH + kvh) * hd + d]!);
          }
          sc.push(dot / Math.sqrt(hd));
          size[h * T + t] = Math.max(size[h * T + t]!, abs / Math.sqrt(hd));
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
      { what: `attentionCausal ${T} × ${H}/${KVH} heads × ${hd}: lse`, args, want: lse, tol: 1e-6, scale: size,
        get: (r: unknown) => (r as { lse: Float32Array }).lse },
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
  Object.assign(out, trainingCases(seed + 5000));
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
      // the training ops: a buffer whose length does not fit the shape (E_SHAPE); a bad name, id, target,
      // step or head grouping (E_ARGUMENT)
      const shape = expect.objectContaining({ code: 'E_SHAPE' }), argument = expect.objectContaining({ code: 'E_ARGUMENT' });
      expect(() => run('layernormBackward', { dy: f(8), x: f(8), w: f(4), mean: f(1), rstd: f(2), dx: f(8), T: 2, D: 4 })).toThrow(shape);
      expect(() => run('layernormBackward', { dy: f(8), x: f(8), w: f(4), mean: f(2), rstd: f(2), dx: f(8), dw: f(4), db: f(3), T: 2, D: 4 }))
        .toThrow(shape);
      const rope = (hd: number, mode: string) => ({ x: f(2 * hd), T: 1, heads: 2, hd, pos0: 3, theta: 10000, mode });
      expect(() => run('ropeBackward', rope(5, 'half'))).toThrow(shape);  // an odd head dim
      expect(() => run('ropeBackward', rope(4, 'neox'))).toThrow(argument);
      expect(() => run('activationBackward', { dout: f(4), x: f(4), dx: f(4), n: 4, act: 'relu' })).toThrow(argument);
      expect(() => run('dropout', { x: f(4), n: 4, p: 1, seed: 1 })).toThrow(argument);
      expect(() => run('dropout', { x: f(4), n: 5, p: 0.5, seed: 1 })).toThrow(shape);
      expect(() => run('activationBackward', { dout: f(4), x: f(5), dx: f(4), n: 4, act: 'gelu' })).toThrow(shape);
      const att = (T: number, H: number, KVH: number, causal: boolean, lse = H * T) => ({ q: f(T * H * 4), k: f(T * KVH * 4), v: f(T * KVH * 4),
        out: f(T * H * 4), lse: f(lse), dout: f(T * H * 4), dq: f(T * H * 4), dk: f(T * KVH * 4), dv: f(T * KVH * 4), T, H, KVH, hd: 4, causal });
      expect(() => run('attentionBackward', att(2, 3, 2, true))).toThrow(argument);  // 3 heads do not group over 2 KV heads
      expect(() => run('attentionBackward', att(2, 4, 2, false))).toThrow(argument);  // full attention has KVH = H
      expect(() => run('attentionBackward', att(2, 4, 2, true, 4))).toThrow(shape);  // lse is (H, T)
      expect(() => run('residualBackward', { dh: f(10), a: f(10), da: f(10), n: 10, D: 4 })).toThrow(shape);
      expect(() => run('residualBackward', { dh: f(8), a: f(8), da: f(8), dgamma: f(4), n: 8, D: 4 })).toThrow(argument);  // dgamma without gamma
      expect(() => run('biasBackward', { dy: f(7), db: f(4), M: 2, N: 4 })).toThrow(shape);
      expect(() => run('embedBackward', { dout: f(8), ids: Int32Array.from([0, 3]), dtable: f(12), T: 2, D: 4, vocab: 3 })).toThrow(argument);
      expect(() => run('embedBackward', { dout: f(8), ids: Int32Array.from([0, 2]), dtable: f(8), T: 2, D: 4, vocab: 3 })).toThrow(shape);
      expect(() => run('crossEntropy', { logits: f(8), targets: Int32Array.from([1, 4]), N: 2, V: 4 })).toThrow(argument);  // a target ≥ V
      expect(() => run('crossEntropy', { logits: f(8), targets: Int32Array.from([1, 2]), weights: f(3), N: 2, V: 4 })).toThrow(shape);
      const adam = { p: f(4), grad: f(4), m: f(4), v: f(4), n: 4, step: 1, lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };
      expect(() => run('adamw', { ...adam, v: f(3) })).toThrow(shape);
      expect(() => run('adamw', { ...adam, step: 0 })).toThrow(argument);  // steps count from 1
      expect(() => run('sumSquares', { x: f(3), n: 4 })).toThrow(shape);
    }
  });

  // The backward twins against central differences of a float64 forward, on every backend,
  // accumulating from zero
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
    // d loss / d v of a float64 loss, by central differences
    const cd = (v: ArrayLike<number>, loss: (u: Float64Array) => number) => {
      const u = Float64Array.from(v);
      return Float64Array.from(u, (x, i) => {
        u[i] = x + h;
        const lp = loss(u);
        u[i] = x - h;
        const lm = loss(u);
        u[i] = x;
        return (lp - lm) / (2 * h);
      });
    };
    const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
      let sum = 0;
      for (let i = 0; i < a.length; i++) sum += a[i]! * b[i]!;
      return sum;
    };
    {
      const T = 3, D = 13, eps = 1e-5;
      const x = randomNormal(T * D, seed + 13).map((v) => 1.5 * v + 2), w = randomNormal(D, seed + 14), b = randomNormal(D, seed + 15);
      const dy = randomNormal(T * D, seed + 16);
      const loss = (xv: ArrayLike<number>, wv: ArrayLike<number>, bv: ArrayLike<number>) => dot(layernormRef(xv, wv, bv, T, D, eps), dy);
      const r = run('layernormBackward', { dy, x, w, ...layernormStats(x, T, D, eps), dx: new Float32Array(T * D), dw: new Float32Array(D),
        db: new Float32Array(D), T, D }) as { dx: Float32Array; dw: Float32Array; db: Float32Array };
      expect(relativeError(r.dx, cd(x, (u) => loss(u, w, b))), 'layernorm dx').toBeLessThan(1e-5);
      expect(relativeError(r.dw, cd(w, (u) => loss(x, u, b))), 'layernorm dw').toBeLessThan(1e-5);
      expect(relativeError(r.db, cd(b, (u) => loss(x, w, u))), 'layernorm db').toBeLessThan(1e-5);
    }
    for (const act of ['gelu', 'quick_gelu'] as const) {
      const n = 200, x = randomNormal(n, seed + 17).map((v) => 3 * v), dout = randomNormal(n, seed + 18);
      const want = Float64Array.from(x, (v, i) => (dout[i]! * (activate(v + h, act) - activate(v - h, act))) / (2 * h));
      const r = run('activationBackward', { dout, x, dx: new Float32Array(n), n, act }) as Float32Array;
      expect(relativeError(r, want), `${act} dx`).toBeLessThan(1e-6);
    }
    for (const mode of ['half', 'adjacent'] as const) {
      const T = 3, H = 2, hd = 10, pos0 = 5, dy = randomNormal(T * H * hd, seed + 19);
      const want = cd(new Float64Array(T * H * hd), (u) => dot(ropeRef(u, T, H, hd, pos0, 10000, mode), dy));
      const r = run('ropeBackward', { x: dy, T, heads: H, hd, pos0, theta: 10000, mode }) as Float32Array;
      expect(relativeError(r, want), `rope ${mode}`).toBeLessThan(1e-6);
    }
    for (const [T, H, KVH, hd, causal] of [[5, 4, 2, 6, true], [4, 2, 2, 5, false]] as const) {
      const q = randomNormal(T * H * hd, seed + 20), k = randomNormal(T * KVH * hd, seed + 21), v = randomNormal(T * KVH * hd, seed + 22);
      const dout = randomNormal(T * H * hd, seed + 23);
      const f = (causal ? run('attentionCausal', { q, k, v, T, H, KVH, hd }) : run('attentionFull', { q, k, v, T, H, hd, stats: true })) as
        { out: Float32Array; lse: Float32Array };
      const r = run('attentionBackward', { q, k, v, out: f.out, lse: f.lse, dout, dq: new Float32Array(q.length), dk: new Float32Array(k.length),
        dv: new Float32Array(v.length), T, H, KVH, hd, causal }) as { dq: Float32Array; dk: Float32Array; dv: Float32Array };
      const loss = (qv: ArrayLike<number>, kv: ArrayLike<number>, vv: ArrayLike<number>) => dot(attentionRef(qv, kv, vv, T, H, KVH, hd, causal), dout);
      const what = `attention ${causal ? 'causal' : 'full'} ${T} × ${H}/${KVH} × ${hd}`;
      expect(relativeError(r.dq, cd(q, (u) => loss(u, k, v))), `${what}: dq`).toBeLessThan(1e-5);
      expect(relativeError(r.dk, cd(k, (u) => loss(q, u, v))), `${what}: dk`).toBeLessThan(1e-5);
      expect(relativeError(r.dv, cd(v, (u) => loss(q, k, u))), `${what}: dv`).toBeLessThan(1e-5);
    }
    {  // cross-entropy: d(Σ_n scale · w_n · nll_n) / d logits, one row ignored
      const N = 3, V = 11, logits = randomNormal(N * V, seed + 24).map((x) => 2 * x), targets = Int32Array.from([4, -100, 10]);
      const weights = Float32Array.from([1, 0.5, 2]), scale = 0.25;
      const loss = (u: ArrayLike<number>) => {
        let l = 0;
        for (let n = 0; n < N; n++) {
          if (targets[n]! < 0) continue;
          let m = -Infinity, z = 0;
          for (let i = 0; i < V; i++) m = Math.max(m, u[n * V + i]!);
          for (let i = 0; i < V; i++) z += Math.exp(u[n * V + i]! - m);
          l += scale * weights[n]! * (m + Math.log(z) - u[n * V + targets[n]!]!);
        }
        return l;
      };
      const r = run('crossEntropy', { logits, targets, weights, scale, N, V }) as { dlogits: Float32Array };
      expect(relativeError(r.dlogits, cd(logits, loss)), 'crossEntropy dlogits').toBeLessThan(1e-6);
    }
    {  // residual with LayerScale: h += scale · γ ⊙ a → da, dγ
      const n = 24, D = 6, a = randomNormal(n, seed + 25), gamma = randomNormal(D, seed + 26), dh = randomNormal(n, seed + 27), scale = 0.75;
      const loss = (av: ArrayLike<number>, gv: ArrayLike<number>) => {
        let l = 0;
        for (let i = 0; i < n; i++) l += dh[i]! * scale * gv[i % D]! * av[i]!;
        return l;
      };
      const r = run('residualBackward', { dh, a, gamma, scale, da: new Float32Array(n), dgamma: new Float32Array(D), n, D }) as
        { da: Float32Array; dgamma: Float32Array };
      expect(relativeError(r.da, cd(a, (u) => loss(u, gamma))), 'residual da').toBeLessThan(1e-6);
      expect(relativeError(r.dgamma, cd(gamma, (u) => loss(a, u))), 'residual dgamma').toBeLessThan(1e-6);
    }
    {  // a bias: y = x + b broadcast over M rows → db
      const M = 5, N = 7, dy = randomNormal(M * N, seed + 28);
      const want = cd(new Float64Array(N), (b) => dot(Float64Array.from({ length: M * N }, (_, i) => b[i % N]!), dy));
      const r = run('biasBackward', { dy, db: new Float32Array(N), M, N }) as Float32Array;
      expect(relativeError(r, want), 'bias db').toBeLessThan(1e-6);
    }
    {  // the gather: out[t] = table[ids[t]] → dtable (a repeated id, an image row skipped)
      const T = 5, D = 4, vocab = 6, ids = Int32Array.from([2, 0, 2, -1, 5]), dout = randomNormal(T * D, seed + 29);
      const gather = (tab: ArrayLike<number>) => Float64Array.from({ length: T * D }, (_, i) => {
        const id = ids[Math.floor(i / D)]!;
        return id < 0 ? 0 : tab[id * D + (i % D)]!;
      });
      const want = cd(new Float64Array(vocab * D), (tab) => dot(gather(tab), dout));
      const r = run('embedBackward', { dout, ids, dtable: new Float32Array(vocab * D), T, D, vocab }) as Float32Array;
      expect(relativeError(r, want), 'embed dtable').toBeLessThan(1e-6);
    }
  });

  for (const [backend, run] of backends) {
    describe(backend, () => {
      for (const [name, list] of Object.entries(all)) {
        it(`${name}: ${list.length} cases against float64 (seed ${seed})`, () => {
          for (const c of list) {
            const r = run(name, typeof c.args === 'function' ? c.args(run) : c.args);
            const got = c.get ? c.get(r) : (r as ArrayLike<number>);
            expect(got.length, c.what).toBe(c.want.length);
            if (c.tol === 0) {
              expect(Array.from(got), c.what).toEqual(Array.from(c.want));
            } else {
              for (let i = 0; i < got.length; i++) if (Number.isNaN(got[i])) throw new Error(`${c.what}: element ${i} was never written`);
              const err = relativeError(got, c.want, c.scale);
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
