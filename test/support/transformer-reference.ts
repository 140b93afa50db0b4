/**
 * float64 references of the transformer ops (native/ops/ops.h), written from their definitions:
 * RMSNorm (LLaMA), LayerNorm, RoPE in both pairings (HF's halves, llama.cpp's adjacent pairs),
 * SiLU·mul, causal grouped-query attention over an f16 KV cache, and full (ViT) attention.
 */
import { fromHalfBits } from './reference.js';

export function rmsnormRef(x: ArrayLike<number>, w: ArrayLike<number>, T: number, D: number, eps: number): Float64Array {
  const out = new Float64Array(T * D);
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let i = 0; i < D; i++) ss += x[t * D + i]! ** 2;
    const k = 1 / Math.sqrt(ss / D + eps);
    for (let i = 0; i < D; i++) out[t * D + i] = x[t * D + i]! * k * w[i]!;
  }
  return out;
}

export function layernormRef(x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number>, T: number, D: number,
  eps: number): Float64Array {
  const out = new Float64Array(T * D);
  for (let t = 0; t < T; t++) {
    let mean = 0;
    for (let i = 0; i < D; i++) mean += x[t * D + i]!;
    mean /= D;
    let v = 0;
    for (let i = 0; i < D; i++) v += (x[t * D + i]! - mean) ** 2;
    const k = 1 / Math.sqrt(v / D + eps);
    for (let i = 0; i < D; i++) out[t * D + i] = (x[t * D + i]! - mean) * k * w[i]! + b[i]!;
  }
  return out;
}

export function ropeRef(x: ArrayLike<number>, T: number, H: number, hd: number, pos0: number, theta: number,
  mode: 'half' | 'adjacent'): Float64Array {
  const out = Float64Array.from(x);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      const base = (t * H + h) * hd;
      for (let i = 0; i < hd / 2; i++) {
        const a = (pos0 + t) * theta ** ((-2 * i) / hd);
        const i0 = base + (mode === 'half' ? i : 2 * i);
        const i1 = base + (mode === 'half' ? i + hd / 2 : 2 * i + 1);
        const x0 = x[i0]!, x1 = x[i1]!;
        out[i0] = x0 * Math.cos(a) - x1 * Math.sin(a);
        out[i1] = x1 * Math.cos(a) + x0 * Math.sin(a);
      }
    }
  }
  return out;
}

export function siluMulRef(gate: ArrayLike<number>, up: ArrayLike<number>): Float64Array {
  return Float64Array.from({ length: gate.length }, (_, i) => (gate[i]! / (1 + Math.exp(-gate[i]!))) * up[i]!);
}

/** One query row against rows `keys` of K and V (row r at r·stride + off), softmax(q·k / √hd)·v. */
function attendRef(q: ArrayLike<number>, qOff: number, k: (i: number) => number, v: (i: number) => number, rows: number,
  stride: number, off: number, hd: number, out: Float64Array, oOff: number) {
  const s = new Float64Array(rows);
  let m = -Infinity;
  for (let j = 0; j < rows; j++) {
    let d = 0;
    for (let i = 0; i < hd; i++) d += q[qOff + i]! * k(j * stride + off + i);
    s[j] = d / Math.sqrt(hd);
    m = Math.max(m, s[j]!);
  }
  let z = 0;
  for (let j = 0; j < rows; j++) z += (s[j] = Math.exp(s[j]! - m));
  for (let i = 0; i < hd; i++) {
    let acc = 0;
    for (let j = 0; j < rows; j++) acc += s[j]! * v(j * stride + off + i);
    out[oOff + i] = acc / z;
  }
}

/** Causal GQA attention of T queries (positions nPast … nPast+T−1) over an f16 cache of nPast + T rows. */
export function attentionCachedRef(q: ArrayLike<number>, kCache: Uint16Array, vCache: Uint16Array, T: number, nPast: number,
  H: number, KVH: number, hd: number): Float64Array {
  const out = new Float64Array(T * H * hd);
  const kf = Float64Array.from(kCache, fromHalfBits);
  const vf = Float64Array.from(vCache, fromHalfBits);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / (H / KVH));
      attendRef(q, (t * H + h) * hd, (i) => kf[i]!, (i) => vf[i]!, nPast + t + 1, KVH * hd, kvh * hd, hd, out, (t * H + h) * hd);
    }
  }
  return out;
}

/** Full (non-causal) attention: q, k, v (T, H, hd). */
export function attentionFullRef(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, T: number, H: number,
  hd: number): Float64Array {
  const out = new Float64Array(T * H * hd);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) attendRef(q, (t * H + h) * hd, (i) => k[i]!, (i) => v[i]!, T, H * hd, h * hd, hd, out, (t * H + h) * hd);
  }
  return out;
}
