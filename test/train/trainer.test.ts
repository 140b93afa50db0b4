/**
 * The Trainer's optimizer path and its edges:
 *   - llm.c's test_gpt2 habit: ten AdamW steps on one fixed batch (parameter groups: no decay on norms
 *     and biases, a separate projector learning rate; global-norm clipping) give torch.optim.AdamW's
 *     losses step by step (float64 reference over the same weights), and the same gradient norms;
 *   - gradient accumulation: two micro-batches of one sequence each = one batch of both (HF's older
 *     convention, each micro-batch's mean loss / k: here both have the same target count);
 *   - overfitting: the tiny model drives one batch's loss below 0.05;
 *   - bad batches are refused with a code and leave the trainer usable and unchanged;
 *   - HF's learning-rate schedules.
 */
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { generateFixture } from '../../lib/fixtures/generate.js';
import { createTrainer, loadModel, scheduleFactor, type Model, type Trainer } from '../../lib/index.js';
import { modelInternals } from '../../lib/model/model.js';
import { noWeightDecay } from '../../lib/train/trainer.js';
import { torchReference } from '../support/torch-train.js';
import { batchFor, testImage } from '../support/train-batch.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-trainer-'));
let dir: string;
let model: Model;

beforeAll(async () => {
  dir = ((await generateFixture({ layout: 'llava-med-v1.5', out: join(root, 'v15') })) as { dir: string }).dir;
  model = await loadModel(dir, { device: 'cpu' });
}, 300_000);
afterAll(async () => { await model?.dispose(); });

describe('AdamW steps against torch', () => {
  it('ten steps on one batch track torch.optim.AdamW loss by loss (relative < 1e-4)', async () => {
    const lr = 2e-3, projectorLr = 5e-3, weightDecay = 0.1;
    const trainer = await createTrainer(model, {
      stage: 'full', learningRate: lr, projectorLearningRate: projectorLr, weightDecay, maxGradNorm: 1.0, betas: [0.9, 0.95], eps: 1e-8,
    });
    try {
      const image = await testImage(3);
      const batch = batchFor(model.spec.llm.vocab, image);
      const pixels = await modelInternals(model).trainingParts().pixels(image);
      const owners = trainer.parameters.filter((p) => p.trainable && !p.tiedTo);
      // the reference starts from the weights as they are now
      const ref = await torchReference(model, batch.map((e, i) => ({
        inputIds: Array.from(e.inputIds), labels: Array.from(e.labels), pixels: i === 0 ? [pixels] : [],
      })), owners.map((p) => p.name), {
        adamw: {
          steps: 10, lr, betas: [0.9, 0.95], eps: 1e-8, weightDecay, maxGradNorm: 1.0,
          noDecay: owners.filter((p) => noWeightDecay(p.name)).map((p) => p.name),
          lrs: Object.fromEntries(owners.filter((p) => p.name.includes('mm_projector')).map((p) => [p.name, projectorLr])),
        },
      });
      const losses: number[] = [], norms: number[] = [];
      for (let s = 0; s < 10; s++) {
        const r = await trainer.step(batch);
        expect(r.updated).toBe(true);
        losses.push(r.loss);
        norms.push(r.gradNorm);
      }
      let worst = 0, worstNorm = 0;
      losses.forEach((l, i) => { worst = Math.max(worst, Math.abs(l - ref.losses![i]!) / Math.abs(ref.losses![i]!)); });
      norms.forEach((n, i) => { worstNorm = Math.max(worstNorm, Math.abs(n - ref.gradNorms![i]!) / ref.gradNorms![i]!); });
      console.log(`10 AdamW steps: ours ${losses.map((l) => l.toFixed(5)).join(' ')}\n` +
        `              torch ${ref.losses!.map((l) => l.toFixed(5)).join(' ')}\n` +
        `  worst loss rel ${worst.toExponential(2)}, worst grad-norm rel ${worstNorm.toExponential(2)} (clipped: ${norms.filter((n) => n > 1).length}/10)`);
      expect(worst).toBeLessThan(1e-4);
      expect(worstNorm).toBeLessThan(1e-4);
      expect(losses[9]!).toBeLessThan(losses[0]!);
    } finally {
      await trainer.dispose();
    }
  }, 300_000);
});

