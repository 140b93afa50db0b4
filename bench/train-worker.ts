/**
 * One side of `npm run bench:train`, in a fresh process (so its peak memory is its own):
 *   node dist/bench/train-worker.js <model dir> <threads> <warmup> <steps> [cpu | cuda] [instruct | lora]
 *     ->  one line of JSON: { stepMs, maxRssKiB, … }
 * The bench-small stage-2 step (bench/train.ts): createTrainer(stage 'instruct': projector + LLM), AdamW, clipping at
 * 1.0, fp32 on the CPU (bf16 compute on CUDA), on 2 sequences of 196 image rows + 188 tokens — what
 * bench/train_torch.py does in PyTorch. 'lora': LLaVA-Rad's recipe instead (new r 64 adapters + projector, lr 1e-4).
 * 'e2e': the same stage through train() from a LLaVA JSON file with 512 × 512 JPEGs on disk (decoded, resized and
 * normalised by the input pipeline while the previous step runs), answers sized so that each sequence has the
 * step-only bench's 188 text tokens: { stepMs (between consecutive steps), tokens }.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import sharp from 'sharp';

import { createTrainer, loadConversations, loadModel, loadModelSpec, loadTokenizer, renderPrompt, sampleExample, train } from '../lib/index.js';
import { nativeBatch } from '../lib/train/trainer.js';

const [dir, threadsArg, warmupArg, stepsArg, deviceArg, stageArg] = process.argv.slice(2);
const threads = Number(threadsArg), warmup = Number(warmupArg), steps = Number(stepsArg);
const device = deviceArg === 'cuda' ? 'cuda' : 'cpu';
if (stageArg === 'e2e') {
  // 2 samples per step (as the step-only bench), each a 512 × 512 JPEG and a ~188-token answer
  const data = join(tmpdir(), `medllava-bench-e2e-${process.env['OMPI_COMM_WORLD_RANK'] ?? 'x'}-${process.ppid}`);
  mkdirSync(join(data, 'images'), { recursive: true });
  let s = 7;
  const rand = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s; };
  const words = ['lung', 'left', 'right', 'opacity', 'nodule', 'mass', 'clear', 'heart', 'small', 'effusion', 'lobe', 'upper'];
  const n = 2 * (warmup + steps);
  const records = [];
  const tokenizer = await loadTokenizer(dir!);
  const template = (await loadModelSpec(dir!)).template;
  for (let i = 0; i < n; i++) {
    const px = Uint8Array.from({ length: 512 * 512 * 3 }, () => rand() >>> 24);
    writeFileSync(join(data, 'images', `${i}.jpg`), await sharp(px, { raw: { width: 512, height: 512, channels: 3 } }).jpeg().toBuffer());
    // as many words as make the sequence's text the step-only bench's 188 tokens (so both do the same work)
    const ws: string[] = [];
    while (tokenizer.encodePrompt(renderPrompt(template, [{ role: 'user', text: 'Describe the image.', image: true },
      { role: 'assistant', text: ws.join(' ') }], { addGenerationPrompt: false })).length < 189) ws.push(words[rand() % words.length]!);
    const answer = ws.join(' ');
    records.push({ id: String(i), image: `images/${i}.jpg`, conversations: [{ from: 'human', value: '<image>\nDescribe the image.' }, { from: 'gpt', value: answer }] });
  }
  writeFileSync(join(data, 'train.json'), JSON.stringify(records));
  // the input pipeline's own cost, alone: every sample prepared as train() prepares it (tokenized, image decoded,
  // resized, normalised), sequentially on this thread
  let prepMs = 0;
  {
    const m = await loadModel(dir!, { device, threads });
    const { samples } = loadConversations(join(data, 'train.json'));
    const t0 = performance.now();
    for (const smp of samples) {
      const ex = sampleExample(m.tokenizer, template, smp, { maxLength: 512, imageRows: 196 });
      if ('problem' in ex) throw new Error(ex.problem);
      await nativeBatch(m, [{ ...ex, images: [smp.imagePath!] }]);
    }
    prepMs = (performance.now() - t0) / samples.length * 2;  // per step of 2 samples
    await m.dispose();
  }
  const times: number[] = [], tokens: number[] = [];
  let last = 0;
  // BENCH_MICRO: samples per micro-batch (2; under mpirun -np 2 with 1, each rank trains one sample of each step)
  const micro = Number(process.env['BENCH_MICRO'] ?? 2);
  const rank = Number(process.env['OMPI_COMM_WORLD_RANK'] ?? 0);
  for await (const e of train({ stage: 'instruct', model: dir!, data: join(data, 'train.json'), output: join(data, 'out'), batchSize: 2,
    microBatchSize: micro, epochs: 1, learningRate: 2e-5, saveSteps: 0, groupByModalityLength: false, device, threads, maxLength: 512 })) {
    if (e.type !== 'step') continue;
    const now = performance.now();
    // the time between consecutive steps: the step and whatever of the input pipeline it waited for
    if (e.step > warmup) times.push(now - last), tokens.push(e.tokens);
    last = now;
  }
  if (rank === 0) console.log(JSON.stringify({ stepMs: times, tokens, prepMs, maxRssKiB: process.resourceUsage().maxRSS, trainable: 0 }));
  process.exit(0);
}
const model = await loadModel(dir!, { device, threads });
const trainer = await createTrainer(model, stageArg === 'lora'
  ? { stage: 'lora', learningRate: 1e-4, maxGradNorm: 1.0 }
  : { stage: 'instruct', learningRate: 2e-5, maxGradNorm: 1.0 });
const V = model.spec.llm.vocab, S = 224;
let s = 1;
const rand = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s; };
const batch = await Promise.all([0, 1].map(async () => {
  const px = Uint8Array.from({ length: S * S * 3 }, () => rand() >>> 24);
  const image = await sharp(px, { raw: { width: S, height: S, channels: 3 } }).png().toBuffer();
  const text = Array.from({ length: 187 }, () => 3 + (rand() % (V - 3)));
  return { inputIds: [1, -200, ...text], labels: [-100, -100, ...text], images: [image] };
}));
for (let i = 0; i < warmup; i++) await trainer.step(batch);
const stepMs: number[] = [];
let loss = 0;
for (let i = 0; i < steps; i++) {
  const t0 = performance.now();
  loss = (await trainer.step(batch)).loss;
  stepMs.push(performance.now() - t0);
}
const trainable = trainer.parameters.filter((p) => p.trainable && !p.tiedTo).reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
console.log(JSON.stringify({ stepMs, maxRssKiB: process.resourceUsage().maxRSS, trainable, loss }));
await trainer.dispose();
await model.dispose();
