/**
 * The demo pipeline from nothing, shortened to fit CI: a small synthetic world, the rule-written conversations, a
 * BPE tokenizer trained on it, a randomly initialised small model, then stage 0 (captioning, everything trainable),
 * stage 1 (align), stage 2 (instruct) and stage 3 (VQA fine-tune) through train(). Asserts that every stage's loss
 * falls and that the fine-tuned model's closed accuracy on the held-out test split beats, by a clear margin, the
 * best answer a model could give without looking: the training split's most frequent answer to the same question
 * text. This checks the pipeline, not the shipped weights.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { buildDemo, DEMO_STAGES, type DemoBuild } from '../../lib/demo/build.js';
import { evalVqa, readVqaFile } from '../../lib/eval/vqa.js';
import { closedHit } from '../../lib/eval/vqa-metrics.js';
import { loadModel } from '../../lib/model/model.js';

const work = mkdtempSync(join(tmpdir(), 'medllava-demo-ci-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** small enough to train in a couple of minutes on 2 cores */
const CI_SHAPE = {
  llm: { hidden: 128, layers: 2, heads: 2, kvHeads: 2, ffn: 352, vocab: 700, ropeTheta: 10000, rmsEps: 1e-5, context: 256 },
  vision: { imageSize: 56, patchSize: 14, hidden: 128, layers: 2, heads: 2, ffn: 256, eps: 1e-5 },
  projector: 'mlp2x_gelu' as const,
};

describe('the demo curriculum from scratch (shortened)', () => {
  let build: DemoBuild;
  it('trains every stage with a falling loss', async () => {
    const losses: Record<string, number[]> = {};
    build = await buildDemo({
      work, cases: 900, imageSize: 56, seed: 3, shape: CI_SHAPE,
      stages: {
        pretrain: { epochs: 5, learningRate: 2e-3, batchSize: 16 }, align: { epochs: 1, learningRate: 2e-3, batchSize: 16 },
        instruct: { epochs: 1, learningRate: 1e-3, batchSize: 16 }, finetune: { epochs: 10, learningRate: 1e-3, batchSize: 16 },
      },
      onEvent: (s, e) => { if (e.type === 'step') (losses[s] ??= []).push(e.loss); },
    });
    for (const s of DEMO_STAGES) {
      const l = losses[s]!;
      expect(l.length).toBeGreaterThan(1);
      const head = l.slice(0, 3).reduce((a, b) => a + b, 0) / Math.min(3, l.length);
      const tail = l.slice(-3).reduce((a, b) => a + b, 0) / Math.min(3, l.length);
      expect(tail, `${s}: ${l.map((x) => x.toFixed(2)).join(' ')}`).toBeLessThan(head);
    }
    // from scratch, the captioning loss must fall a long way (the language is learnt there)
    expect(build.finalLoss.pretrain).toBeLessThan(build.firstLoss.pretrain / 3);
  }, 900_000);

  it('answers held-out closed questions clearly better than the best blind answer', async () => {
    const world = build.world;
    const prior = new Map<string, Map<string, number>>();
    for (const q of readVqaFile(join(world, 'vqa', 'train.json'))) {
      const m = prior.get(q.question) ?? new Map<string, number>();
      m.set(q.answer, (m.get(q.answer) ?? 0) + 1);
      prior.set(q.question, m);
    }
    const test = readVqaFile(join(world, 'vqa', 'test.json')).filter((q) => q.answerType === 'CLOSED');
    const blind = test.filter((q) => {
      const m = prior.get(q.question);
      const best = m ? [...m].sort((a, b) => b[1] - a[1])[0]![0] : 'no';
      return closedHit(best, q.answer);
    }).length / test.length;
    const model = await loadModel(build.outputs.finetune, { threads: 2 });
    try {
      const r = await evalVqa({ model, data: join(world, 'vqa', 'test.json'), images: world });
      expect(r.closedCount).toBe(test.length);
      expect(r.closedCount).toBeGreaterThan(120);
      expect(r.closed / 100, `closed ${r.closed.toFixed(1)} % vs blind ${(100 * blind).toFixed(1)} %; open ${r.open.toFixed(1)} %`).toBeGreaterThan(blind + 0.1);
    } finally {
      await model.dispose();
    }
    expect(JSON.parse(readFileSync(join(work, 'build.json'), 'utf8')).settings.finetune.epochs).toBe(10);
  }, 300_000);
});
