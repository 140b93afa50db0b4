/**
 * A run's curves beside its checkpoints: metrics.csv (one row per optimizer step) and loss.png — the loss
 * (left axis) and the learning rate (right axis) over the steps, drawn as SVG and rendered by sharp.
 */
import { join } from 'node:path';

import sharp from 'sharp';

import { writeFileAtomic } from './checkpoint.js';

export interface CurvePoint {
  step: number; epoch: number; loss: number; gradNorm: number; lr: number; tokensPerSecond: number; samplesPerSecond: number; elapsed: number;
}

const COLUMNS = ['step', 'epoch', 'loss', 'gradNorm', 'lr', 'tokensPerSecond', 'samplesPerSecond', 'elapsed'] as const;

export function metricsCsv(points: CurvePoint[]): string {
  return [COLUMNS.join(','), ...points.map((p) => COLUMNS.map((c) => String(p[c])).join(','))].join('\n') + '\n';
}

function ticks(lo: number, hi: number, n: number): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((k) => k * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) out.push(v);
  return out;
}

const fmt = (v: number) => (Math.abs(v) >= 1e-2 || v === 0 ? String(Number(v.toPrecision(3))) : v.toExponential(1));

/** The loss / learning-rate chart as SVG (width × height pixels). */
export function curveSvg(points: CurvePoint[], width = 800, height = 450): string {
  const L = 70, R = 80, T = 30, B = 50, w = width - L - R, h = height - T - B;
  const finite = points.filter((p) => Number.isFinite(p.loss));
  const s0 = points[0]?.step ?? 0, s1 = Math.max(s0 + 1, points[points.length - 1]?.step ?? 1);
  const lossHi = Math.max(...finite.map((p) => p.loss), 1e-6), lossLo = Math.min(0, ...finite.map((p) => p.loss));
  const lrHi = Math.max(...points.map((p) => p.lr), 1e-12);
  const x = (s: number) => L + ((s - s0) / (s1 - s0)) * w;
  const yl = (v: number) => T + h - ((v - lossLo) / (lossHi - lossLo)) * h;
  const yr = (v: number) => T + h - (v / lrHi) * h;
  const line = (pts: [number, number][], color: string, dash = '') =>
    `<polyline fill="none" stroke="${color}" stroke-width="2" ${dash ? `stroke-dasharray="${dash}"` : ''} points="${pts.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(' ')}"/>`;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<rect x="${L}" y="${T}" width="${w}" height="${h}" fill="none" stroke="#888"/>`,
  ];
  for (const v of ticks(lossLo, lossHi, 5)) {
    parts.push(`<line x1="${L}" x2="${L + w}" y1="${yl(v)}" y2="${yl(v)}" stroke="#eee"/>`,
      `<text x="${L - 6}" y="${yl(v) + 4}" text-anchor="end" fill="#1f77b4">${fmt(v)}</text>`);
  }
  for (const v of ticks(0, lrHi, 4)) parts.push(`<text x="${L + w + 6}" y="${yr(v) + 4}" fill="#d62728">${fmt(v)}</text>`);
  for (const v of ticks(s0, s1, 6)) parts.push(`<text x="${x(v)}" y="${T + h + 18}" text-anchor="middle">${fmt(v)}</text>`);
  parts.push(`<text x="${L + w / 2}" y="${height - 12}" text-anchor="middle">optimizer step</text>`,
    `<text x="${L}" y="${T - 10}" fill="#1f77b4">loss</text>`, `<text x="${L + w}" y="${T - 10}" text-anchor="end" fill="#d62728">learning rate</text>`);
  if (finite.length) parts.push(line(finite.map((p) => [x(p.step), yl(p.loss)]), '#1f77b4'));
  if (points.length) parts.push(line(points.map((p) => [x(p.step), yr(p.lr)]), '#d62728', '6 4'));
  parts.push('</svg>');
  return parts.join('\n');
}

/** metrics.csv and loss.png in `dir` (each written atomically). */
export async function writeCurves(dir: string, points: CurvePoint[]): Promise<void> {
  writeFileAtomic(join(dir, 'metrics.csv'), metricsCsv(points));
  const png = await sharp(Buffer.from(curveSvg(points))).png().toBuffer();
  writeFileAtomic(join(dir, 'loss.png'), png);
}
