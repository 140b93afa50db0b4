/**
 * Procedural images for the synthetic world, one renderer per modality. Each draws anatomy-like structure from
 * the case's ground truth with the contrast, texture and noise of its kind:
 *   - chest x-ray: body, lungs with vessel markings, ribs, clavicles, mediastinum, heart, diaphragm domes
 *     (AP: magnified heart, scapulae over the lungs); quantum noise;
 *   - CT (axial): body wall, fat, vertebra, table; chest (lungs, vessels, mediastinum, aorta) or abdomen (liver,
 *     spleen, kidneys, aorta, bowel with gas); contrast brightens vessels and kidneys; CT noise;
 *   - MRI brain (axial): scalp, skull, CSF, cortex with sulci, white matter, ventricles, falx; T1 and T2
 *     contrasts (CSF dark / bright); lesions with oedema;
 *   - histopathology: a stain-absorbance model (haematoxylin, eosin, DAB) over glands, stroma, fat, nuclei;
 *   - gross pathology: a specimen on a drape with a millimetre ruler, cut-surface texture, highlights.
 * Sizes are drawn to scale (pixels per millimetre per modality), sides follow radiological convention.
 */
import { addNoise, blob, blur, ellipse, Plane, Rand, toRgb, valueNoise } from './canvas.js';
import type { Truth } from './truth.js';

const clamp01 = (v: number) => Math.min(1, Math.max(0, v));

/** image x of the patient's side in a radiology image: right → image left */
const sideX = (side: 'left' | 'right', cx: number, off: number) => side === 'right' ? cx - off : cx + off;

