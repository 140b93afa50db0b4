/**
 * LLaVA-Med v1.0 end to end against independent float64 references: the fp16 pickle shards read
 * by python3-torch (not by our reader), the 224-px-style CLIP tower run to select layer -2 in
 * float64 PyTorch, the *linear* projector, LLaVA v0's splice (<im_start>, one <im_patch> position
 * per image row taking the features, <im_end>) and LLaMA with rms_eps 1e-6 from config.json —
 * with negative controls showing the checks can tell a wrong select layer and a missing frame.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';

import { generateFixture } from '../../lib/fixtures/generate.js';
import { preprocessImage } from '../../lib/image/preprocess.js';
import { loadModel, loadModelSpec, type Model } from '../../lib/index.js';
import { loadVision } from '../../lib/model/vision.js';
import { llamaNextLogProbs } from '../support/llama-reference.js';
import { CLIP_PATCHES_PY } from '../support/clip-reference.js';
import { python } from '../support/python.js';
import { logSoftmax, maxAbsDiff, relativeError } from '../support/reference.js';

let v1: { dir: string; tower: string };
let model: Model;
/** every tensor of the checkpoint as python3-torch loads it, in float64 */
let W: Map<string, Float64Array>;

beforeAll(async () => {
  v1 = (await generateFixture({ layout: 'llava-med-v1', out: join(mkdtempSync(join(tmpdir(), 'medllava-v1-')), 'v1') })) as typeof v1;
  model = await loadModel(v1.dir);
  const out = python(`
import glob, json, sys, torch
W = {}
for f in sorted(glob.glob(sys.argv[1] + '/pytorch_model-*.bin')):
    for k, v in torch.load(f, map_location='cpu').items():
        assert v.dtype == torch.float16, (k, v.dtype)
        W[k] = v.double().reshape(-1).tolist()
print(json.dumps(W))
`, [v1.dir]);
  W = new Map(Object.entries(JSON.parse(out) as Record<string, number[]>).map(([k, v]) => [k, Float64Array.from(v)]));
}, 120_000);

/** CLIP vision tower to `selectLayer` + the linear projector, float64 PyTorch, from the tower's own files. */
function visionReference(pixels: Float32Array, selectLayer: number): Float64Array {
  const proj = { w: Array.from(W.get('model.mm_projector.weight')!), b: Array.from(W.get('model.mm_projector.bias')!) };
  const out = python(`
import json, struct, sys, numpy as np, torch
torch.set_default_dtype(torch.float64)
raw = open(sys.argv[1] + '/model.safetensors', 'rb').read(); n = struct.unpack('<Q', raw[:8])[0]
h = json.loads(raw[8:8 + n]); d = raw[8 + n:]
W = {}
for k, v in h.items():
    if k == '__metadata__': continue
    b, e = v['data_offsets']
    assert v['dtype'] == 'F32'
    W[k] = torch.tensor(np.frombuffer(d[b:e], np.float32).astype(np.float64).reshape(v['shape']))
vc = json.load(open(sys.argv[1] + '/config.json'))['vision_config']
inp = json.loads(sys.stdin.read())
S = vc['image_size']
x = torch.tensor(inp['pixels']).reshape(1, 3, S, S)
${CLIP_PATCHES_PY}
h = clip_patches(W, vc, x, int(sys.argv[2]))
pw = torch.tensor(inp['w']).reshape(-1, vc['hidden_size']); pb = torch.tensor(inp['b'])
y = h @ pw.T + pb   # the linear projector (mm_projector: Linear)
print(json.dumps(y.reshape(-1).tolist()))
`, [v1.tower, String(selectLayer)], JSON.stringify({ pixels: Array.from(pixels), ...proj }));
  return Float64Array.from(JSON.parse(out) as number[]);
}

