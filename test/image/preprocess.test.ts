/**
 * Image preprocessing against LLaVA's own pipeline run in Python (Debian's python3-pil + numpy):
 * PIL convert('RGB'), expand2square with the CLIP mean, CLIPImageProcessor's bicubic resize of the
 * shortest edge + centre crop + normalisation. Identical pixels are the goal (PNG inputs, so both
 * sides decode the same bytes); bad images are E_IMAGE.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';

import { preprocessImage } from '../../lib/image/preprocess.js';
import { python, pythonHas } from '../support/python.js';

const dir = mkdtempSync(join(tmpdir(), 'medllava-img-'));
const MEAN = [0.48145466, 0.4578275, 0.40821073];
const STD = [0.26862954, 0.26130258, 0.27577711];

function pilReference(path: string, S: number, aspect: 'pad' | 'square', pre: 'clip' | 'open_clip' = 'clip'): Float64Array {
  return Float64Array.from(JSON.parse(python(`
import json, sys, numpy as np
from PIL import Image
S = int(sys.argv[2]); mean = [0.48145466, 0.4578275, 0.40821073]; std = [0.26862954, 0.26130258, 0.27577711]
img = Image.open(sys.argv[1]).convert('RGB')
if sys.argv[3] == 'pad':   # LLaVA's expand2square
    w, h = img.size; bg = tuple(int(x * 255) for x in mean)
    if w != h:
        s = max(w, h); r = Image.new(img.mode, (s, s), bg)
        r.paste(img, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0)); img = r
w, h = img.size   # CLIPImageProcessor: shortest edge -> S, centre crop, rescale, normalise
nw, nh = (S, int(S * h / w)) if w <= h else (int(S * w / h), S)
img = img.resize((nw, nh), Image.BICUBIC)
if sys.argv[4] == 'clip':
    top, left = (nh - S) // 2, (nw - S) // 2
    a = np.asarray(img, dtype=np.float32)[top:top + S, left:left + S] * np.float32(1 / 255)
else:   # torchvision's CenterCrop (Python round: half to even) and ToTensor (x / 255 in float32)
    top, left = int(round((nh - S) / 2.0)), int(round((nw - S) / 2.0))
    a = np.asarray(img, dtype=np.float32)[top:top + S, left:left + S] / np.float32(255)
a = (a - np.array(mean, np.float32)) / np.array(std, np.float32)
print(json.dumps(a.transpose(2, 0, 1).reshape(-1).tolist()))
`, [path, String(S), aspect, pre])) as number[]);
}

const images: Record<string, () => Promise<Buffer>> = {};

beforeAll(async () => {
  expect(pythonHas('PIL'), 'Debian python3-pil is needed (the CI script installs it)').toBe(true);
  const gradient = (w: number, h: number, ch: 1 | 3 | 4) => {
    const d = Buffer.alloc(w * h * ch);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < ch; c++) {
      d[(y * w + x) * ch + c] = (x * 7 + y * 13 + c * 71 + ((x * y) % 17) * 9) & 255;
    }
    return sharp(d, { raw: { width: w, height: h, channels: ch } }).png().toBuffer();
  };
  images['wide RGB 300×60'] = () => gradient(300, 60, 3);
  images['tall grayscale 40×130'] = () => gradient(40, 130, 1);
  images['RGBA 50×50'] = () => gradient(50, 50, 4);
  images['tiny 3×5'] = () => gradient(3, 5, 3);
  images['large 640×480 (downscale)'] = () => gradient(640, 480, 3);
  // at 42 px: resized to 53 × 42, an 11-pixel crop margin: floor → 5, round-half-even → 6
  images['odd margin 51×40'] = () => gradient(51, 40, 3);
}, 60_000);

describe('LLaVA preprocessing vs PIL', () => {
  for (const aspect of ['pad', 'square'] as const) {
    for (const S of [42, 336]) {
      it(`${aspect}, ${S} px: identical to PIL on every test image`, async () => {
        for (const [name, make] of Object.entries(images)) {
          const path = join(dir, `${name.replace(/\W+/g, '_')}.png`);
          writeFileSync(path, await make());
          const ours = await preprocessImage(path, { imageSize: S, mean: MEAN, std: STD, aspectRatio: aspect });
          const ref = pilReference(path, S, aspect);
          let worst = 0;
          for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(ours[i]! - ref[i]!));
          // one 8-bit step is 1/255/std ≈ 0.014: anything below that is float rounding, not a pixel difference
          expect(worst, `${name}: max difference ${worst}`).toBeLessThan(1e-5);
        }
      });
    }
  }

  for (const S of [42, 518]) {
    it(`open_clip's transform (LLaVA-Rad's BiomedCLIP), ${S} px: identical to PIL + torchvision's semantics`, async () => {
      for (const [name, make] of Object.entries(images)) {
        const path = join(dir, `${name.replace(/\W+/g, '_')}.png`);
        writeFileSync(path, await make());
        const ours = await preprocessImage(path, { imageSize: S, mean: MEAN, std: STD, aspectRatio: 'square', preprocessor: 'open_clip' });
        const ref = pilReference(path, S, 'square', 'open_clip');
        let worst = 0;
        for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(ours[i]! - ref[i]!));
        expect(worst, `${name}: max difference ${worst}`).toBeLessThan(1e-5);
      }
      // the crop offsets differ from CLIPImageProcessor's where the margin is odd
      const odd = join(dir, 'odd_margin_51_40.png');
      const clip = await preprocessImage(odd, { imageSize: 42, mean: MEAN, std: STD, aspectRatio: 'square' });
      const oc = await preprocessImage(odd, { imageSize: 42, mean: MEAN, std: STD, aspectRatio: 'square', preprocessor: 'open_clip' });
      expect(Math.max(...clip.map((v, i) => Math.abs(v - oc[i]!)))).toBeGreaterThan(0.01);
    });
  }

  it('bytes and sharp pipelines work like paths', async () => {
    const png = await images['wide RGB 300×60']!();
    const a = await preprocessImage(png, { imageSize: 42, mean: MEAN, std: STD, aspectRatio: 'pad' });
    const b = await preprocessImage(sharp(png), { imageSize: 42, mean: MEAN, std: STD, aspectRatio: 'pad' });
    expect(Array.from(a)).toEqual(Array.from(b));
  });
});

describe('bad images', () => {
  const o = { imageSize: 42, mean: MEAN, std: STD, aspectRatio: 'pad' as const };
  it('corrupt, empty and truncated images → E_IMAGE; a missing file → E_IO', async () => {
    await expect(preprocessImage(new Uint8Array([1, 2, 3, 4]), o)).rejects.toMatchObject({ code: 'E_IMAGE' });
    await expect(preprocessImage(new Uint8Array(0), o)).rejects.toMatchObject({ code: 'E_IMAGE' });
    const png = await images['large 640×480 (downscale)']!();
    await expect(preprocessImage(png.subarray(0, png.length / 2), o)).rejects.toMatchObject({ code: 'E_IMAGE' });
    await expect(preprocessImage(join(dir, 'missing.png'), o)).rejects.toMatchObject({ code: expect.stringMatching(/E_IO|E_IMAGE/) });
  });

  it('a 20000 × 20000 image is refused before it is decoded (bounded memory)', async () => {
    // a tiny PNG whose header claims 20000 × 20000: sharp's pixel limit rejects it without allocating
    const big = await sharp({ create: { width: 20000, height: 20000, channels: 3, background: { r: 9, g: 9, b: 9 } }, limitInputPixels: false })
      .png({ compressionLevel: 9 }).toBuffer();
    const before = process.memoryUsage().rss;
    await expect(preprocessImage(big, o)).rejects.toMatchObject({ code: 'E_IMAGE', message: expect.stringMatching(/pixel limit/i) });
    expect(process.memoryUsage().rss - before).toBeLessThan(512 * 2 ** 20);
  }, 60_000);
});
