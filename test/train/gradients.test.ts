/**
 * Whole-model gradients (createTrainer → lossAndGradients) against PyTorch's autograd in float64
 * over the same weights (test/support/torch_llava.py), on the three tiny fixture layouts, each with
 * an image spliced in, masked labels and two text-only sequences of other lengths (the batch padded to 40):
 *   - LLaVA-Med v1.5: CLIP + mlp2x_gelu + Mistral-style GQA, everything trainable (the tower too);
 *   - LLaVA-Med v1.0: linear projector, <im_start>/<im_end> frames, the instruct stage;
 *   - LLaVA-Rad: timm ViT (fused qkv, LayerScale), LoRA over a frozen bf16 base: LoRA + projector +
 *     tower trainable, so dX runs through every frozen bf16 weight.
 * Loss relative error < 1e-5 and every trainable parameter's gradient relative error < 1e-4.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { generateFixture } from '../../lib/fixtures/generate.js';
import { createTrainer, loadModel, type Model, type Trainer } from '../../lib/index.js';
import { modelInternals } from '../../lib/model/model.js';
import { nativeBatch } from '../../lib/train/trainer.js';
import { torchReference } from '../support/torch-train.js';
import { batchFor, testImage } from '../support/train-batch.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-grad-'));

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i]! - b[i]!) ** 2; den += b[i]! ** 2; }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

// lossChunkRows: the fused lm_head + cross-entropy in chunks of that many labelled rows (ragged: the
// batch's labelled rows are no multiple of them; some chunks pack several runs, some lie inside one);
// v1.0 keeps the default (all its labelled rows in one chunk)
const layouts = [
  { layout: 'llava-med-v1.5' as const, options: { stage: 'full' as const, lossChunkRows: 5 } },
  { layout: 'llava-med-v1' as const, options: { stage: 'instruct' as const } },
  // LoRA pairs, the projector and the whole timm tower; the bf16 base stays frozen
  { layout: 'llava-rad' as const, options: { trainable: ['*lora_*', '*mm_projector*', 'visual.*', 'vision_tower.*', '*trunk*'], lossChunkRows: 7 } },
];

describe.each(layouts)('whole-model gradients vs torch autograd: $layout', ({ layout, options }) => {
  let model: Model;
  let trainer: Trainer;
  beforeAll(async () => {
    const f = (await generateFixture({ layout, out: join(root, layout) })) as { dir: string };
    model = await loadModel(f.dir, { device: 'cpu' });
    trainer = await createTrainer(model, options);
  }, 300_000);
  afterAll(async () => {
    await trainer?.dispose();
    await model?.dispose();
  });

  it('loss and every trainable gradient match float64 autograd', async () => {
    const image = await testImage(7);
    const batch = batchFor(model.spec.llm.vocab, image, { long: true });
    const ours = await trainer.lossAndGradients(batch);
    const pixels = await modelInternals(model).trainingParts().pixels(image);
    const trainable = trainer.parameters.filter((p) => p.trainable).map((p) => p.name);
    const ref = await torchReference(model, batch.map((e, i) => ({
      inputIds: Array.from(e.inputIds), labels: Array.from(e.labels), pixels: i === 0 ? [pixels] : [],
    })), trainable);
    expect(ours.tokens).toBe(ref.tokens);
    const lossErr = Math.abs(ours.loss - ref.loss) / Math.abs(ref.loss);
    let worst = 0, worstName = '', zeroWorst = 0;
    const norm = (a: ArrayLike<number>) => Math.sqrt(Array.from(a).reduce((s, x) => s + x * x, 0));
    const total = Math.sqrt(Object.values(ref.grads).reduce((s, g) => s + norm(g) ** 2, 0));
    for (const [name, g] of ours.gradients) {
      const want = ref.grads[name];
      expect(want, `torch has a gradient for ${name}`).toBeDefined();
      expect(g.length).toBe(want!.length);
      // A key projection's bias moves every score of a query row by the same amount, which softmax
      // ignores: its gradient is exactly 0 (torch: ~1e-17), ours the fp32 rounding of a zero sum. Such
      // tensors are held to an absolute bound against the whole gradient's norm instead.
      if (norm(want!) < 1e-9 * total) {
        zeroWorst = Math.max(zeroWorst, norm(g) / total);
        continue;
      }
      const e = relErr(g, want!);
      if (e > worst) { worst = e; worstName = name; }
    }
    const owners = trainer.parameters.filter((p) => p.trainable && !p.tiedTo);
    expect(ours.gradients.size).toBe(owners.length);
    console.log(`${layout}: loss ${ours.loss.toFixed(6)} (torch ${ref.loss.toFixed(6)}, rel ${lossErr.toExponential(2)}), ` +
      `${ours.gradients.size} gradients, worst rel ${worst.toExponential(2)} (${worstName})` +
      (zeroWorst ? `; identically-zero gradients: |ours| / |all| ≤ ${zeroWorst.toExponential(2)}` : ''));
    expect(lossErr).toBeLessThan(1e-5);
    expect(worst).toBeLessThan(1e-4);
    expect(zeroWorst).toBeLessThan(1e-6);
  }, 300_000);
});

describe('new LoRA adapters (stage lora on a model without them)', () => {
  it('adds PEFT pairs that change nothing until trained; with dropout their gradients match torch\'s on the same masks', async () => {
    const f = (await generateFixture({ layout: 'llava-med-v1.5', out: join(root, 'lora-new') })) as { dir: string };
    const model = await loadModel(f.dir, { device: 'cpu' });
    try {
      const image = await testImage(21);
      const batch = batchFor(model.spec.llm.vocab, image, { long: true });
      const before = await model.forward({ tokens: [1, 5, 9, 13] });
      await expect(createTrainer(model, { stage: 'lora', lora: { r: 4, alpha: 8, dropout: 1 } })).rejects.toMatchObject({ code: 'E_ARGUMENT' });
      // LoRA dropout 0.1 on the adapters' input: the reference drops the same elements (native/ops/dropout.h's mask)
      const trainer = await createTrainer(model, { stage: 'lora', lora: { r: 4, alpha: 8, dropout: 0.1, targets: ['q_proj', 'v_proj', 'down_proj'] },
        seed: 3 });
      const names = trainer.parameters.filter((p) => p.trainable).map((p) => p.name);
      expect(names.filter((n) => n.includes('lora_A'))).toEqual([0, 1].flatMap((l) => [
        `base_model.model.model.layers.${l}.self_attn.q_proj.lora_A.weight`, `base_model.model.model.layers.${l}.self_attn.v_proj.lora_A.weight`,
        `base_model.model.model.layers.${l}.mlp.down_proj.lora_A.weight`]));
      expect(names.filter((n) => !n.includes('lora_')).every((n) => n.includes('mm_projector'))).toBe(true);
      // B = 0: the model computes what it did
      const after = await model.forward({ tokens: [1, 5, 9, 13] });
      expect(Array.from(after)).toEqual(Array.from(before));
      // give B values (else A's gradient is 0), then compare every gradient with torch
      const llm = modelInternals(model).trainingParts().llm;
      for (const p of trainer.parameters.filter((q) => q.name.includes('lora_B'))) {
        const n = p.shape[0]! * p.shape[1]!;
        await llm.writeParameter(p.name, Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + n) * 0.05));
      }
      const ours = await trainer.lossAndGradients(batch);  // the first step: step seed = seed + 0
      const pixels = await modelInternals(model).trainingParts().pixels(image);
      const table = llm.parameters().map((p) => p.name);
      const nb = await nativeBatch(model, batch);
      const seeds = Object.fromEntries(table.filter((n) => n.includes('lora_A')).map((n) => [n,
        ((3n * 0x9E3779B97F4A7C15n + BigInt(table.indexOf(n) + 1)) & ((1n << 64n) - 1n)).toString()]));
      const ref = await torchReference(model, batch.map((e, i) => ({
        inputIds: Array.from(e.inputIds), labels: Array.from(e.labels), pixels: i === 0 ? [pixels] : [],
      })), names, { loraScale: 2, loraDropout: { p: 0.1, T: Math.max(...nb.seqs.map((q) => q.tokens.length)), seeds } });
      let worst = 0;
      for (const [name, g] of ours.gradients) worst = Math.max(worst, relErr(g, ref.grads[name]!));
      console.log(`new LoRA (r 4, α 8, q/v/down, dropout 0.1): loss rel ${(Math.abs(ours.loss - ref.loss) / ref.loss).toExponential(2)}, ` +
        `${ours.gradients.size} gradients, worst rel ${worst.toExponential(2)}`);
      expect(Math.abs(ours.loss - ref.loss) / ref.loss).toBeLessThan(1e-5);
      expect(worst).toBeLessThan(1e-4);
      // a second trainer does not add adapters again
      await trainer.dispose();
      const again = await createTrainer(model, { stage: 'lora' });
      expect(again.parameters.filter((p) => p.name.includes('lora_A')).length).toBe(6);
      await again.dispose();
    } finally {
      await model.dispose();
    }
  }, 300_000);
});

describe('a tied lm_head and LoRA over a quantized GGUF base', () => {
  it('tied: lm_head and embed_tokens share one gradient, the sum of both uses, as torch\'s', async () => {
    const f = (await generateFixture({ layout: 'llava-med-v1.5', out: join(root, 'tied') })) as { dir: string };
    const cfg = join(f.dir, 'config.json');
    writeFileSync(cfg, JSON.stringify({ ...JSON.parse(readFileSync(cfg, 'utf8')), tie_word_embeddings: true }));
    const model = await loadModel(f.dir, { device: 'cpu' });
    const trainer = await createTrainer(model, { stage: 'instruct' });
    try {
      expect(trainer.parameters.find((p) => p.name === 'lm_head.weight')).toMatchObject({ tiedTo: 'model.embed_tokens.weight', trainable: true });
      const image = await testImage(23);
      const batch = batchFor(model.spec.llm.vocab, image, { long: true });
      const ours = await trainer.lossAndGradients(batch);
      expect(ours.gradients.has('lm_head.weight')).toBe(false);
      const pixels = await modelInternals(model).trainingParts().pixels(image);
      const names = trainer.parameters.filter((p) => p.trainable && !p.tiedTo).map((p) => p.name);
      const ref = await torchReference(model, batch.map((e, i) => ({
        inputIds: Array.from(e.inputIds), labels: Array.from(e.labels), pixels: i === 0 ? [pixels] : [],
      })), names);
      let worst = 0;
      for (const [name, g] of ours.gradients) worst = Math.max(worst, relErr(g, ref.grads[name]!));
      console.log(`tied lm_head: embed_tokens rel ${relErr(ours.gradients.get('model.embed_tokens.weight')!, ref.grads['model.embed_tokens.weight']!)
        .toExponential(2)}, worst ${worst.toExponential(2)}`);
      expect(worst).toBeLessThan(1e-4);
    } finally {
      await trainer.dispose();
      await model.dispose();
    }
  }, 300_000);

  it.each(['Q8_0', 'Q4_0', 'F16'] as const)('LoRA over a frozen %s GGUF base: gradients through the quantized weights match torch on their values', async (type) => {
    const f = (await generateFixture({ layout: 'gguf', out: join(root, `gguf-${type}`), ggufType: type })) as { llm: string };
    const model = await loadModel(f.llm, { device: 'cpu' });
    const trainer = await createTrainer(model, { stage: 'lora', lora: { r: 4, alpha: 4, dropout: 0 }, seed: 9 });
    try {
      const llm = modelInternals(model).trainingParts().llm;
      for (const p of trainer.parameters.filter((q) => q.name.includes('lora_B'))) {
        const n = p.shape[0]! * p.shape[1]!;
        await llm.writeParameter(p.name, Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.11 + n) * 0.05));
      }
      // text only: the mmproj's tower names are GGUF's, which the reference does not read
      const batch = batchFor(model.spec.llm.vocab, await testImage(1), { long: true }).slice(1);
      const names = trainer.parameters.filter((p) => p.trainable && p.component === 'llm').map((p) => p.name);
      const ours = await trainer.lossAndGradients(batch);
      const ref = await torchReference(model, batch.map((e) => ({ inputIds: Array.from(e.inputIds), labels: Array.from(e.labels) })), names,
        { loraScale: 1 });
      let worst = 0;
      for (const name of names) worst = Math.max(worst, relErr(ours.gradients.get(name)!, ref.grads[name]!));
      console.log(`LoRA over ${type} GGUF (adjacent RoPE): loss rel ${(Math.abs(ours.loss - ref.loss) / ref.loss).toExponential(2)}, ` +
        `${names.length} LoRA gradients, worst rel ${worst.toExponential(2)}`);
      // The forward through Q8_0 / Q4_0 weights quantizes the activations to Q8_0 blocks, as inference does
      // (and llama.cpp): a relative rounding of up to 1/254 of each 32-block's largest value, which reaches the
      // gradients through a few layers (measured 1.1e-2 / 1.4e-2; the loss 3e-5 / 3e-4). Backward's dX runs
      // on the exactly decoded weights. F16 takes the f32-activation path: the CPU's 1e-4.
      const [gradTol, lossTol] = type === 'F16' ? [1e-4, 1e-5] : [3e-2, 1e-3];
      expect(Math.abs(ours.loss - ref.loss) / ref.loss).toBeLessThan(lossTol);
      expect(worst).toBeLessThan(gradTol);
    } finally {
      await trainer.dispose();
      await model.dispose();
    }
  }, 300_000);
});