describe('LLaVA-Med v1.0 against float64 references', () => {
  let png: Buffer;
  let pixels: Float32Array;
  beforeAll(async () => {
    png = await sharp({ create: { width: 50, height: 36, channels: 3, background: { r: 20, g: 140, b: 90 } } })
      .composite([{ input: await sharp({ create: { width: 12, height: 10, channels: 3, background: { r: 240, g: 30, b: 30 } } }).png().toBuffer(), top: 5, left: 30 }])
      .png().toBuffer();
    const spec = model.spec;
    // the pixels: our preprocessing, itself checked against PIL in test/image
    pixels = await preprocessImage(png, { imageSize: spec.vision.imageSize, mean: spec.vision.imageMean, std: spec.vision.imageStd,
      aspectRatio: spec.imageAspectRatio, preprocessor: spec.vision.preprocessor });
  });

  it('the tower (select layer -2) and the linear projector', async () => {
    const cfg = JSON.parse(readFileSync(join(v1.dir, 'config.json'), 'utf8')) as { mm_vision_select_layer: number };
    expect(cfg.mm_vision_select_layer).toBe(-2);
    const vision = await loadVision(await loadModelSpec(v1.dir));
    const ours = await vision.encode(pixels);
    vision.dispose();
    const err = relativeError(ours, visionReference(pixels, -2));
    const wrongLayer = relativeError(ours, visionReference(pixels, -1));
    console.log(`v1.0 vision vs float64 PyTorch: ${err.toExponential(2)} (select layer -1 instead: ${wrongLayer.toExponential(2)})`);
    // f32 tower, fp16 projector weights exact in both: fp32 rounding only
    expect(err).toBeLessThan(1e-5);
    expect(wrongLayer).toBeGreaterThan(1000 * 1e-5);
  });

  it('next-token log-probabilities with the image spliced between <im_start> and <im_end> (rms_eps 1e-6)', async () => {
    const cfg = JSON.parse(readFileSync(join(v1.dir, 'config.json'), 'utf8')) as
      { hidden_size: number; num_hidden_layers: number; num_attention_heads: number; intermediate_size: number; vocab_size: number;
        rms_norm_eps: number };
    expect(cfg.rms_norm_eps).toBe(1e-6);
    const added = JSON.parse(readFileSync(join(v1.dir, 'added_tokens.json'), 'utf8')) as Record<string, number>;
    const tok = model.tokenizer;
    const tokens = tok.encodePrompt('Human: <image>\nIs there an opacity? ### Assistant:');
    const ours = await model.forward({ tokens, images: [png] });
    const feats = visionReference(pixels, -2);
    const D = cfg.hidden_size;
    const rows = feats.length / D;
    // LLaVA v0: <image> → <im_start> + <im_patch> × rows + <im_end>; the patch positions take the features
    const splice = (framed: boolean) => {
      const expanded: number[] = [];
      const emb = new Map<number, Float64Array>();
      for (const t of tokens) {
        if (t !== -200) { expanded.push(t); continue; }
        if (framed) expanded.push(added['<im_start>']!);
        for (let r = 0; r < rows; r++) { emb.set(expanded.length, feats.slice(r * D, (r + 1) * D)); expanded.push(added['<im_patch>']!); }
        if (framed) expanded.push(added['<im_end>']!);
      }
      return { expanded, emb };
    };
    const dims = { hidden: D, layers: cfg.num_hidden_layers, heads: cfg.num_attention_heads, kvHeads: cfg.num_attention_heads,
      ffn: cfg.intermediate_size, vocab: cfg.vocab_size, ropeTheta: 10000, rmsEps: cfg.rms_norm_eps };
    const weights = { get: (k: string) => W.get(k)! };
    const lp = logSoftmax(ours);
    const worst = (ref: Float64Array) => maxAbsDiff(lp, ref);
    const good = splice(true);
    const err = worst(llamaNextLogProbs(weights, dims, good.expanded, 'half', good.emb));
    const bare = splice(false);
    const unframed = worst(llamaNextLogProbs(weights, dims, bare.expanded, 'half', bare.emb));
    console.log(`LLaVA-Med v1.0 end to end vs float64: max |Δ log p| = ${err.toExponential(2)} (without <im_start>/<im_end>: ${unframed.toExponential(2)})`);
    // fp16 weights are exact in both; what is left is fp32 rounding and the f16 KV cache (measured
    // 2.2e-4; the bound leaves ~4x for other seeds and dispatches)
    expect(err).toBeLessThan(1e-3);
    expect(unframed).toBeGreaterThan(10 * 1e-3);
  });
});
