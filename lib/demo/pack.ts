/**
 * Packs a trained demo build into the folder shipped with the package (`models/medllava-demo`): the final
 * stage's HF LLaVA checkpoint (weights with the embedded tower, tokenizer), the tower's config beside it so the
 * folder is self-contained, a model card, the build's record, and sample images from the held-out test split
 * with their questions and ground truth (`npm run demo` asks them).
 */
import { copyFileSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { DEMO_STAGES, type DemoBuild } from './build.js';
import { demoModelDir, type DemoSample } from './samples.js';
import { Rand } from '../synth/canvas.js';
import { vqaQuestions } from '../synth/text.js';
import { MODALITIES } from '../synth/truth.js';
import { readWorldTruth } from '../synth/world.js';

export { demoModelDir, type DemoSample } from './samples.js';

export async function packDemo(o: { work: string; out?: string; card: string; samplesPerModality?: number }): Promise<string> {
  const out = o.out ?? demoModelDir();
  const tmp = `${out}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(join(tmp, 'vision_tower'), { recursive: true });
  mkdirSync(join(tmp, 'samples'), { recursive: true });
  const final = join(o.work, 'finetune');
  for (const f of ['model.safetensors', 'tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json']) copyFileSync(join(final, f), join(tmp, f));
  const cfg = JSON.parse(readFileSync(join(final, 'config.json'), 'utf8')) as Record<string, unknown>;
  const towerDir = join(o.work, 'init', 'clip-vit-large-patch14-336');
  for (const f of ['config.json', 'preprocessor_config.json']) copyFileSync(join(towerDir, f), join(tmp, 'vision_tower', f));
  cfg['_name_or_path'] = 'medllava-demo';
  cfg['mm_vision_tower'] = 'vision_tower'; // the tower's config, beside the weights (its weights are in model.safetensors)
  writeFileSync(join(tmp, 'config.json'), `${JSON.stringify(cfg, null, 2)}\n`);
  copyFileSync(join(o.work, 'build.json'), join(tmp, 'build.json'));
  writeFileSync(join(tmp, 'README.md'), o.card);
  // samples: the first test-split cases of each modality, a finding first
  const world = await readWorldTruth(join(o.work, 'world'));
  const samples: DemoSample[] = [];
  const rng = new Rand(11);
  for (const m of MODALITIES) {
    const cases = [...world.values()].filter((c) => c.split === 'test' && c.truth.modality === m)
      .sort((a, b) => Number(b.truth.finding !== 'none') - Number(a.truth.finding !== 'none'));
    for (const c of cases.slice(0, o.samplesPerModality ?? 1)) {
      const file = `samples/${c.truth.id}.png`;
      copyFileSync(join(o.work, 'world', c.image), join(tmp, file));
      // VQA questions: the fine-tuned model answers them (fine-tuning on short answers made it forget how to describe)
      const qs = vqaQuestions(c.truth, rng, 4);
      samples.push({ image: file, modality: m, truth: { ...c.truth }, caption: c.caption,
        questions: qs });
    }
  }
  writeFileSync(join(tmp, 'samples', 'samples.json'), `${JSON.stringify(samples, null, 1)}\n`);
  rmSync(out, { recursive: true, force: true });
  renameSync(tmp, out);
  return out;
}

/** the model card shipped beside the weights */
export function demoCard(b: DemoBuild & { shape?: unknown }, evaluation: string): string {
  const build = JSON.parse(readFileSync(join(b.world, '..', 'build.json'), 'utf8')) as { seed: number; cases: number;
    shape: { llm: Record<string, number>; vision: Record<string, number> }; settings: Record<string, { epochs: number; learningRate: number; batchSize: number }> };
  const { llm, vision } = build.shape;
  const minutes = (s: number) => `${(s / 60).toFixed(1)} min`;
  return `# medllava demo model

A small LLaVA-Med v1.5-layout model trained from scratch by medllava's own curriculum (\`npm run train:demo\`,
seed ${build.seed}) on a **synthetic** biomedical world of ${build.cases} procedurally drawn images in five modalities
(chest X-ray, CT, brain MRI, histopathology, gross pathology). It shows the whole pipeline working end to end; it has
never seen a real medical image and is **not a medical tool**.

- Vision tower: CLIP-style ViT, ${vision['imageSize']} px, patch ${vision['patchSize']}, width ${vision['hidden']}, ${vision['layers']} layers, ${vision['heads']} heads (trained from scratch, all layers used).
- Projector: mlp2x_gelu. LLM: Mistral-style, width ${llm['hidden']}, ${llm['layers']} layers, ${llm['heads']} heads, FFN ${llm['ffn']}, vocabulary ${llm['vocab']}.
- Tokenizer: SentencePiece BPE trained on the training split's text by medllava's trainer (the same vocabulary spm_train builds).
- Conversations: the offline rule-based writer (\`medllava generate-instruct\` without an endpoint).

| stage | data | epochs | lr | batch | loss first → last | time on 2 cores |
|---|---|---:|---:|---:|---|---:|
${DEMO_STAGES.map((s) => `| ${s} | ${({ pretrain: 'captions + citing sentences (everything trainable)', align: 'describe-the-image pairs (projector)', instruct: 'rule-written conversations (projector + LLM)', finetune: 'VQA train split, grouped per image (projector + LLM)' } as Record<string, string>)[s]} | ${build.settings[s]!.epochs} | ${build.settings[s]!.learningRate} | ${build.settings[s]!.batchSize} | ${b.firstLoss[s].toFixed(3)} → ${b.finalLoss[s].toFixed(3)} | ${minutes(b.seconds[s] ?? 0)} |`).join('\n')}

World rendering ${minutes(b.seconds['world'] ?? 0)}, conversations ${minutes(b.seconds['conversations'] ?? 0)}.

## Evaluation (held-out test split, never seen in training)

${evaluation}
## Known limits

- Fine-tuning on VQA's one-word answers makes the final model answer in a word or two: it no longer describes
  images or writes reports (its chat and report scores fall below the earlier stages'); LLaVA-Med's own VQA
  checkpoints are task-specific in the same way. The stage outputs of \`npm run train:demo\` (in its work folder) keep
  the describing models.
- Everything it knows is the synthetic world's: five procedural modalities, a dozen findings, templated language.
`;
}
