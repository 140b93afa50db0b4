/**
 * Drawing primitives for the synthetic image world: float planes in [0, 1] (one for grey images, three for
 * colour), soft-edged shapes, smooth value noise for tissue texture, box blur and acquisition noise. Everything
 * is driven by a seeded generator, so a world is the same bytes on every machine.
 */
import { SeededRandom } from '../sampling.js';

export class Rand extends SeededRandom {
  /** uniform in [a, b) */
  range(a: number, b: number): number { return a + (b - a) * this.next(); }
  int(a: number, b: number): number { return Math.floor(this.range(a, b + 1)); }
  pick<T>(xs: readonly T[]): T { return xs[Math.floor(this.next() * xs.length)]!; }
  chance(p: number): boolean { return this.next() < p; }
  /** standard normal (Box–Muller) */
  normal(): number {
    const u = Math.max(this.next(), 1e-12), v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  shuffle<T>(xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [xs[i], xs[j]] = [xs[j]!, xs[i]!];
    }
    return xs;
  }
}

export class Plane {
  readonly data: Float32Array;
  constructor(readonly w: number, readonly h: number, fill = 0) {
    this.data = new Float32Array(w * h).fill(fill);
  }
  get(x: number, y: number): number { return this.data[y * this.w + x]!; }
  /** blends `value` into the region where `alpha(x, y)` > 0 (alpha in [0, 1]); `mode` 'add' adds value·alpha */
  paint(alpha: (x: number, y: number) => number, value: number | ((x: number, y: number) => number), mode: 'blend' | 'add' = 'blend',
    box?: [number, number, number, number]): void {
    const [x0, y0, x1, y1] = box ?? (alpha as Shape).box ?? [0, 0, this.w, this.h];
    const { w } = this;
    for (let y = Math.max(0, Math.floor(y0)); y < Math.min(this.h, Math.ceil(y1)); y++) {
      for (let x = Math.max(0, Math.floor(x0)); x < Math.min(w, Math.ceil(x1)); x++) {
        const a = alpha(x + 0.5, y + 0.5);
        if (a <= 0) continue;
        const v = typeof value === 'number' ? value : value(x + 0.5, y + 0.5);
        const i = y * w + x;
        this.data[i] = mode === 'add' ? this.data[i]! + v * a : this.data[i]! * (1 - a) + v * a;
      }
    }
  }
  clamp(): this {
    for (let i = 0; i < this.data.length; i++) this.data[i] = Math.min(1, Math.max(0, this.data[i]!));
    return this;
  }
}

/** a coverage function that knows its bounding box (x0, y0, x1, y1), so painting it touches only that */
export type Shape = ((x: number, y: number) => number) & { box?: [number, number, number, number] };

function boxed(f: (x: number, y: number) => number, cx: number, cy: number, rx: number, ry: number, soft: number): Shape {
  const r = Math.max(rx, ry) + soft + 1;
  return Object.assign(f, { box: [cx - r, cy - r, cx + r + 1, cy + r + 1] as [number, number, number, number] });
}

/** 0 outside, 1 inside, a linear ramp `soft` pixels wide across the edge of the ellipse (rotated by `angle`) */
export function ellipse(cx: number, cy: number, rx: number, ry: number, soft = 1.5, angle = 0) {
  const c = Math.cos(angle), s = Math.sin(angle);
  const r = Math.min(rx, ry);
  return boxed((x: number, y: number): number => {
    const dx = x - cx, dy = y - cy;
    const u = (dx * c + dy * s) / rx, v = (-dx * s + dy * c) / ry;
    const d = (Math.sqrt(u * u + v * v) - 1) * r; // ≈ distance to the edge in pixels (negative inside)
    return Math.min(1, Math.max(0, 0.5 - d / soft));
  }, cx, cy, rx, ry, soft);
}

