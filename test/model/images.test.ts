/**
 * Image rows stay native: NativeVision.encodeImage keeps an encoded image's rows in a NativeImage,
 * and eval / evalSample splice rows of it by reference (spans), so the features never cross to JS
 * unless toArray() asks. Spans give the same logits as the dense embeddings they replace; a span
 * that does not fit is refused; an image disposed while an eval runs stays alive for that eval.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { generateFixture } from '../../lib/fixtures/generate.js';
import { loadModelSpec, type ModelSpec } from '../../lib/index.js';
import { loadLlm } from '../../lib/model/llm.js';
import { loadVision } from '../../lib/model/vision.js';
import type { NativeLlm, NativeVision } from '../../lib/native.js';
import { randomNormal } from '../support/reference.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-images-'));
let spec: ModelSpec;
let llm: NativeLlm;
let vision: NativeVision;

beforeAll(async () => {
  const hf = (await generateFixture({ layout: 'llava-med-v1.5', out: join(root, 'hf') })) as { dir: string };
  spec = await loadModelSpec(hf.dir);
  llm = await loadLlm(spec);
  vision = await loadVision(spec);
}, 120_000);

const pixels = (seed: number) => randomNormal(3 * spec.vision.imageSize ** 2, seed);

describe('native image rows', () => {
  it('encodeImage keeps the rows native; toArray() is exactly what encode returns', async () => {
    const px = pixels(1);
    const img = await vision.encodeImage(px);
    expect(img.rows).toBe(vision.tokens);
    expect(img.width).toBe(spec.llm.hidden);
    expect(Array.from(img.toArray())).toEqual(Array.from(await vision.encode(px)));
    img.dispose();
    expect(() => img.toArray()).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
  });

  it('spans of an image give the logits the dense embeddings give, split or whole', async () => {
    const img = await vision.encodeImage(pixels(2));
    const D = spec.llm.hidden, R = img.rows;
    const tokens = Int32Array.from([1, 5, ...new Array<number>(R).fill(-1), 9, 13]);
    const dense = new Float32Array(tokens.length * D);
    dense.set(img.toArray(), 2 * D);
    const want = await llm.createContext().eval(tokens, { allLogits: true, embeddings: dense });
    const whole = await llm.createContext().eval(tokens, { allLogits: true, images: [{ at: 2, image: img }] });
    expect(Array.from(whole)).toEqual(Array.from(want));
    const half = Math.floor(R / 2);  // the same rows as two spans
    const split = await llm.createContext().eval(tokens, { allLogits: true,
      images: [{ at: 2, image: img, row: 0, rows: half }, { at: 2 + half, image: img, row: half }] });
    expect(Array.from(split)).toEqual(Array.from(want));
    // evalSample takes them too
    const s1 = await llm.createContext().evalSample(tokens, { images: [{ at: 2, image: img }] });
    const s2 = await llm.createContext().evalSample(tokens, { embeddings: dense });
    expect(s1).toEqual(s2);
    img.dispose();
  });

  it('spans that do not fit are refused with a clear error; the context stays usable', async () => {
    const img = await vision.encodeImage(pixels(3));
    const R = img.rows;
    const tokens = Int32Array.from([1, ...new Array<number>(R).fill(-1), 9]);
    const ctx = llm.createContext();
    // a span over a text token, a negative token left uncovered, two spans on one row
    await expect(ctx.eval(tokens, { images: [{ at: 0, image: img, rows: 1 }, { at: 1, image: img, row: 1 }] }))
      .rejects.toMatchObject({ code: 'E_ARGUMENT', message: expect.stringContaining('holds token 1') });
    await expect(ctx.eval(tokens, { images: [{ at: 1, image: img, rows: R - 1 }] }))
      .rejects.toMatchObject({ code: 'E_ARGUMENT', message: expect.stringContaining('needs image rows') });
    await expect(ctx.eval(tokens, { images: [{ at: 1, image: img }, { at: 1, image: img, rows: 1 }] }))
      .rejects.toMatchObject({ code: 'E_ARGUMENT', message: expect.stringContaining('covered twice') });
    expect(() => ctx.eval(tokens, { images: [{ at: 1, image: {} as never }] })).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
    expect(() => ctx.eval(tokens, { images: [{ at: 1, image: img, row: R + 1 }] })).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
    expect(() => ctx.eval(tokens, { images: [{ at: 1, image: img }], embeddings: new Float32Array(tokens.length * spec.llm.hidden) }))
      .toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
    expect(ctx.nPast).toBe(0);
    const ok = await ctx.eval(tokens, { images: [{ at: 1, image: img }] });
    expect(ok.some(Number.isNaN)).toBe(false);
    img.dispose();
    expect(() => ctx.eval(Int32Array.of(-1), { images: [{ at: 0, image: img }] })).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
  });

  it('an image disposed while an eval runs stays alive for that eval', async () => {
    const img = await vision.encodeImage(pixels(4));
    const tokens = Int32Array.from([1, ...new Array<number>(img.rows).fill(-1)]);
    const want = await llm.createContext().eval(tokens, { images: [{ at: 1, image: img }] });
    const pending = llm.createContext().eval(tokens, { images: [{ at: 1, image: img }] });
    img.dispose();
    expect(Array.from(await pending)).toEqual(Array.from(want));
  });
});