function chestXray(t: Truth, rng: Rand, S: number): Plane[] {
  const f = new Rand(rng.int(0, 2 ** 30)); // the finding draws from its own stream: with or without it, the rest is the same
  const p = new Plane(S, S, 0.03);
  const cx = S / 2 + rng.range(-0.02, 0.02) * S;
  const ap = t.view === 'AP';
  const mm = (S * 0.92) / 360; // px per mm
  p.paint(ellipse(cx, S * 0.6, S * 0.48, S * 0.62, S * 0.04), 0.34);
  p.paint(ellipse(cx, S * 0.02, S * 0.1, S * 0.14, S * 0.02), 0.36);
  // lungs: ellipses clipped by the diaphragm domes (the right dome higher)
  const lungs = (['right', 'left'] as const).map((side) => {
    const lx = sideX(side, cx, S * 0.19), ly = S * 0.46, rx = S * 0.155, ry = S * 0.3;
    const base = ly + ry * 0.78 - (side === 'right' ? S * 0.025 : 0);
    const e = ellipse(lx, ly, rx, ry, S * 0.015);
    const alpha = (x: number, y: number) => {
      const u = (x - lx) / rx;
      const dome = base - S * 0.07 * Math.max(0, 1 - u * u);
      return e(x, y) * clamp01((dome - y) / 2);
    };
    return { side, lx, ly, rx, ry, base, alpha };
  });
  const vessels = valueNoise(S, S, rng, S / 14, 3);
  for (const l of lungs) {
    p.paint(l.alpha, (x, y) => {
      const hilum = Math.hypot(x - (l.lx + (l.side === 'right' ? 0.5 : -0.5) * l.rx), (y - l.ly) * 0.8) / (l.rx * 2);
      const v = vessels[Math.floor(y) * S + Math.floor(x)]!;
      const mark = Math.pow(Math.max(0, 1 - Math.abs(v) * 6), 3) * 0.12 * Math.max(0, 1 - hilum);
      return 0.1 + 0.08 * Math.max(0, 1 - hilum) + mark;
    });
  }
  // ribs: curved bands over each hemithorax, clavicles, spine; scapulae on AP films
  for (const l of lungs) {
    const dir = l.side === 'right' ? -1 : 1;
    for (let k = 0; k < 9; k++) {
      const y0 = S * 0.16 + k * S * 0.062;
      const curve = (x: number) => y0 + 0.9 * ((x - (cx + dir * S * 0.03)) * dir) ** 2 / S - 0.5 * dir * (x - cx) * 0;
      p.paint((x, y) => {
        if ((x - cx) * dir < S * 0.02) return 0;
        return clamp01(1 - Math.abs(y - curve(x)) / (S * 0.011)) * clamp01(((x - cx) * dir) / (S * 0.05));
      }, 0.09, 'add', [0, y0 - S * 0.02, S, y0 + S * 0.22]);
    }
    p.paint((x, y) => {
      const a = (x - cx) * dir;
      if (a < S * 0.03 || a > S * 0.3) return 0;
      return clamp01(1 - Math.abs(y - (S * 0.19 - a * (ap ? 0.05 : 0.28))) / (S * 0.013));
    }, 0.16, 'add');
    if (ap) p.paint(ellipse(cx + dir * S * 0.33, S * 0.32, S * 0.07, S * 0.15, S * 0.03, dir * 0.3), 0.07, 'add');
  }
  p.paint(ellipse(cx, S * 0.5, S * 0.03, S * 0.6, S * 0.01), 0.07, 'add');
  // mediastinum and heart (a little left of the midline; larger on AP films and in cardiomegaly)
  const heartScale = (t.finding === 'cardiomegaly' ? 1.45 : 1) * (ap ? 1.1 : 1);
  p.paint(ellipse(cx, S * 0.33, S * 0.065, S * 0.22, S * 0.02), 0.52);
  p.paint(ellipse(cx + S * 0.045 * heartScale, S * 0.64, S * 0.125 * heartScale, S * 0.12 * Math.sqrt(heartScale), S * 0.02, -0.25), 0.55);
  // findings
  const lung = (side: 'left' | 'right') => lungs.find((l) => l.side === side)!;
  if ((t.finding === 'nodule' || t.finding === 'mass') && t.side) {
    const l = lung(t.side);
    const r = (t.sizeMm! * mm) / 2;
    const y = t.location === 'upper zone' ? l.ly - l.ry * 0.4 : l.ly + l.ry * 0.3;
    const x = l.lx + (t.side === 'right' ? -1 : 1) * l.rx * f.range(0, 0.35);
    p.paint(blob(x, y, r, r * f.range(0.85, 1.1), f, t.finding === 'mass' ? 0.12 : 0.04, Math.max(1.2, r * 0.3)), 0.24, 'add');
  } else if (t.finding === 'pleural effusion' && t.side) {
    const l = lung(t.side);
    const level = l.base - S * f.range(0.1, 0.2);
    const lateral = t.side === 'right' ? -1 : 1;
    p.paint((x, y) => {
      const meniscus = level - S * 0.06 * clamp01(((x - l.lx) * lateral) / l.rx + 0.3);
      return Math.max(l.alpha(x, y), y > l.ly && Math.abs(x - l.lx) < l.rx * 1.05 ? 0.6 : 0) * clamp01((y - meniscus) / (S * 0.02));
    }, 0.46);
  } else if (t.finding === 'pneumothorax' && t.side) {
    const l = lung(t.side);
    const shrink = f.range(0.6, 0.75);
    const ox = t.side === 'right' ? l.rx * (1 - shrink) * 0.9 : -l.rx * (1 - shrink) * 0.9;
    const inner = ellipse(l.lx + ox, l.ly + l.ry * 0.05, l.rx * shrink, l.ry * (shrink + 0.15), 1.5);
    p.paint((x, y) => l.alpha(x, y) * (1 - inner(x, y)), 0.045);
    p.paint((x, y) => l.alpha(x, y) * clamp01(1 - Math.abs(inner(x, y) - 0.5) * 2.2), 0.1, 'add');
  }
  blur(p, Math.max(1, Math.round(S / 200)), 2);
  addNoise(p, rng, 0.03, true);
  for (let i = 0; i < p.data.length; i++) p.data[i] = Math.pow(clamp01(p.data[i]!), 0.85);
  return [p];
}