describe('the trainer', () => {
  let trainer: Trainer;
  beforeAll(async () => {
    model = await reload();
    trainer = await createTrainer(model, { stage: 'instruct', learningRate: 3e-3, maxGradNorm: 1.0 });
  }, 300_000);
  afterAll(async () => { await trainer?.dispose(); });

  async function reload(): Promise<Model> {
    await model.dispose();
    return loadModel(dir, { device: 'cpu' });
  }

  it('the gradient of a batch is its sequences\' gradients weighted by their target counts', async () => {
    const image = await testImage(5);
    const [a, b] = batchFor(model.spec.llm.vocab, image);
    const whole = await trainer.lossAndGradients([a!, b!]);
    const ga = await trainer.lossAndGradients([a!]);
    const gb = await trainer.lossAndGradients([b!]);
    const wa = ga.tokens / whole.tokens, wb = gb.tokens / whole.tokens;
    expect(Math.abs(ga.loss * wa + gb.loss * wb - whole.loss)).toBeLessThan(1e-5 * whole.loss);
    let worst = 0;
    for (const [name, g] of whole.gradients) {
      const x = ga.gradients.get(name)!, y = gb.gradients.get(name)!;
      let num = 0, den = 0;
      for (let i = 0; i < g.length; i++) { num += (x[i]! * wa + y[i]! * wb - g[i]!) ** 2; den += g[i]! ** 2; }
      if (den > 0) worst = Math.max(worst, Math.sqrt(num / den));
      if (den > 0 && Math.sqrt(num / den) > 1e-5) console.log("DBG", name, Math.sqrt(num / den), Math.sqrt(den));
    }
    expect(worst).toBeLessThan(1e-5);
  }, 120_000);

  it('gradient accumulation: two micro-batches, then one update whose norm is that of their mean gradient', async () => {
    const fresh = await loadModel(dir, { device: 'cpu' });
    const acc = await createTrainer(fresh, { stage: 'instruct', learningRate: 1e-3, gradientAccumulation: 2 });
    try {
      const [a, b0] = batchFor(fresh.spec.llm.vocab, await testImage(5));
      const b = { ...b0!, labels: Array.from(b0!.labels).map((l, i) => (i === 3 ? Array.from(b0!.inputIds)[3]! : l)) };  // 5 targets, as a
      const ga = await acc.lossAndGradients([a!]), gb = await acc.lossAndGradients([b]);
      expect(ga.tokens).toBe(gb.tokens);
      let ss = 0;
      for (const [name, g] of ga.gradients) {
        const h = gb.gradients.get(name)!;
        for (let i = 0; i < g.length; i++) ss += ((g[i]! + h[i]!) / 2) ** 2;
      }
      const r1 = await acc.step([a!]);
      expect(r1.updated).toBe(false);
      expect(r1.step).toBe(0);
      const r2 = await acc.step([b]);
      expect(r2.updated).toBe(true);
      expect(r2.step).toBe(1);
      expect(Math.abs(r2.gradNorm - Math.sqrt(ss)) / Math.sqrt(ss)).toBeLessThan(1e-5);
    } finally {
      await acc.dispose();
      await fresh.dispose();
    }
  }, 120_000);

  it('refuses bad batches with a code and stays usable and unchanged', async () => {
    const image = await testImage(9);
    const good = batchFor(model.spec.llm.vocab, image);
    const before = await trainer.lossAndGradients(good);
    const V = model.spec.llm.vocab;
    const cases: [string, unknown, string][] = [
      ['labels longer than the ids', [{ inputIds: [1, 2, 3], labels: [1, 2, 3, 4] }], 'E_SHAPE'],
      ['an image placeholder without its image', [{ inputIds: [1, -200, 3], labels: [-100, -100, 3] }], 'E_ARGUMENT'],
      ['an image without its placeholder', [{ inputIds: [1, 2, 3], labels: [-100, 2, 3], images: [image] }], 'E_ARGUMENT'],
      ['a label outside the vocabulary', [{ inputIds: [1, 2, 3], labels: [-100, 2, V + 5] }], 'E_ARGUMENT'],
      ['a negative label other than -100', [{ inputIds: [1, 2, 3], labels: [-100, -7, 3] }], 'E_ARGUMENT'],
      ['a token outside the vocabulary', [{ inputIds: [1, V, 3], labels: [-100, 2, 3] }], 'E_ARGUMENT'],
      ['an empty batch', [], 'E_ARGUMENT'],
      ['an example with no tokens', [{ inputIds: [], labels: [] }], 'E_ARGUMENT'],
      ['a sequence longer than the context', [{ inputIds: Array(model.spec.llm.contextLength + 1).fill(5),
        labels: Array(model.spec.llm.contextLength + 1).fill(5) }], 'E_CONTEXT_FULL'],
      ['a negative weight', [{ inputIds: [1, 2, 3], labels: [-100, 2, 3], weight: -1 }], 'E_ARGUMENT'],
    ];
    for (const [what, batch, code] of cases) {
      await expect(trainer.step(batch as never), what).rejects.toMatchObject({ code });
      await expect(trainer.lossAndGradients(batch as never), what).rejects.toMatchObject({ code });
    }
    const after = await trainer.lossAndGradients(good);
    expect(after.loss).toBe(before.loss);
    for (const [name, g] of before.gradients) expect(after.gradients.get(name), name).toEqual(g);
  }, 120_000);

  it('an aborted step changes nothing', async () => {
    const good = batchFor(model.spec.llm.vocab, await testImage(9));
    const before = await trainer.lossAndGradients(good);
    const ac = new AbortController();
    ac.abort();
    await expect(trainer.step(good, { signal: ac.signal })).rejects.toMatchObject({ code: 'E_ABORTED' });
    const after = await trainer.lossAndGradients(good);
    expect(after.loss).toBe(before.loss);
  });

  it('overfits one batch: loss below 0.05', async () => {
    const batch = batchFor(model.spec.llm.vocab, await testImage(11));
    let loss = Infinity, steps = 0;
    const first = (await trainer.lossAndGradients(batch)).loss;
    while (loss > 0.05 && steps < 300) {
      loss = (await trainer.step(batch)).loss;
      steps++;
    }
    console.log(`overfit: loss ${first.toFixed(3)} → ${loss.toFixed(4)} in ${steps} steps`);
    expect(loss).toBeLessThan(0.05);
  }, 300_000);

  it('save writes the trainable values, the AdamW state and the trainer state', async () => {
    const out = join(root, 'saved');
    await trainer.save(out);
    for (const f of ['trainable.safetensors', 'optimizer.safetensors', 'trainer_state.json']) expect(existsSync(join(out, f)), f).toBe(true);
    const state = JSON.parse(readFileSync(join(out, 'trainer_state.json'), 'utf8')) as { step: number };
    expect(state.step).toBeGreaterThan(0);
  });
});

