/**
 * The CUDA backend on a real GPU against the CPU engine: the host code the SIMT emulator cannot
 * exercise (cudaMalloc, async copies, per-chat streams, free-memory sizing) judged by the same
 * numbers. Runs whenever getBackendInfo().cuda.available; MEDLLAVA_EXPECT_GPU=1 (npm run test:gpu)
 * makes a missing GPU a failure instead of a skip. Without a GPU the suite is skipped — and the
 * summary line counts it.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';

import { FIXTURE_SHAPES, generateFixture } from '../../lib/fixtures/generate.js';
import { getBackendInfo, loadModel, type Model } from '../../lib/index.js';
import { native } from '../../lib/native.js';
import { logSoftmax } from '../support/reference.js';

const cuda = getBackendInfo().cuda;
const expectGpu = process.env.MEDLLAVA_EXPECT_GPU === '1';

describe('a GPU is required when MEDLLAVA_EXPECT_GPU=1', () => {
  it.runIf(expectGpu)('CUDA is available, with a device', () => {
    expect(cuda.available, `CUDA is not available: ${cuda.reason}`).toBe(true);
    expect(cuda.devices.length).toBeGreaterThan(0);
  });
});

const maxAbs64 = (a: Float64Array, b: Float64Array) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};
const maxAbs = (a: Float32Array, b: Float32Array) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

describe.runIf(cuda.available)("device 'cuda' on this GPU matches the CPU", () => {
  const root = mkdtempSync(join(tmpdir(), 'medllava-gpu-'));
  let cpu: Model;
  let gpu: Model;
  let png: Buffer;
  const models: Record<string, { cpu: Model; gpu: Model }> = {};

  beforeAll(async () => {
    const hf = (await generateFixture({ layout: 'llava-med-v1.5', out: join(root, 'hf') })) as { dir: string; tower: string };
    cpu = await loadModel(hf.dir, { visionTower: hf.tower, device: 'cpu' });
    gpu = await loadModel(hf.dir, { visionTower: hf.tower, device: 'cuda' });
    for (const type of ['F32', 'Q8_0', 'Q4_0'] as const) {
      const g = (await generateFixture({ layout: 'gguf', out: join(root, type), ggufType: type })) as { llm: string };
      models[type] = { cpu: await loadModel(g.llm, { device: 'cpu' }), gpu: await loadModel(g.llm, { device: 'cuda' }) };
    }
    png = await sharp({ create: { width: 30, height: 24, channels: 3, background: { r: 200, g: 40, b: 90 } } }).png().toBuffer();
  }, 300_000);

  it('the model reports the device it runs on', () => {
    expect(gpu.device).toBe('cuda');
    expect(cpu.device).toBe('cpu');
  });

  // f32 weights: the GPU's tensor-core / fp32 paths round differently from the CPU's; the bound is
  // the log-probability spread the emulated kernels show against the CPU (1e-3) with margin for
  // the GPU's fused multiply-adds and fast math (__expf) that the emulator computes exactly
  for (const type of ['F32', 'Q8_0', 'Q4_0'] as const) {
    it(`${type}: prompt logits (every position) and 24 greedy tokens`, async () => {
      const { cpu: c, gpu: g } = models[type]!;
      const tokens = Array.from({ length: 37 }, (_, i) => 1 + ((i * 131) % 590));
      const a = await c.forward({ tokens }, { allLogits: true });
      const b = await g.forward({ tokens }, { allLogits: true });
      const V = c.spec.llm.vocab;
      let worst = 0;
      for (let t = 0; t < tokens.length; t++) worst = Math.max(worst, maxAbs64(logSoftmax(a.subarray(t * V, (t + 1) * V)), logSoftmax(b.subarray(t * V, (t + 1) * V))));
      console.log(`${type}: max |Δ log p| GPU vs CPU over ${tokens.length} positions = ${worst.toExponential(2)}`);
      expect(worst).toBeLessThan(type === 'F32' ? 5e-3 : 3e-2);
      const greedy = async (m: Model) => (await m.createChat().send({ text: 'Describe the findings.' }, { maxTokens: 24 })).tokens;
      const expected = await greedy(c);
      expect(new Set(expected).size, 'a greedy sequence that is not one repeated token').toBeGreaterThan(1);
      expect(await greedy(g)).toEqual(expected);
    }, 120_000);
  }

  it('LLaVA with an image: the tower + projector + LLM on the GPU answer as on the CPU', async () => {
    const fc = await cpu.encodeImage(png);
    const fg = await gpu.encodeImage(png);
    let scale = 0;
    for (const v of fc) scale = Math.max(scale, Math.abs(v));
    expect(maxAbs(fc, fg) / scale).toBeLessThan(1e-2); // the tower's f16/bf16 operands on tensor cores
    const ask = async (m: Model) => (await m.createChat().send({ text: 'What is shown?', image: png }, { maxTokens: 16 })).tokens;
    expect(await ask(gpu)).toEqual(await ask(cpu));
  }, 120_000);

  it('two chats interleaved turn by turn, each on its own stream and cache, answer as one chat each on the CPU', async () => {
    const { cpu: c, gpu: g } = models.F32!;
    const script = async (m: Model) => {
      const a = m.createChat();
      const b = m.createChat();
      const out: number[][] = [];
      // both chats' turns in flight at once on the GPU
      for (const [qa, qb] of [['Hello there.', 'A different question.'], ['And then?', 'Go on.']] as const) {
        const [ra, rb] = await Promise.all([a.send({ text: qa }, { maxTokens: 10 }), b.send({ text: qb }, { maxTokens: 10 })]);
        out.push(ra.tokens, rb.tokens);
      }
      a.dispose();
      b.dispose();
      return out;
    };
    expect(await script(g)).toEqual(await script(c));
  }, 120_000);

  it('NativeLinear on the device matches the CPU', async () => {
    const K = 256;
    const N = 192;
    const M = 33;
    const w = Float32Array.from({ length: N * K }, (_, i) => Math.sin(i * 0.37));
    const x = Float32Array.from({ length: M * K }, (_, i) => Math.cos(i * 0.11));
    const lin = new (native().NativeLinear)(w, 'f32', N, K, null);
    const a = await lin.forward(x, M, { device: 'cpu' });
    const b = await lin.forward(x, M, { device: 'cuda' });
    expect(maxAbs(a, b)).toBeLessThan(1e-3 * Math.sqrt(K));
    lin.dispose();
  });

  it('E_OOM, before allocating, when chats do not fit in free device memory — saying how much they need', async () => {
    // 2 layers × 2^24 positions × 512 K/V wide × f16 × 2 = 64 GiB per chat: some chat soon does not fit
    const shape = { ...FIXTURE_SHAPES.tiny!, llm: { ...FIXTURE_SHAPES.tiny!.llm, hidden: 512, heads: 8, kvHeads: 8, ffn: 1024, context: 1 << 24 } };
    const g = (await generateFixture({ layout: 'gguf', out: join(root, 'oom'), ggufType: 'F16', shape })) as { llm: string };
    const m = await loadModel(g.llm, { device: 'cuda' });
    const chats = [];
    let error: { code?: string; message: string } | undefined;
    for (let i = 0; i < 8 && !error; i++) {
      const chat = m.createChat();
      chats.push(chat);
      try {
        await chat.send({ text: 'hi' }, { maxTokens: 1 });
      } catch (e) {
        error = e as { code?: string; message: string };
      }
    }
    expect(error?.code, error?.message).toBe('E_OOM');
    expect(error!.message).toMatch(/MiB/);
    for (const c of chats) c.dispose();
    // after the chats are gone, one fits again
    const again = m.createChat();
    await again.send({ text: 'hi' }, { maxTokens: 1 });
    again.dispose();
    await m.dispose();
  }, 300_000);
});

describe.runIf(cuda.available)("training on device 'cuda' (native/cuda/train_device.cuh) tracks the CPU", () => {
  it('three AdamW steps, stage full: losses, gradient norms and gradients', async () => {
    const root = mkdtempSync(join(tmpdir(), 'medllava-gpu-train-'));
    const hf = (await generateFixture({ layout: 'llava-med-v1.5', out: join(root, 'hf') })) as { dir: string };
    const { createTrainer } = await import('../../lib/index.js');
    const { batchFor, testImage } = await import('../support/train-batch.js');
    const image = await testImage(2);
    const run = async (device: 'cpu' | 'cuda', computeType: 'f32' | 'bf16' = 'f32') => {
      const model = await loadModel(hf.dir, { device });
      const trainer = await createTrainer(model, { stage: 'full', learningRate: 1e-3, computeType });
      const batch = batchFor(model.spec.llm.vocab, image, { long: true });
      const first = await trainer.lossAndGradients(batch);
      const steps = [];
      for (let i = 0; i < 3; i++) steps.push(await trainer.step(batch));
      await trainer.dispose();
      await model.dispose();
      return { first, steps };
    };
    const cpu = await run('cpu'), gpu = await run('cuda'), mixed = await run('cuda', 'bf16');
    const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);
    console.log(`GPU training: losses ${gpu.steps.map((s) => s.loss.toFixed(5)).join(' ')} vs CPU ${cpu.steps.map((s) => s.loss.toFixed(5)).join(' ')}`);
    // bf16 LLM weights are trainable (f32 on both sides): fp32 on both, summation order only
    for (let i = 0; i < 3; i++) {
      expect(rel(gpu.steps[i]!.loss, cpu.steps[i]!.loss)).toBeLessThan(1e-4);
      expect(rel(gpu.steps[i]!.gradNorm, cpu.steps[i]!.gradNorm)).toBeLessThan(1e-3);
    }
    for (const [name, g] of cpu.first.gradients) {
      const h = gpu.first.gradients.get(name)!;
      let num = 0, den = 0;
      g.forEach((x, i) => { num += (x - h[i]!) ** 2; den += x * x; });
      expect(Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-6), name).toBeLessThan(1e-3);
    }
    // mixed precision (the device default): the bf16 bound of gradients-emulated.test.ts, and the loss falls
    console.log(`GPU training, bf16 compute: losses ${mixed.steps.map((s) => s.loss.toFixed(5)).join(' ')}`);
    expect(rel(mixed.steps[0]!.loss, cpu.steps[0]!.loss)).toBeLessThan(1e-2);
    expect(mixed.steps[2]!.loss).toBeLessThan(mixed.steps[0]!.loss);
  }, 600_000);
});

// Data parallel on GPUs: 2 MPI ranks, each on its own GPU, gradients summed by NCCL, against one process on one GPU
// with the same global batch (the NCCL path is compiled everywhere and runs only here). Needs 2 GPUs, mpirun and
// libnccl.so.2; otherwise skipped, saying which is missing.
describe.runIf(cuda.available)('NCCL data parallel (2 GPUs)', () => {
  const missing = cuda.devices.length < 2 ? `${cuda.devices.length} GPU(s)`
    : spawnSync('mpirun', ['--version']).status !== 0 ? 'no mpirun'
      : spawnSync('sh', ['-c', 'ldconfig -p | grep -q libnccl.so.2']).status !== 0 ? 'no libnccl.so.2' : '';
  it.skipIf(missing !== '')(`2 ranks × 1 GPU = 1 process × 1 GPU${missing ? ` (skipped: ${missing})` : ''}`, async () => {
    const { tinyDataset } = await import('../support/train-data.js');
    const { packageRoot } = await import('../../lib/native.js');
    const root = mkdtempSync(join(tmpdir(), 'medllava-nccl-'));
    const dir = ((await generateFixture({ layout: 'llava-med-v1.5', out: join(root, 'v15') })) as { dir: string }).dir;
    const data = await tinyDataset(join(root, 'data'), 12);
    const driver = join(packageRoot(), 'test', 'support', 'mpi-train.mjs');
    const o = { stage: 'instruct', model: dir, data: data.conversations, images: data.images, batchSize: 4, microBatchSize: 2, epochs: 1,
      learningRate: 2e-3, saveSteps: 0, device: 'cuda', computeType: 'f32' };
    const env = { ...process.env, OMPI_MCA_btl_vader_single_copy_mechanism: 'none' };
    const two = spawnSync('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', '2', process.execPath, driver,
      JSON.stringify({ ...o, output: join(root, 'two') })], { encoding: 'utf8', env, timeout: 300_000 });
    expect(two.status, two.stderr).toBe(0);
    const one = spawnSync(process.execPath, [driver, JSON.stringify({ ...o, output: join(root, 'one') })], { encoding: 'utf8', timeout: 300_000 });
    expect(one.status, one.stderr).toBe(0);
    const losses = (out: string) => out.split('\n').filter((l) => l.includes('"type":"step"')).map((l) => (JSON.parse(l) as { loss: number }).loss);
    const a = losses(one.stdout), b = losses(two.stdout);
    expect(b.length).toBe(a.length);
    for (let i = 0; i < a.length; i++) expect(Math.abs(a[i]! - b[i]!) / a[i]!, `step ${i + 1}`).toBeLessThan(1e-4);
  }, 600_000);
});