function ctScan(t: Truth, rng: Rand, S: number): Plane[] {
  const f = new Rand(rng.int(0, 2 ** 30)); // the finding draws from its own stream: with or without it, the rest is the same
  const p = new Plane(S, S, 0.0);
  const cx = S / 2, cy = S * 0.5;
  const mm = (S * 0.86) / 380;
  const bw = S * 0.43, bh = S * 0.31;
  const fat = valueNoise(S, S, rng, S / 30, 2);
  p.paint(ellipse(cx, S * 0.92, S * 0.42, S * 0.03, 2), 0.3);
  p.paint(ellipse(cx, cy, bw, bh, 1.5), (x, y) => 0.28 + 0.02 * fat[Math.floor(y) * S + Math.floor(x)]!);
  p.paint(ellipse(cx, cy, bw - S * 0.035, bh - S * 0.03, 2), 0.46);
  const contrast = t.contrast === true;
  const vy = cy + bh * 0.62;
  const chest = t.organ === 'chest';
  if (chest) {
    const lungs = (['right', 'left'] as const).map((side) => ({ side, x: sideX(side, cx, S * 0.165), y: cy - S * 0.01, rx: S * 0.14, ry: S * 0.21 }));
    for (const l of lungs) {
      const shape = blob(l.x, l.y, l.rx, l.ry, rng, 0.05, 2, 3);
      p.paint(shape, 0.035);
      for (let k = 0; k < 14; k++) {
        const a = rng.range(0, 2 * Math.PI), d = Math.sqrt(rng.next()) * 0.8;
        const r = rng.range(0.6, 1.8) * S / 224;
        p.paint(ellipse(l.x + Math.cos(a) * d * l.rx, l.y + Math.sin(a) * d * l.ry, r, r, 1), contrast ? 0.55 : 0.42);
      }
    }
    p.paint(blob(cx + S * 0.03, cy - S * 0.03, S * 0.11, S * 0.13, rng, 0.04, 2), 0.5);
    p.paint(ellipse(cx + S * 0.035, vy - S * 0.07, S * 0.03, S * 0.03, 1.5), contrast ? 0.85 : 0.5);
    for (let k = 0; k < 12; k++) {  // ribs in cross-section around the chest wall
      const a = Math.PI * (0.15 + 0.7 * (k % 6) / 5) * (k < 6 ? 1 : -1) + (k < 6 ? 0 : Math.PI);
      p.paint(ellipse(cx + Math.cos(a) * (bw - S * 0.05), cy - Math.sin(a) * (bh - S * 0.045), S * 0.012, S * 0.02, 1, a), 0.85);
    }
    const lung = (side: 'left' | 'right') => lungs.find((l) => l.side === side)!;
    if (t.finding === 'nodule' && t.side) {
      const l = lung(t.side);
      const r = Math.max(1.2, (t.sizeMm! * mm) / 2);
      p.paint(blob(l.x + f.range(-0.4, 0.4) * l.rx, l.y + f.range(-0.5, 0.3) * l.ry, r, r, f, 0.08, 1.2), 0.5);
    } else if (t.finding === 'pleural effusion' && t.side) {
      const l = lung(t.side);
      const level = l.y + l.ry * f.range(0.1, 0.45);
      const e = ellipse(l.x, l.y, l.rx * 1.02, l.ry * 1.02, 2);
      p.paint(Object.assign((x: number, y: number) => e(x, y) * clamp01((y - level + Math.abs(x - l.x) * 0.15) / 2), { box: e.box }), 0.4);
    }
  } else {
    const liver = blob(sideX('right', cx, S * 0.15), cy - S * 0.03, S * 0.19, S * 0.18, f, 0.06, 2);
    const tex = valueNoise(S, S, f, S / 40, 2);
    p.paint(liver, (x, y) => (contrast ? 0.6 : 0.54) + 0.015 * tex[Math.floor(y) * S + Math.floor(x)]!);
    p.paint(blob(sideX('left', cx, S * 0.27), cy + S * 0.06, S * 0.06, S * 0.1, f, 0.05, 2), contrast ? 0.58 : 0.52);
    p.paint(blob(sideX('left', cx, S * 0.12), cy - S * 0.1, S * 0.09, S * 0.07, f, 0.08, 2), 0.42);
    for (let k = 0; k < 9; k++) {  // bowel loops, some with gas
      const x = cx + f.range(-0.12, 0.2) * S, y = cy + f.range(-0.2, 0.05) * S, r = f.range(0.025, 0.04) * S;
      p.paint(ellipse(x, y, r, r * f.range(0.7, 1), 1.5), 0.44);
      if (f.chance(0.5)) p.paint(ellipse(x, y - r * 0.4, r * 0.5, r * 0.35, 1), 0.02);
    }
    const kidneys = (['right', 'left'] as const).map((side) => ({ side, x: sideX(side, cx, S * 0.15), y: vy - S * 0.03 }));
    for (const k of kidneys) {
      p.paint(ellipse(k.x, k.y, S * 0.045, S * 0.065, 1.5, k.side === 'right' ? 0.4 : -0.4), contrast ? 0.8 : 0.56);
      p.paint(ellipse(k.x, k.y, S * 0.02, S * 0.03, 1.5), contrast ? 0.62 : 0.52);
    }
    p.paint(ellipse(cx + S * 0.02, vy - S * 0.075, S * 0.022, S * 0.022, 1.2), contrast ? 0.88 : 0.5);
    if (t.finding === 'liver lesion') {
      for (let k = 0; k < t.count!; k++) {
        const r = Math.max(1.5, (t.sizeMm! * mm * f.range(0.8, 1.1)) / 2);
        const x = sideX('right', cx, S * (0.15 + f.range(-0.08, 0.08))) , y = cy - S * 0.03 + f.range(-0.09, 0.09) * S;
        p.paint(blob(x, y, r, r, f, 0.06, 1.5), contrast ? 0.34 : 0.4);
      }
    } else if (t.finding === 'renal mass' && t.side) {
      const k = kidneys.find((q) => q.side === t.side)!;
      const r = (t.sizeMm! * mm) / 2;
      p.paint(blob(k.x + (t.side === 'right' ? -1 : 1) * S * 0.03, k.y + S * 0.02, r, r, f, 0.08, 1.5), contrast ? 0.62 : 0.5);
    }
  }
  p.paint(ellipse(cx, vy, S * 0.05, S * 0.045, 1.5), 0.95);
  p.paint(ellipse(cx, vy, S * 0.033, S * 0.03, 1.5), 0.78);
  p.paint(ellipse(cx, vy + S * 0.07, S * 0.015, S * 0.035, 1.5), 0.9);
  blur(p, 1, 1);
  addNoise(p, rng, 0.025);
  return [p];
}

