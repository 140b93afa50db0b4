/**
 * The synthetic world (lib/synth): seeded and reproducible to the byte; no held-out case leaks into a training
 * file; captions, questions and answers agree with the ground truth; yes/no answers are balanced; the images
 * carry the truth where it can be measured without our own model — a finding changes the pixels on the
 * patient's side of a radiology image (radiological convention: the patient's right is the image's left), and
 * the five modalities are told apart by a nearest-centroid classifier on colour and a 4×4 brightness grid.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { renderTruth } from '../../lib/synth/render.js';
import { FINDINGS, MODALITIES, type Truth } from '../../lib/synth/truth.js';
import { worldCase, writeSyntheticWorld, type World } from '../../lib/synth/world.js';

let dir: string;
let world: World;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'medllava-world-'));
  world = await writeSyntheticWorld({ out: join(dir, 'a'), count: 150, seed: 4, size: 64 });
}, 120_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const read = (f: string) => JSON.parse(readFileSync(f, 'utf8')) as { id: string; image: string; answer_type?: string; conversations: { from: string; value: string }[] }[];
const hashDir = (d: string) => {
  const h = createHash('sha256');
  for (const f of readdirSync(d).sort()) h.update(f).update(readFileSync(join(d, f)));
  return h.digest('hex');
};

describe('writeSyntheticWorld', () => {
  it('is reproducible to the byte for a seed, and another seed gives another world', async () => {
    const again = await writeSyntheticWorld({ out: join(dir, 'b'), count: 150, seed: 4, size: 64 });
    expect(hashDir(join(dir, 'b', 'images'))).toBe(hashDir(join(dir, 'a', 'images')));
    for (const k of ['truth', 'alignment', 'pretrain', 'vqaTrain', 'vqaTest', 'figures'] as const) {
      expect(readFileSync(again.files[k], 'utf8')).toBe(readFileSync(world.files[k], 'utf8'));
    }
    const other = await writeSyntheticWorld({ out: join(dir, 'c'), count: 20, seed: 5, size: 64 });
    expect(readFileSync(other.files.truth, 'utf8')).not.toBe(readFileSync(world.files.truth, 'utf8').split('\n').slice(0, 20).join('\n'));
    // a case does not depend on how many there are
    expect(worldCase(7, 4)).toEqual(world.cases[7]);
  });

  it('deals the modalities round-robin and covers every finding', () => {
    expect(world.cases.slice(0, 10).map((c) => c.truth.modality)).toEqual([...MODALITIES, ...MODALITIES]);
    for (const m of MODALITIES) {
      const seen = new Set(world.cases.filter((c) => c.truth.modality === m).map((c) => c.truth.finding));
      expect([...seen].sort()).toEqual([...FINDINGS[m]].sort());
    }
  });

  it('keeps held-out cases out of every training file', () => {
    const split = new Map(world.cases.map((c) => [c.image, c.split]));
    for (const f of [world.files.alignment, world.files.pretrain, world.files.vqaTrain]) {
      for (const r of read(f)) expect(split.get(r.image)).toBe('train');
    }
    for (const r of read(world.files.vqaTest)) expect(split.get(r.image)).toBe('test');
    const figs = JSON.parse(readFileSync(world.files.figures, 'utf8')) as Record<string, { split: string }[]>;
    expect(Object.values(figs).flat().filter((f) => f.split === 'test').length).toBe(world.cases.filter((c) => c.split === 'test').length);
    const n = { train: 0, val: 0, test: 0 };
    for (const c of world.cases) n[c.split]++;
    expect(n.test).toBeGreaterThan(10);
    expect(n.train).toBeGreaterThan(100);
  });

  it('writes captions and answers that agree with the ground truth', () => {
    for (const c of world.cases) {
      const t = c.truth, cap = c.caption.toLowerCase();
      if (t.finding !== 'none' && t.finding !== 'carcinoma') expect(cap).toContain(t.finding.replace('renal ', '').replace('liver lesion', 'lesion').replace('white matter lesions', 'white matter lesions'));
      if (t.side) expect(cap).toContain(t.side);
      if (t.sequence) expect(c.caption).toContain(`${t.sequence}-weighted`);
      expect(c.mentions.length).toBeGreaterThanOrEqual(1);
      expect(c.mentions.length).toBeLessThanOrEqual(3);
      expect(c.mentions.some((m) => m.includes(c.figLabel) || m.includes(c.figLabel.replace('Figure', 'Fig.')))).toBe(true);
    }
    const byImage = new Map(world.cases.map((c) => [c.image, c.truth]));
    const vqa = [...read(world.files.vqaTrain), ...read(world.files.vqaTest)];
    let yes = 0, closed = 0;
    for (const r of vqa) {
      const t = byImage.get(r.image)!;
      const q = r.conversations[0]!.value, a = r.conversations[1]!.value;
      expect(q).toMatch(/\n<image>$/);
      if (r.answer_type === 'CLOSED') {
        closed++;
        expect(['yes', 'no']).toContain(a);
        if (a === 'yes') yes++;
        if (/^Is this image normal\?/.test(q)) expect(a).toBe(t.finding === 'none' ? 'yes' : 'no');
        const side = /on the (left|right) side\?/.exec(q);
        if (side) expect(a).toBe(side[1] === t.side ? 'yes' : 'no');
      } else {
        expect(r.answer_type).toBe('OPEN');
        if (/organ/.test(q)) expect(a).toBe(t.organ);
        if (/located\?$/m.test(q.split('\n')[0]!)) expect(a).toContain(t.side ?? t.location!);
      }
    }
    expect(closed).toBeGreaterThan(200);
    expect(yes / closed).toBeGreaterThan(0.4);
    expect(yes / closed).toBeLessThan(0.6);
  });
});

describe('the images carry the truth', () => {
  const S = 96;
  /** per-pixel |difference| of the image with and without the finding (same seed), summed over each half */
  function halves(t: Truth, seed: number): { left: number; right: number } {
    const a = renderTruth(t, seed, S), b = renderTruth({ ...t, finding: 'none' }, seed, S);
    let left = 0, right = 0;
    for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) {
      const d = Math.abs(a[3 * (y * S + x)]! - b[3 * (y * S + x)]!);
      if (x < S / 2) left += d; else right += d;
    }
    return { left, right };
  }
  it.each([
    ['chest_xray', 'nodule'], ['chest_xray', 'mass'], ['chest_xray', 'pleural effusion'], ['chest_xray', 'pneumothorax'],
    ['ct_scan', 'nodule'], ['ct_scan', 'renal mass'], ['mri', 'mass'],
  ] as const)('%s %s: the pixels change on the patient\'s side (right = image left)', (modality, finding) => {
    for (let k = 0; k < 12; k++) {
      const c = worldCase(k * 5 + MODALITIES.indexOf(modality), 100 + k);
      const side = k % 2 ? 'left' : 'right';
      const t: Truth = { ...c.truth, finding, side, location: modality === 'mri' ? ['frontal lobe', 'parietal lobe', 'temporal lobe', 'occipital lobe'][k % 4]!
          : modality === 'chest_xray' ? (k % 3 ? 'upper zone' : 'lower zone') : finding === 'renal mass' ? 'kidney' : 'lung',
        sizeMm: finding === 'mass' ? 40 : 20, count: 1, organ: modality === 'ct_scan' ? (finding === 'renal mass' ? 'abdomen' : 'chest') : c.truth.organ };
      const h = halves(t, 1000 + k);
      const [mine, other] = side === 'right' ? [h.left, h.right] : [h.right, h.left];
      expect(mine).toBeGreaterThan(0);
      expect(mine).toBeGreaterThan(3 * other);
    }
  });

  it('the five modalities are told apart by colour and coarse layout alone (nearest centroid, held-out cases)', () => {
    // mean colour and a 4×4 grid of mean brightness (where the bright and dark parts are), on a 0–1 scale
    const feats = (px: Uint8Array) => {
      const f = new Array<number>(3 + 16).fill(0);
      const n = px.length / 3, W = 64;
      for (let i = 0; i < n; i++) {
        for (let c = 0; c < 3; c++) f[c] = f[c]! + px[3 * i + c]! / 255 / n;
        const cell = Math.floor((Math.floor(i / W) * 4) / W) * 4 + Math.floor(((i % W) * 4) / W);
        f[3 + cell] = f[3 + cell]! + (px[3 * i]! + px[3 * i + 1]! + px[3 * i + 2]!) / 765 / (n / 16);
      }
      return f;
    };
    const train = new Map<string, number[][]>(), test: { m: string; f: number[] }[] = [];
    for (let i = 0; i < 150; i++) {
      const c = worldCase(i, 21);
      const f = feats(renderTruth(c.truth, i, 64));
      if (i < 100) { const l = train.get(c.truth.modality) ?? []; l.push(f); train.set(c.truth.modality, l); } else test.push({ m: c.truth.modality, f });
    }
    const centroid = new Map([...train].map(([m, fs]) => [m, fs[0]!.map((_, j) => fs.reduce((a, f) => a + f[j]!, 0) / fs.length)]));
    let right = 0;
    for (const { m, f } of test) {
      let best = '', bd = Infinity;
      for (const [cm, c] of centroid) { const d = c.reduce((a, v, j) => a + (v - f[j]!) ** 2, 0); if (d < bd) { bd = d; best = cm; } }
      if (best === m) right++;
    }
    expect(right / test.length).toBeGreaterThan(0.9);
  });
});
