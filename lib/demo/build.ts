/**
 * Builds the bundled demo model from nothing, with our own curriculum (`npm run train:demo`):
 *   1. a synthetic world (images, ground truth, captions, citing sentences, VQA splits);
 *   2. instruction conversations from it (the offline rule-based writer, or an endpoint);
 *   3. a SentencePiece BPE tokenizer trained on the training split's text;
 *   4. a randomly initialised LLaVA-Med v1.5-layout model (small CLIP-style ViT, mlp2x_gelu, small Mistral-style LLM);
 *   5. stage 0 — captioning with everything trainable (tower, projector, LLM), from scratch;
 *      stage 1 — align (projector only) on describe-the-image pairs;
 *      stage 2 — instruct (projector + LLM) on the conversations;
 *      stage 3 — VQA fine-tune (projector + LLM) on the training split's questions.
 * Every stage's output is kept (the evaluation compares them). Seeded end to end.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { generateFixture, type FixtureShape } from '../fixtures/generate.js';
import { Rand } from '../synth/canvas.js';
import { generateInstruct } from '../synth/instruct.js';
import { BRIEF_INSTRUCTIONS, DETAILED_INSTRUCTIONS } from '../synth/text.js';
import { writeSyntheticWorld } from '../synth/world.js';
import { trainBpe } from '../tokenizer/train.js';
import { train, type TrainEvent, type TrainOptions } from '../train/run.js';

/** the demo model's shape: about 5.8 M parameters, 64 image tokens */
export const DEMO_SHAPE: FixtureShape = {
  llm: { hidden: 256, layers: 4, heads: 4, kvHeads: 4, ffn: 704, vocab: 1024, ropeTheta: 10000, rmsEps: 1e-5, context: 512 },
  vision: { imageSize: 112, patchSize: 14, hidden: 192, layers: 4, heads: 3, ffn: 768, eps: 1e-5 },
  projector: 'mlp2x_gelu',
};

export const DEMO_STAGES = ['pretrain', 'align', 'instruct', 'finetune'] as const;
export type DemoStage = (typeof DEMO_STAGES)[number];

export interface StageSettings { epochs: number; learningRate: number; batchSize: number }

export interface BuildDemoOptions {
  /** working folder: world/, tokenizer, init/, one folder per stage */
  work: string;
  /** synthetic cases (default 2500) and image side (default 224) */
  cases?: number;
  imageSize?: number;
  seed?: number;
  shape?: FixtureShape;
  stages?: Partial<Record<DemoStage, Partial<StageSettings>>>;
  /** an OpenAI-compatible endpoint for the conversations (default: the rule-based writer) */
  endpoint?: string;
  endpointModel?: string;
  apiKey?: string;
  threads?: number;
  signal?: AbortSignal;
  onEvent?: (stage: DemoStage | 'world' | 'instruct' | 'tokenizer' | 'init', e: TrainEvent) => void;
}

/** each stage's defaults: chosen for a model this small trained from scratch (upstream's 2e-5 is for a pretrained 7B) */
export const DEMO_STAGE_DEFAULTS: Record<DemoStage, StageSettings> = {
  pretrain: { epochs: 6, learningRate: 1e-3, batchSize: 32 },
  align: { epochs: 1, learningRate: 1e-3, batchSize: 32 },
  instruct: { epochs: 2, learningRate: 3e-4, batchSize: 32 },
  finetune: { epochs: 5, learningRate: 3e-4, batchSize: 32 },
};

export interface DemoBuild {
  world: string;
  outputs: Record<DemoStage, string>;
  seconds: Record<string, number>;
  finalLoss: Record<DemoStage, number>;
  firstLoss: Record<DemoStage, number>;
}

/** VQA train.json → one multi-turn conversation per image (the image is encoded once for its questions), the
 * questions in a seeded random order: any kind of question can come first, right after the image, as at test time */
function groupVqaByImage(file: string, out: string, seed: number): void {
  const rows = JSON.parse(readFileSync(file, 'utf8')) as { id: string; image: string; conversations: { from: string; value: string }[] }[];
  const byImage = new Map<string, { q: string; a: string }[]>();
  for (const r of rows) {
    const qa = byImage.get(r.image) ?? [];
    qa.push({ q: r.conversations[0]!.value.replace(/\n?<image>\n?/, ''), a: r.conversations[1]!.value });
    byImage.set(r.image, qa);
  }
  const rng = new Rand(seed ^ 0x51ed);
  writeFileSync(out, JSON.stringify([...byImage].map(([image, qa], i) => ({
    id: `vqa-${i}`, image,
    conversations: rng.shuffle(qa).flatMap(({ q, a }, k) => [{ from: 'human', value: k ? q : `<image>\n${q}` }, { from: 'gpt', value: a }]),
  }))));
}

