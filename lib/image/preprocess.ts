/**
 * LLaVA's image preprocessing, exactly: decode (sharp), convert to RGB as PIL's convert('RGB') does,
 * expand2square with the CLIP mean colour when image_aspect_ratio is 'pad', then
 * CLIPImageProcessor — bicubic resize of the shortest edge (PIL's 8-bit resampler, reimplemented
 * here bit for bit: sharp's cubic kernels differ), centre crop, rescale by 1/255, normalise.
 */
import sharp from 'sharp';

import { medllavaError } from '../errors.js';

export type ImageSource = string | Uint8Array | sharp.Sharp;

export interface RgbImage {
  width: number;
  height: number;
  /** interleaved RGB bytes */
  data: Uint8Array;
}

/** Decodes to 8-bit RGB. Corrupt, empty or oversized (> 268 M pixels, sharp's guard) images → E_IMAGE. */
export async function decodeRgb(source: ImageSource): Promise<RgbImage> {
  let img: sharp.Sharp;
  if (typeof source === 'string' || source instanceof Uint8Array) {
    if (source instanceof Uint8Array && source.length === 0) throw medllavaError('E_IMAGE', 'the image is empty (0 bytes)');
    img = sharp(source instanceof Uint8Array ? Buffer.from(source.buffer, source.byteOffset, source.byteLength) : source,
      { failOn: 'error' });
  } else if (source && typeof (source as sharp.Sharp).raw === 'function') {
    img = (source as sharp.Sharp).clone();
  } else {
    throw medllavaError('E_ARGUMENT', 'an image is a path, encoded bytes (Uint8Array) or a sharp pipeline');
  }
  try {
    // PIL's convert('RGB'): grey is replicated, alpha is dropped (not composited)
    const { data, info } = await img.removeAlpha().toColourspace('srgb').raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels`);
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  } catch (e) {
    if (typeof source === 'string' && /missing|no such file/i.test((e as Error).message)) {
      throw medllavaError('E_IO', `cannot read image ${source}: ${(e as Error).message}`);
    }
    throw medllavaError('E_IMAGE', `cannot decode the image${typeof source === 'string' ? ` ${source}` : ''}: ${(e as Error).message}`);
  }
}

/** LLaVA's expand2square: centre the image on a square of `colour`. */
export function expandToSquare(img: RgbImage, colour: [number, number, number]): RgbImage {
  const { width: w, height: h } = img;
  if (w === h) return img;
  const s = Math.max(w, h);
  const out = new Uint8Array(s * s * 3);
  for (let i = 0; i < s * s; i++) out.set(colour, i * 3);
  const x0 = w > h ? 0 : Math.floor((h - w) / 2);
  const y0 = w > h ? Math.floor((w - h) / 2) : 0;
  for (let y = 0; y < h; y++) out.set(img.data.subarray(y * w * 3, (y + 1) * w * 3), ((y + y0) * s + x0) * 3);
  return { width: s, height: s, data: out };
}

const PRECISION_BITS = 32 - 8 - 2;

function bicubic(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

/** PIL's precomputed fixed-point coefficients for one axis (ImagingResample, BICUBIC, support 2). */
function coefficients(inSize: number, outSize: number) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = 2 * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let x = 0; x < outSize; x++) {
    const center = (x + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let i = 0; i < xmax; i++) {
      const w = bicubic((i + xmin - center + 0.5) / filterScale);
      k[i] = w;
      ww += w;
    }
    for (let i = 0; i < ksize; i++) {
      const v = i < xmax && ww !== 0 ? k[i]! / ww : 0;
      kk[x * ksize + i] = Math.trunc(v * (1 << PRECISION_BITS) + (v < 0 ? -0.5 : 0.5));
    }
    bounds[x * 2] = xmin;
    bounds[x * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

const clip8 = (v: number) => (v >= 1 << (PRECISION_BITS + 8) ? 255 : v <= 0 ? 0 : Math.floor(v / 2 ** PRECISION_BITS));

/** PIL's Image.resize((w, h), BICUBIC) on 8-bit RGB: horizontal pass, then vertical, each rounding to 8 bits. */
export function resizeBicubic(img: RgbImage, outW: number, outH: number): RgbImage {
  let cur = img;
  if (outW !== img.width) {
    const { ksize, bounds, kk } = coefficients(img.width, outW);
    const out = new Uint8Array(outW * img.height * 3);
    for (let y = 0; y < img.height; y++) {
      for (let x = 0; x < outW; x++) {
        const xmin = bounds[x * 2]!, xmax = bounds[x * 2 + 1]!;
        for (let c = 0; c < 3; c++) {
          let ss = 1 << (PRECISION_BITS - 1);
          for (let i = 0; i < xmax; i++) ss += cur.data[(y * img.width + xmin + i) * 3 + c]! * kk[x * ksize + i]!;
          out[(y * outW + x) * 3 + c] = clip8(ss);
        }
      }
    }
    cur = { width: outW, height: img.height, data: out };
  }
  if (outH !== img.height) {
    const { ksize, bounds, kk } = coefficients(img.height, outH);
    const out = new Uint8Array(cur.width * outH * 3);
    for (let y = 0; y < outH; y++) {
      const ymin = bounds[y * 2]!, ymax = bounds[y * 2 + 1]!;
      for (let x = 0; x < cur.width; x++) {
        for (let c = 0; c < 3; c++) {
          let ss = 1 << (PRECISION_BITS - 1);
          for (let i = 0; i < ymax; i++) ss += cur.data[((ymin + i) * cur.width + x) * 3 + c]! * kk[y * ksize + i]!;
          out[(y * cur.width + x) * 3 + c] = clip8(ss);
        }
      }
    }
    cur = { width: cur.width, height: outH, data: out };
  }
  return cur;
}

export interface PreprocessOptions {
  imageSize: number;
  mean: number[];
  std: number[];
  aspectRatio: 'pad' | 'square' | 'anyres';
  /**
   * 'clip' (default): HF CLIPImageProcessor — centre-crop offset floor((size - S) / 2), x · (1/255).
   * 'open_clip': torchvision's Resize + CenterCrop + ToTensor — offset round((size - S) / 2) half to
   * even (Python's round), x / 255.
   */
  preprocessor?: 'clip' | 'open_clip';
}

/** Python's round(): half to even. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Everything LLaVA does to an image before the vision tower: → (3, S, S) float32, planar. */
export async function preprocessImage(source: ImageSource, o: PreprocessOptions): Promise<Float32Array> {
  let img = await decodeRgb(source);
  if (o.aspectRatio === 'pad') {
    img = expandToSquare(img, [Math.trunc(o.mean[0]! * 255), Math.trunc(o.mean[1]! * 255), Math.trunc(o.mean[2]! * 255)]);
  }
  // CLIPImageProcessor: shortest edge → S (the long edge scaled by int()), then centre crop S × S
  const S = o.imageSize;
  const short = Math.min(img.width, img.height);
  const w = img.width <= img.height ? S : Math.trunc((S * img.width) / short);
  const h = img.height <= img.width ? S : Math.trunc((S * img.height) / short);
  img = resizeBicubic(img, w, h);
  const openClip = o.preprocessor === 'open_clip';
  const top = openClip ? roundHalfEven((h - S) / 2) : Math.trunc((h - S) / 2);
  const left = openClip ? roundHalfEven((w - S) / 2) : Math.trunc((w - S) / 2);
  const inv255 = Math.fround(1 / 255);
  const out = new Float32Array(3 * S * S);
  for (let c = 0; c < 3; c++) {
    const m = o.mean[c]!;
    const sd = o.std[c]!;
    for (let y = 0; y < S; y++) {
      for (let x = 0; x < S; x++) {
        const v = img.data[((y + top) * w + x + left) * 3 + c]!;
        const unit = openClip ? Math.fround(v / 255) : Math.fround(v * inv255);
        out[(c * S + y) * S + x] = (unit - m) / sd;
      }
    }
  }
  return out;
}
