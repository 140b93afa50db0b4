/**
 * Independent references for kernel tests: float64 math and IEEE half/bfloat16 encoders written
 * here in TypeScript, separately from the C++ conversions they check.
 */

/** Deterministic normal(0,1) samples (mulberry32 and Box–Muller) so failures reproduce by seed. */
export function randomNormal(n: number, seed: number): Float32Array {
  let state = (seed * 0x9e3779b1) >>> 0;
  const uniform = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 2 ** 32;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform()));
    const th = 2 * Math.PI * uniform();
    out[i] = r * Math.cos(th);
    if (i + 1 < n) out[i + 1] = r * Math.sin(th);
  }
  return out;
}

/** float → IEEE binary16 bits, round to nearest even (via exact float64 arithmetic). */
export function toHalfBits(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00;
  if (a < 2 ** -14) {
    // subnormal: units of 2^-24
    return sign | roundEven(a / 2 ** -24);
  }
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  let m = roundEven((a / 2 ** e - 1) * 1024);
  if (m === 1024) { m = 0; e++; }
  if (e > 15) return sign | 0x7c00;
  return sign | ((e + 15) << 10) | m;
}

export function fromHalfBits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** float32 → bfloat16 bits, round to nearest even. */
export function toBf16Bits(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x40;
  const lower = u & 0xffff;
  let upper = u >>> 16;
  if (lower > 0x8000 || (lower === 0x8000 && (upper & 1))) upper = (upper + 1) & 0xffff;
  return upper;
}

export function fromBf16Bits(h: number): number {
  return new Float32Array(new Uint32Array([h << 16]).buffer)[0]!;
}

function roundEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** erf to ~1e-15: Taylor series near 0, continued fraction for erfc beyond. */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 100; n++) {
      term *= (-ax * ax) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(x) = exp(-x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + …))))
  let f = ax;
  for (let n = 60; n >= 1; n--) f = ax + n / 2 / f;
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

export type Activation = 'none' | 'gelu' | 'quick_gelu';

export function activate(x: number, act: Activation): number {
  if (act === 'gelu') return 0.5 * x * (1 + erf(x / Math.SQRT2));
  if (act === 'quick_gelu') return x / (1 + Math.exp(-1.702 * x));
  return x;
}

/** out = act(a · wᵀ + bias) in float64. a (M,K), w (N,K) given as float values. */
export function matmulReference(a: ArrayLike<number>, w: ArrayLike<number>, bias: ArrayLike<number> | null,
  M: number, N: number, K: number, act: Activation): Float64Array {
  const out = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = bias ? bias[n]! : 0;
      for (let k = 0; k < K; k++) s += a[m * K + k]! * w[n * K + k]!;
      out[m * N + n] = activate(s, act);
    }
  }
  return out;
}

/**
 * ‖got − ref‖ / ‖ref‖ — the error measure ARCHITECTURE.md prescribes. NaN anywhere gives Infinity.
 * `scale`, when given, replaces ‖ref‖ if larger: for a matmul pass the norm of |a|·|w|ᵀ + |bias|,
 * the quantity floating-point accumulation error is proportional to, so that an output that
 * happens to cancel to nearly zero (one output, few terms) does not make the measure blow up.
 */
export function relativeError(got: ArrayLike<number>, ref: ArrayLike<number>, scale?: ArrayLike<number>): number {
  if (got.length !== ref.length) throw new Error(`length ${got.length} vs ${ref.length}`);
  let e = 0;
  let n = 0;
  for (let i = 0; i < ref.length; i++) {
    const g = got[i]!;
    if (!Number.isFinite(g)) return Infinity;
    e += (g - ref[i]!) ** 2;
    n += ref[i]! ** 2;
  }
  if (scale) {
    let sn = 0;
    for (let i = 0; i < scale.length; i++) sn += scale[i]! ** 2;
    n = Math.max(n, sn);
  }
  return Math.sqrt(e / (n || 1));
}

/** |a| · |w|ᵀ + |bias|: the error scale of a matmul (see relativeError). */
export function matmulErrorScale(a: ArrayLike<number>, w: ArrayLike<number>, bias: ArrayLike<number> | null,
  M: number, N: number, K: number): Float64Array {
  const abs = (x: ArrayLike<number>) => Float64Array.from({ length: x.length }, (_, i) => Math.abs(x[i]!));
  return matmulReference(abs(a), abs(w), bias ? abs(bias) : null, M, N, K, 'none');
}

export type DType = 'f32' | 'f16' | 'bf16';

/** Random weights in a dtype: the raw array the addon takes and the exact float values it holds. */
export function randomWeights(n: number, scale: number, dtype: DType, seed: number):
  { raw: Float32Array | Uint16Array; values: Float64Array } {
  const f = randomNormal(n, seed);
  const values = new Float64Array(n);
  if (dtype === 'f32') {
    for (let i = 0; i < n; i++) { f[i] = f[i]! * scale; values[i] = f[i]!; }
    return { raw: f, values };
  }
  const raw = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    const x = Math.fround(f[i]! * scale);
    raw[i] = dtype === 'f16' ? toHalfBits(x) : toBf16Bits(x);
    values[i] = dtype === 'f16' ? fromHalfBits(raw[i]!) : fromBf16Bits(raw[i]!);
  }
  return { raw, values };
}

/** The activations as the tensor-core path sees them: rounded to the weight's 16-bit type. */
export function roundTo(a: Float32Array, dtype: DType): Float64Array {
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) {
    out[i] = dtype === 'f16' ? fromHalfBits(toHalfBits(a[i]!)) : dtype === 'bf16' ? fromBf16Bits(toBf16Bits(a[i]!)) : a[i]!;
  }
  return out;
}

/** log_softmax in float64 of float32 logits (the reference every log-probability is judged by). */
export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let m = -Infinity;
  for (let i = 0; i < logits.length; i++) m = Math.max(m, logits[i]!);
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += Math.exp(logits[i]! - m);
  const lse = m + Math.log(z);
  return Float64Array.from({ length: logits.length }, (_, i) => logits[i]! - lse);
}

/** max |a − b| over two equal-length arrays */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i]! - b[i]!));
  return w;
}

/** Random Q4_K / Q6_K super-blocks (no quantizer for them here): random bytes with sane f16 scales. */
export function randomBlocks(type: 'Q4_K' | 'Q6_K', elems: number, seed: number): Uint8Array {
  const bytes = type === 'Q4_K' ? 144 : 210;
  const out = new Uint8Array((elems / 256) * bytes);
  let s = seed >>> 0;
  for (let i = 0; i < out.length; i++) { s = (Math.imul(s, 1103515245) + 12345) >>> 0; out[i] = s >>> 24; }
  const dv = new DataView(out.buffer);
  for (let b = 0; b < out.length / bytes; b++) {
    if (type === 'Q4_K') { dv.setUint16(b * bytes, 0x0c00, true); dv.setUint16(b * bytes + 2, 0x0c00, true); } // d, dmin = 2^-12
    else dv.setUint16(b * bytes + 208, 0x0400, true); // d = 2^-14
  }
  return out;
}