function brainMri(t: Truth, rng: Rand, S: number): Plane[] {
  const f = new Rand(rng.int(0, 2 ** 30)); // the finding draws from its own stream: with or without it, the rest is the same
  const T2 = t.sequence === 'T2';
  const c = T2 ? { scalp: 0.62, bone: 0.04, csf: 0.95, gm: 0.55, wm: 0.36, bg: 0.02 } : { scalp: 0.85, bone: 0.05, csf: 0.08, gm: 0.45, wm: 0.68, bg: 0.02 };
  const p = new Plane(S, S, c.bg);
  const cx = S / 2, cy = S * 0.5;
  const mm = (S * 0.78) / 180;
  const hx = S * 0.37, hy = S * 0.45;
  p.paint(ellipse(cx, cy, hx, hy, 2), c.scalp);
  p.paint(ellipse(cx, cy, hx - S * 0.025, hy - S * 0.025, 1.5), c.bone);
  p.paint(ellipse(cx, cy, hx - S * 0.04, hy - S * 0.04, 1.5), c.csf);
  const cortex = blob(cx, cy, hx - S * 0.05, hy - S * 0.05, rng, 0.015, 1.5, 9);
  p.paint(cortex, c.gm);
  const wm = blob(cx, cy, hx - S * 0.1, hy - S * 0.1, rng, 0.06, 2.5, 13);
  p.paint(wm, c.wm);
  // sulci: ridge lines of noise inside the cortex; the falx along the midline
  const sul = valueNoise(S, S, rng, S / 12, 2);
  p.paint((x, y) => cortex(x, y) * Math.pow(Math.max(0, 1 - Math.abs(sul[Math.floor(y) * S + Math.floor(x)]!) * 9), 2) * (1 - wm(x, y) * 0.8), c.csf);
  p.paint((x, y) => cortex(x, y) * clamp01(1 - Math.abs(x - cx) / 1.2) * (Math.abs(y - cy) > S * 0.12 ? 1 : 0), c.csf);
  // lateral ventricles
  for (const d of [-1, 1]) {
    p.paint(ellipse(cx + d * S * 0.045, cy - S * 0.02, S * 0.03, S * 0.11, 1.5, d * 0.25), c.csf);
    p.paint(ellipse(cx + d * S * 0.07, cy + S * 0.1, S * 0.025, S * 0.03, 1.5), c.csf);
  }
  if (t.finding === 'mass' && t.side && t.location) {
    const r = (t.sizeMm! * mm) / 2;
    const place: Record<string, [number, number]> = {
      'frontal lobe': [0.13, -0.26], 'parietal lobe': [0.17, -0.02], 'temporal lobe': [0.24, 0.12], 'occipital lobe': [0.11, 0.28],
    };
    const [dx, dy] = place[t.location]!;
    const x = sideX(t.side, cx, S * dx), y = cy + S * dy;
    p.paint(blob(x, y, r * 1.9, r * 1.7, f, 0.15, r * 0.5), T2 ? 0.78 : c.wm * 0.8);  // oedema
    p.paint(blob(x, y, r, r, f, 0.1, 1.5), T2 ? 0.7 : 0.3);
    const e = ellipse(x, y, r, r, 2);
    p.paint(Object.assign((xx: number, yy: number) => clamp01(1 - Math.abs(e(xx, yy) - 0.5) * 2.5), { box: e.box }), T2 ? 0.45 : 0.75);  // rim
  } else if (t.finding === 'white matter lesions') {
    for (let k = 0; k < t.count!; k++) {
      const d = k % 2 === 0 ? -1 : 1;
      const r = Math.max(1.6, (t.sizeMm! * mm) / 2);
      p.paint(ellipse(cx + d * S * f.range(0.1, 0.16), cy + f.range(-0.15, 0.12) * S, r, r * 1.4, 1.2, f.range(-0.5, 0.5)),
        T2 ? 0.92 : 0.22);
    }
  }
  blur(p, 1, 1);
  addNoise(p, rng, 0.02, false);
  // the coil's bias field: a slow brightness gradient
  const bias = valueNoise(S, S, rng, S / 1.5, 1);
  for (let i = 0; i < p.data.length; i++) p.data[i] = Math.abs(p.data[i]!) * (1 + 0.12 * bias[i]!);
  return [p];
}