/** an ellipse whose radius wobbles with angle (lobulated masses, specimens, gyri) */
export function blob(cx: number, cy: number, rx: number, ry: number, rng: Rand, wobble = 0.15, soft = 1.5, lobes = 5) {
  const k = Array.from({ length: 3 }, (_, i) => ({ f: lobes + i * 2 + rng.int(0, 2), p: rng.range(0, 2 * Math.PI), a: wobble / (i + 1) }));
  const r = Math.min(rx, ry);
  const grow = 1 + k.reduce((a, q) => a + q.a, 0);
  return boxed((x: number, y: number): number => {
    const u = (x - cx) / rx, v = (y - cy) / ry;
    const t = Math.atan2(v, u);
    let m = 1;
    for (const q of k) m += q.a * Math.sin(q.f * t + q.p);
    const d = (Math.sqrt(u * u + v * v) - m) * r;
    return Math.min(1, Math.max(0, 0.5 - d / soft));
  }, cx, cy, rx * grow, ry * grow, soft);
}

/** smooth value noise in about [-1, 1]: octaves of bilinearly interpolated random grids, the first `cell` px wide */
export function valueNoise(w: number, h: number, rng: Rand, cell: number, octaves = 3): Float32Array {
  const out = new Float32Array(w * h);
  let amp = 1, total = 0;
  for (let o = 0; o < octaves; o++, cell /= 2, amp /= 2) {
    const c = Math.max(1, cell);
    const gw = Math.ceil(w / c) + 2, gh = Math.ceil(h / c) + 2;
    const g = new Float32Array(gw * gh);
    for (let i = 0; i < g.length; i++) g[i] = rng.next() * 2 - 1;
    for (let y = 0; y < h; y++) {
      const fy = y / c, iy = Math.floor(fy), ty = fy - iy, sy = ty * ty * (3 - 2 * ty);
      for (let x = 0; x < w; x++) {
        const fx = x / c, ix = Math.floor(fx), tx = fx - ix, sx = tx * tx * (3 - 2 * tx);
        const a = g[iy * gw + ix]!, b = g[iy * gw + ix + 1]!, d = g[(iy + 1) * gw + ix]!, e = g[(iy + 1) * gw + ix + 1]!;
        out[y * w + x] = out[y * w + x]! + amp * ((a * (1 - sx) + b * sx) * (1 - sy) + (d * (1 - sx) + e * sx) * sy);
      }
    }
    total += amp;
  }
  for (let i = 0; i < out.length; i++) out[i] = out[i]! / total;
  return out;
}

/** separable box blur of radius r, `passes` times (three passes ≈ a Gaussian) */
export function blur(p: Plane, r: number, passes = 2): Plane {
  if (r < 1) return p;
  const { w, h, data } = p;
  const tmp = new Float32Array(Math.max(w, h));
  for (let pass = 0; pass < passes; pass++) {
    for (const horizontal of [true, false]) {
      const n = horizontal ? w : h, lines = horizontal ? h : w;
      for (let l = 0; l < lines; l++) {
        const at = (i: number) => horizontal ? l * w + i : i * w + l;
        let acc = 0;
        for (let i = -r; i <= r; i++) acc += data[at(Math.min(n - 1, Math.max(0, i)))]!;
        for (let i = 0; i < n; i++) {
          tmp[i] = acc / (2 * r + 1);
          acc += data[at(Math.min(n - 1, i + r + 1))]! - data[at(Math.max(0, i - r))]!;
        }
        for (let i = 0; i < n; i++) data[at(i)] = tmp[i]!;
      }
    }
  }
  return p;
}

/** additive Gaussian noise of standard deviation `sigma`, optionally scaled by sqrt(signal) (quantum noise) */
export function addNoise(p: Plane, rng: Rand, sigma: number, poisson = false): Plane {
  for (let i = 0; i < p.data.length; i++) {
    const v = p.data[i]!;
    p.data[i] = v + rng.normal() * sigma * (poisson ? Math.sqrt(Math.max(v, 0.02)) : 1);
  }
  return p;
}

/** three planes → interleaved 8-bit RGB; one plane → grey replicated */
export function toRgb(planes: Plane[]): Uint8Array {
  const [r, g = r, b = r] = planes as [Plane, Plane?, Plane?];
  const out = new Uint8Array(r.w * r.h * 3);
  for (let i = 0; i < r.data.length; i++) {
    out[3 * i] = Math.round(255 * Math.min(1, Math.max(0, r.data[i]!)));
    out[3 * i + 1] = Math.round(255 * Math.min(1, Math.max(0, g!.data[i]!)));
    out[3 * i + 2] = Math.round(255 * Math.min(1, Math.max(0, b!.data[i]!)));
  }
  return out;
}
