/**
 * One side of `npm run bench:train`, in a fresh process (so its peak memory is its own):
 *   node dist/bench/train-worker.js <model dir> <threads> <warmup> <steps> [cpu | cuda] [instruct | lora]
 *     ->  one line of JSON: { stepMs, maxRssKiB, … }
 * The bench-small stage-2 step (bench/train.ts): createTrainer(stage 'instruct': projector + LLM), AdamW, clipping at
 * 1.0, fp32 on the CPU (bf16 compute on CUDA), on 2 sequences of 196 image rows + 188 tokens — what
 * bench/train_torch.py does in PyTorch. 'lora': LLaVA-Rad's recipe instead (new r 64 adapters + projector, lr 1e-4).
 */
import sharp from 'sharp';

import { createTrainer, loadModel } from '../lib/index.js';

const [dir, threadsArg, warmupArg, stepsArg, deviceArg, stageArg] = process.argv.slice(2);
const threads = Number(threadsArg), warmup = Number(warmupArg), steps = Number(stepsArg);
const device = deviceArg === 'cuda' ? 'cuda' : 'cpu';
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