/** stain optical densities (Ruifrok–Johnston vectors): haematoxylin, eosin, DAB */
const OD = { h: [0.65, 0.7, 0.29], e: [0.07, 0.99, 0.11], d: [0.27, 0.57, 0.78] } as const;

function histology(t: Truth, rng: Rand, S: number): Plane[] {
  const H = new Plane(S, S), E = new Plane(S, S), D = new Plane(S, S);
  const ihc = t.stain === 'IHC';
  const zoom = t.magnification === 40 ? 2.6 : 1;
  const tex = valueNoise(S, S, rng, S / 10, 3), fib = valueNoise(S, S, rng, S / 40 / zoom, 2);
  // stroma: fibrous eosin texture, with gaps
  E.paint(() => 1, (x, y) => {
    const i = Math.floor(y) * S + Math.floor(x);
    return clamp01(0.55 + 0.35 * fib[i]! + 0.15 * tex[i]!);
  });
  const nucleus = (x: number, y: number, r: number, dark: number, positive = false) => {
    const e = blob(x, y, r, r * rng.range(0.65, 1), rng, 0.08, 1);
    (positive ? D : H).paint(e, dark);
    if (ihc && !positive) return;
  };
  const nr = (S / 224) * 1.7 * zoom; // a nucleus radius
  const tumour = t.finding === 'carcinoma', inflamed = t.finding === 'inflammation';
  const stromaNuclei = (n: number) => {
    for (let k = 0; k < n; k++) {
      const x = rng.range(0, S), y = rng.range(0, S);
      const a = rng.range(0, Math.PI);
      H.paint(ellipse(x, y, nr * 1.6, nr * 0.5, 1, a), 0.7);
    }
  };
  const lymphocytes = (n: number, cx = S / 2, cy = S / 2, spread = S) => {
    for (let k = 0; k < n; k++) {
      const x = cx + (rng.next() - 0.5) * spread, y = cy + (rng.next() - 0.5) * spread;
      H.paint(ellipse(x, y, nr * 0.8, nr * 0.8, 1), 1.1);
    }
  };
  const gland = (x: number, y: number, r: number, atypia: boolean) => {
    const shape = blob(x, y, r, r * rng.range(0.7, 1), rng, atypia ? 0.2 : 0.05, 1.5, atypia ? 4 : 6);
    const lumen = blob(x, y, r * 0.6, r * 0.45, rng, atypia ? 0.25 : 0.05, 1.5);
    E.paint(shape, 0.45);
    const cells = Math.round((2 * Math.PI * r) / (nr * (atypia ? 1.7 : 2.3)));
    for (let k = 0; k < cells; k++) {
      const a = (2 * Math.PI * k) / cells + rng.range(-0.1, 0.1);
      const rr = r * (atypia ? rng.range(0.6, 0.95) : 0.82);
      nucleus(x + Math.cos(a) * rr, y + Math.sin(a) * rr, nr * (atypia ? rng.range(1.1, 1.9) : 0.9), atypia ? 1.3 : 0.9,
        ihc && (atypia ? rng.chance(0.75) : rng.chance(0.05)));
    }
    E.paint(lumen, 0); H.paint(lumen, 0); D.paint(lumen, 0);
  };
  if (t.organ === 'lymph node') {
    lymphocytes(Math.round(2600 / zoom / zoom * (S / 224) ** 2));
    for (let k = 0; k < 2; k++) {  // follicles: paler centres
      const f = ellipse(rng.range(0.2, 0.8) * S, rng.range(0.2, 0.8) * S, S * 0.16 * zoom, S * 0.13 * zoom, S * 0.05);
      H.paint(f, 0.35);
    }
    if (tumour) {
      const n = blob(S * rng.range(0.35, 0.65), S * rng.range(0.35, 0.65), S * 0.22, S * 0.2, rng, 0.2, 4);
      E.paint(n, 0.6); H.paint(n, 0.05); D.paint(n, 0);
      for (let k = 0; k < 90 / zoom; k++) {
        const x = rng.range(0, S), y = rng.range(0, S);
        if (n(x, y) > 0.5) nucleus(x, y, nr * rng.range(1.3, 2), 1.3, ihc);
      }
    }
  } else {
    if (t.organ === 'breast') {  // fat: empty round cells with thin membranes
      for (let k = 0; k < 14 / zoom; k++) {
        const f = ellipse(rng.range(0, S), rng.range(0, S), S * 0.07 * zoom, S * 0.06 * zoom, 1.2);
        E.paint(f, 0.05);
      }
    }
    stromaNuclei(Math.round(120 / zoom));
    if (tumour) {
      const n = t.organ === 'colon' ? 12 : 6;
      for (let k = 0; k < n / zoom + 1; k++) gland(rng.range(0.1, 0.9) * S, rng.range(0.1, 0.9) * S, S * rng.range(0.06, 0.1) * zoom, true);
      if (t.organ === 'breast') {  // infiltrating nests and cords
        for (let k = 0; k < 260 / zoom; k++) {
          const x = rng.range(0, S), y = rng.range(0, S);
          if (tex[Math.floor(y) * S + Math.floor(x)]! > 0.05) nucleus(x, y, nr * rng.range(1.2, 1.9), 1.3, ihc && rng.chance(0.8));
        }
      }
    } else {
      const rows = t.organ === 'colon' ? 3 : 2;
      for (let gy = 0; gy < rows / Math.min(zoom, 2); gy++) {
        for (let gx = 0; gx < 3 / Math.min(zoom, 2); gx++) {
          const x = (gx + 0.5 + rng.range(-0.15, 0.15)) * S / (3 / Math.min(zoom, 2));
          const y = (gy + 0.5 + rng.range(-0.15, 0.15)) * S / (rows / Math.min(zoom, 2));
          gland(x, y, S * (t.organ === 'colon' ? 0.11 : 0.07) * zoom, false);
        }
      }
    }
    if (inflamed) lymphocytes(Math.round(700 / zoom / zoom * (S / 224) ** 2));
  }
  // haemoglobin-red blood cells in a capillary
  const cap = blob(rng.range(0.1, 0.9) * S, rng.range(0.1, 0.9) * S, S * 0.02 * zoom, S * 0.05 * zoom, rng, 0.1, 1);
  E.paint(cap, 1.4);
  const R = new Plane(S, S), G = new Plane(S, S), B = new Plane(S, S);
  const hw = ihc ? 0.55 : 1.0, ew = ihc ? 0.12 : 0.55;
  for (let i = 0; i < S * S; i++) {
    const h = H.data[i]! * hw, e = E.data[i]! * ew, d = D.data[i]! * 1.1;
    R.data[i] = 0.96 * Math.exp(-(h * OD.h[0] + e * OD.e[0] + d * OD.d[0]) * 1.3);
    G.data[i] = 0.94 * Math.exp(-(h * OD.h[1] + e * OD.e[1] + d * OD.d[1]) * 1.3);
    B.data[i] = 0.95 * Math.exp(-(h * OD.h[2] + e * OD.e[2] + d * OD.d[2]) * 1.3);
  }
  for (const q of [R, G, B]) { blur(q, 1, 1); }
  const grain = new Rand(rng.int(0, 2 ** 31));
  for (const q of [R, G, B]) addNoise(q, grain, 0.012);
  return [R, G, B];
}