describe('parameter groups (HF Trainer: no decay on biases and normalization layers)', () => {
  it('names every norm of the three layouts and nothing else', () => {
    const none = ['model.layers.0.input_layernorm.weight', 'model.layers.3.post_attention_layernorm.weight', 'model.norm.weight',
      'vision_model.encoder.layers.0.layer_norm1.weight', 'vision_model.encoder.layers.0.layer_norm2.weight', 'vision_model.pre_layrnorm.weight',
      'visual.trunk.blocks.0.norm1.weight', 'visual.trunk.blocks.0.norm2.weight', 'visual.trunk.norm_pre.weight', 'model.mm_projector.0.bias',
      'vision_model.encoder.layers.0.self_attn.k_proj.bias'];
    const decay = ['model.layers.0.self_attn.q_proj.weight', 'model.embed_tokens.weight', 'lm_head.weight', 'model.mm_projector.2.weight',
      'visual.trunk.blocks.0.ls1.gamma', 'vision_model.embeddings.position_embedding.weight', 'visual.trunk.blocks.0.attn.qkv.weight',
      'base_model.model.model.layers.0.mlp.down_proj.lora_A.weight'];
    for (const n of none) expect(noWeightDecay(n), n).toBe(true);
    for (const n of decay) expect(noWeightDecay(n), n).toBe(false);
  });
});