export async function buildDemo(o: BuildDemoOptions): Promise<DemoBuild> {
  const seed = o.seed ?? 7;
  const shape = o.shape ?? DEMO_SHAPE;
  const emit = o.onEvent ?? (() => {});
  const log = (stage: Parameters<NonNullable<BuildDemoOptions['onEvent']>>[0], message: string) => emit(stage, { type: 'log', message });
  const seconds: Record<string, number> = {};
  const timed = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    const r = await f();
    seconds[name] = (performance.now() - t0) / 1000;
    return r;
  };
  mkdirSync(o.work, { recursive: true });
  const worldDir = join(o.work, 'world');
  const world = await timed('world', () => writeSyntheticWorld({
    out: worldDir, count: o.cases ?? 2500, seed, size: o.imageSize ?? 224,
    onProgress: (d, n) => { if (d % 500 === 0 || d === n) log('world', `rendered ${d}/${n} images`); },
  }));
  const instructFile = join(worldDir, 'instruct.json');
  await timed('conversations', () => generateInstruct({
    figures: world.files.figures, out: instructFile, split: 'train', endpoint: o.endpoint, model: o.endpointModel, apiKey: o.apiKey, seed,
  }));
  const vqaGrouped = join(worldDir, 'vqa', 'train-by-image.json');
  groupVqaByImage(world.files.vqaTrain, vqaGrouped, seed);

  // the tokenizer: the training split's text only, plus the chat template's markers
  const corpus: string[] = ['[INST] [/INST]', ...BRIEF_INSTRUCTIONS, ...DETAILED_INSTRUCTIONS, 'Caption this figure.'];
  for (const c of world.cases) if (c.split === 'train') corpus.push(c.caption, ...c.mentions);
  for (const f of [instructFile, world.files.vqaTrain]) {
    for (const r of JSON.parse(readFileSync(f, 'utf8')) as { conversations: { value: string }[] }[]) {
      for (const t of r.conversations) corpus.push(t.value.replace('<image>', ''));
    }
  }
  const { pieces } = await timed('tokenizer', async () => trainBpe(corpus, { vocabSize: shape.llm.vocab }));
  log('tokenizer', `trained a ${pieces.length}-piece BPE vocabulary on ${corpus.length} lines`);

  const init = join(o.work, 'init');
  const initPaths = await timed('init', () => generateFixture({ layout: 'llava-med-v1.5', out: init, shape, seed, pieces, selectLayer: -1 }));

  const stageData: Record<DemoStage, { stage: TrainOptions['stage']; data: string }> = {
    pretrain: { stage: 'full', data: world.files.pretrain },
    align: { stage: 'align', data: world.files.alignment },
    instruct: { stage: 'instruct', data: instructFile },
    finetune: { stage: 'finetune', data: vqaGrouped },
  };
  const outputs = {} as Record<DemoStage, string>;
  const finalLoss = {} as Record<DemoStage, number>, firstLoss = {} as Record<DemoStage, number>;
  const settings = {} as Record<DemoStage, StageSettings>;
  let model = initPaths['dir']!;
  let tower: string | undefined = initPaths['tower'];
  for (const s of DEMO_STAGES) {
    const st = { ...DEMO_STAGE_DEFAULTS[s], ...o.stages?.[s] };
    settings[s] = st;
    const output = join(o.work, s);
    const run = train({
      stage: stageData[s].stage, model, data: stageData[s].data, images: worldDir, output, recipe: 'llava-med',
      epochs: st.epochs, learningRate: st.learningRate, batchSize: st.batchSize, microBatchSize: Math.min(8, st.batchSize),
      warmupRatio: 0.03, schedule: 'cosine', seed, saveSteps: 0, overwrite: true, groupByModalityLength: false,
      threads: o.threads, signal: o.signal, visionTower: tower, distributed: 'none',
    });
    const t0 = performance.now();
    for await (const e of run) {
      if (e.type === 'step' && firstLoss[s] === undefined) firstLoss[s] = e.loss;
      emit(s, e);
    }
    const r = await run;
    seconds[s] = (performance.now() - t0) / 1000;
    if (r.stopped) throw Object.assign(new Error(`stopped during ${s}`), { code: 'E_ABORTED' });
    outputs[s] = r.output;
    finalLoss[s] = r.finalLoss;
    model = r.output;
    tower = undefined; // from stage 0 on, the tower lives inside the checkpoint
  }
  writeFileSync(join(o.work, 'build.json'), `${JSON.stringify({ seed, shape, cases: o.cases ?? 2500, imageSize: o.imageSize ?? 224, settings, seconds, firstLoss, finalLoss, outputs }, null, 1)}\n`);
  return { world: worldDir, outputs, seconds, finalLoss, firstLoss };
}