const ORGAN_COLOUR: Record<string, [number, number, number]> = {
  kidney: [0.58, 0.26, 0.22], liver: [0.48, 0.24, 0.13], lung: [0.72, 0.52, 0.52], spleen: [0.42, 0.12, 0.2],
};

function gross(t: Truth, rng: Rand, S: number): Plane[] {
  const f = new Rand(rng.int(0, 2 ** 30)); // the finding draws from its own stream: with or without it, the rest is the same
  const drape = rng.chance(0.5) ? [0.12, 0.22, 0.42] : [0.06, 0.06, 0.07];
  const planes = [0, 1, 2].map((c) => new Plane(S, S, drape[c]));
  const cloth = valueNoise(S, S, rng, S / 60, 2);
  planes.forEach((q) => q.paint(() => 1, (x, y) => q.data[Math.floor(y) * S + Math.floor(x)]! * (1 + 0.25 * cloth[Math.floor(y) * S + Math.floor(x)]!)));
  const mm = (S * 0.62) / 120;
  // the ruler: a pale strip with a tick every millimetre, longer every 5 and 10
  const ry = S * 0.88;
  const paint3 = (a: (x: number, y: number) => number, rgb: [number, number, number] | ((x: number, y: number) => [number, number, number])) =>
    planes.forEach((q, c) => q.paint(a, typeof rgb === 'function' ? (x, y) => rgb(x, y)[c]! : rgb[c]!));
  paint3((x, y) => (y > ry && y < ry + S * 0.08 && x > S * 0.05 && x < S * 0.95 ? 1 : 0), [0.9, 0.88, 0.8]);
  paint3((x, y) => {
    if (y < ry || x < S * 0.07 || x > S * 0.93) return 0;
    const k = Math.round((x - S * 0.07) / mm);
    const len = k % 10 === 0 ? 0.05 : k % 5 === 0 ? 0.035 : 0.02;
    return Math.abs(x - S * 0.07 - k * mm) < 0.5 && y < ry + S * len ? 1 : 0;
  }, [0.1, 0.1, 0.1]);
  // the specimen
  const col = ORGAN_COLOUR[t.organ] ?? [0.5, 0.3, 0.25];
  const cx = S * 0.5 + rng.range(-0.04, 0.04) * S, cy = S * 0.45;
  const shape = t.organ === 'kidney'
    ? ((e = blob(cx, cy, S * 0.3, S * 0.2, rng, 0.04, 2), hilum = ellipse(cx, cy + S * 0.2, S * 0.08, S * 0.08, 3)) =>
        (x: number, y: number) => e(x, y) * (1 - hilum(x, y)))()
    : t.organ === 'liver' ? blob(cx, cy, S * 0.34, S * 0.22, rng, 0.12, 2, 3)
      : t.organ === 'lung' ? blob(cx, cy, S * 0.24, S * 0.33, rng, 0.08, 2, 4)
        : blob(cx, cy, S * 0.32, S * 0.16, rng, 0.06, 2, 3);
  const tex = valueNoise(S, S, rng, S / 25, 3);
  paint3(shape, (x, y) => {
    const v = tex[Math.floor(y) * S + Math.floor(x)]!;
    const spongy = t.organ === 'lung' ? 0.25 * Math.max(0, -v) : 0;
    return [col[0] * (1 + 0.2 * v - spongy), col[1] * (1 + 0.25 * v - spongy), col[2] * (1 + 0.25 * v - spongy)];
  });
  if (t.organ === 'kidney') {  // medullary pyramids, paler cortex rim
    for (let k = 0; k < 6; k++) {
      const a = Math.PI * (0.15 + 0.7 * k / 5);
      paint3(ellipse(cx - Math.cos(a) * S * 0.15, cy - Math.sin(a) * S * 0.08, S * 0.035, S * 0.05, 2, a), [0.45, 0.18, 0.17]);
    }
  }
  if (t.organ === 'lung') {
    for (let k = 0; k < 40; k++) {
      const x = cx + rng.range(-0.2, 0.2) * S, y = cy + rng.range(-0.3, 0.3) * S;
      const e = ellipse(x, y, 1.4, 1.4, 1);
      paint3(Object.assign((xx: number, yy: number) => shape(xx, yy) * e(xx, yy), { box: e.box }), [0.1, 0.08, 0.08]);
    }
  }
  const inside = (r: Rand = rng): [number, number] => {
    for (let k = 0; k < 200; k++) {
      const x = cx + r.range(-0.22, 0.22) * S, y = cy + r.range(-0.14, 0.14) * S;
      if (shape(x, y) > 0.99) return [x, y];
    }
    return [cx, cy];
  };
  if (t.finding === 'tumor' || t.finding === 'cyst') {
    const tt = valueNoise(S, S, f, S / 40, 2);
    for (let k = 0; k < t.count!; k++) {
      const [x, y] = inside(f);
      const r = (t.sizeMm! * mm * f.range(0.85, 1.05)) / 2;
      if (t.finding === 'tumor') {
        paint3(blob(x, y, r, r * f.range(0.8, 1), f, 0.15, 2), (xx, yy) => {
          const v = tt[Math.floor(yy) * S + Math.floor(xx)]!;
          return v > 0.45 ? [0.55, 0.15, 0.12] : [0.88 + 0.06 * v, 0.82 + 0.06 * v, 0.66 + 0.06 * v];
        });
      } else {
        paint3(ellipse(x, y, r, r, 1.5), [0.86, 0.8, 0.5]);
        const e = ellipse(x, y, r, r, 2);
        paint3(Object.assign((xx: number, yy: number) => clamp01(1 - Math.abs(e(xx, yy) - 0.5) * 3), { box: e.box }), [0.96, 0.93, 0.8]);
      }
    }
  } else if (t.finding === 'hemorrhage') {
    for (let k = 0; k < f.int(2, 4); k++) {
      const [x, y] = inside(f);
      const b = blob(x, y, S * f.range(0.04, 0.08), S * 0.05, f, 0.3, 3);
      paint3(Object.assign((xx: number, yy: number) => shape(xx, yy) * b(xx, yy), { box: b.box }), [0.25, 0.03, 0.04]);
    }
  }
  // specular highlights of a wet surface
  for (let k = 0; k < 8; k++) {
    const [x, y] = inside();
    const e = ellipse(x, y, S * 0.012, S * 0.006, 1.5, rng.range(0, 3));
    paint3(Object.assign((xx: number, yy: number) => 0.7 * e(xx, yy), { box: e.box }), [1, 1, 1]);
  }
  for (const q of planes) { blur(q, 1, 1); addNoise(q, rng, 0.015); }
  return planes;
}

/** the case's image: S×S interleaved RGB (grey modalities replicated in three channels) */
export function renderTruth(t: Truth, seed: number, S = 224): Uint8Array {
  const rng = new Rand(seed);
  switch (t.modality) {
    case 'chest_xray': return toRgb(chestXray(t, rng, S));
    case 'ct_scan': return toRgb(ctScan(t, rng, S));
    case 'mri': return toRgb(brainMri(t, rng, S));
    case 'histology': return toRgb(histology(t, rng, S));
    case 'gross': return toRgb(gross(t, rng, S));
  }
}