describe('learning-rate schedules (HF get_scheduler)', () => {
  it('linear, cosine and constant with warmup, as HF computes them', () => {
    // HF: lr of optimizer step k uses lambda(k − 1); warmup_steps = ceil(ratio · total)
    const lin = { kind: 'linear' as const, warmupRatio: 0.1, totalSteps: 20 };
    expect([0, 1, 2, 3, 20].map((k) => scheduleFactor(lin, k))).toEqual([0, 0.5, 1, 17 / 18, 0]);
    const cos = { kind: 'cosine' as const, warmupSteps: 2, totalSteps: 12 };
    expect(scheduleFactor(cos, 0)).toBe(0);
    expect(scheduleFactor(cos, 2)).toBe(1);
    expect(scheduleFactor(cos, 7)).toBeCloseTo(0.5, 12);
    expect(scheduleFactor(cos, 12)).toBeCloseTo(0, 12);
    expect(scheduleFactor({ kind: 'constant' }, 5)).toBe(1);
    expect(scheduleFactor({ kind: 'constant', warmupSteps: 4 }, 1)).toBe(0.25);
  });
});

describe('the fused loss head (lm_head + cross-entropy, chunked)', () => {
  it('in chunks of 3 labelled rows gives the loss and gradients of one chunk; a bad chunk size is refused', async () => {
    const batch = batchFor(model.spec.llm.vocab, await testImage(5), { long: true });
    const whole = await createTrainer(model, { stage: 'full' });
    const a = await whole.lossAndGradients(batch);
    await whole.dispose();
    const chunked = await createTrainer(model, { stage: 'full', lossChunkRows: 3 });
    const b = await chunked.lossAndGradients(batch);
    await chunked.dispose();
    expect(b.tokens).toBe(a.tokens);
    expect(Math.abs(b.loss - a.loss) / a.loss).toBeLessThan(1e-6);
    let worst = 0, total = 0;
    for (const g of a.gradients.values()) for (const x of g) total += x * x;
    for (const [name, g] of a.gradients) {
      const h = b.gradients.get(name)!;
      let num = 0, den = 0;
      for (let i = 0; i < g.length; i++) { num += (g[i]! - h[i]!) ** 2; den += g[i]! ** 2; }
      // a key projection's bias: its gradient is identically 0 (gradients.test.ts), both sides fp32 noise
      if (den < 1e-18 * total) continue;
      worst = Math.max(worst, Math.sqrt(num / den));
    }
    // the same sums but the lm_head's dW, accumulated chunk by chunk: fp32 rounding only
    expect(worst).toBeLessThan(1e-5);
    for (const bad of [0, -1, 2.5])
      await expect(createTrainer(model, { stage: 'full', lossChunkRows: bad })).rejects.toMatchObject({ code: 'E_ARGUMENT' });
  }, 120_000);
});

describe('compute type', () => {
  it('bf16 compute is for a CUDA device: on the CPU it is refused with E_UNSUPPORTED, a bad name with E_ARGUMENT', async () => {
    await expect(createTrainer(model, { stage: 'align', computeType: 'bf16' })).rejects.toMatchObject({ code: 'E_UNSUPPORTED' });
    await expect(createTrainer(model, { stage: 'align', computeType: 'fp8' as never })).rejects.toMatchObject({ code: 'E_ARGUMENT' });
    const t = await createTrainer(model, { stage: 'align', computeType: 'f32' });
    await t.dispose();
  });
});
