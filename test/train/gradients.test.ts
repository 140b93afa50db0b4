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
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { generateFixture } from '../../lib/fixtures/generate.js';
import { createTrainer, loadModel, type Model, type Trainer } from '../../lib/index.js';
import { modelInternals } from '../../lib/model/model.js';
import { torchReference } from '../support/torch-train.js';
import { batchFor, testImage } from '../support/train-batch.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-grad-'));

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i]! - b[i]!) ** 2; den += b[i]! ** 2; }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

const layouts = [
  { layout: 'llava-med-v1.5' as const, options: { stage: 'full' as const } },
  { layout: 'llava-med-v1' as const, options: { stage: 'instruct' as const } },
  // LoRA pairs, the projector and the whole timm tower; the bf16 base stays frozen
  { layout: 'llava-rad' as const, options: { trainable: ['*lora_*', '*mm_projector*', 'visual.*', 'vision_tower.*', '*trunk*'] } },
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
