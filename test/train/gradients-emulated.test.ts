/**
 * The device path of training under the SIMT emulator: one train_step (native/train/train_step.h) on
 * CudaOps over the emulated device — parameters mirrored by DeviceParams, the activation arena and
 * the gradients in device memory, every backward kernel of native/cuda/ executing — on the three
 * fixture layouts, against float64 torch autograd, and the same step on the CPU (CpuOps) for scale;
 * LLaVA-Rad's LoRA branches with dropout 0.1 (the reference rebuilds the same masks).
 *
 * Tolerances. Every weight the graph reads as f32 takes the CUDA fp32 paths, whose results differ
 * from the CPU's only by summation order: there the gradients are held to the CPU's bound (1e-4
 * relative). LLaVA-Rad's frozen base is bf16: the CUDA matmul runs bf16 weights on tensor cores with
 * the activations rounded to bf16 (8 significant bits: each operand's relative rounding ≤ 2⁻⁹ ≈
 * 2e-3), in the forward and in every dX = dY·W through that base. A dot product of such operands
 * carries a relative error of order 2⁻⁸ ≈ 4e-3 when its terms do not cancel, and the gradients pass
 * through a few of those (measured: 4.0e-3 worst, on a layer-1 LoRA A); the bound is 1e-2 per tensor
 * (2.5× that order), the mean loss 1e-4 (measured 1.4e-5: the loss averages the rounding out).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { generateFixture } from '../../lib/fixtures/generate.js';
import { createTrainer, loadModel, type Model, type TrainerOptions } from '../../lib/index.js';
import { llmLoadArgs } from '../../lib/model/llm.js';
import { modelInternals } from '../../lib/model/model.js';
import { visionLoadArgs } from '../../lib/model/vision.js';
import { nativeBatch } from '../../lib/train/trainer.js';
import { simt } from '../support/addons.js';
import { torchReference } from '../support/torch-train.js';
import { batchFor, testImage } from '../support/train-batch.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-grad-emu-'));

/** A fixture loaded on the CPU, the parameters `options` make trainable, a long batch around test image `seed`
 * (also as the test addon takes it) and the addon's load arguments. The caller disposes `model`. */
async function engineCase(layout: 'llava-med-v1.5' | 'llava-med-v1' | 'llava-rad', dir: string, options: TrainerOptions, seed: number) {
  const f = (await generateFixture({ layout, out: join(root, dir) })) as { dir: string };
  const model = await loadModel(f.dir, { device: 'cpu' });
  const trainer = await createTrainer(model, options);
  const names = trainer.parameters.filter((p) => p.trainable && !p.tiedTo).map((p) => p.name);
  await trainer.dispose();
  const image = await testImage(seed);
  const batch = batchFor(model.spec.llm.vocab, image, { long: true });
  const nb = await nativeBatch(model, batch);
  const spec = modelInternals(model).spec;
  return { model, names, image, batch, nb, l: llmLoadArgs(spec), v: visionLoadArgs(spec) };
}

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i]! - b[i]!) ** 2; den += b[i]! ** 2; }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

const layouts = [
  // lossRows: the fused lm_head + cross-entropy in chunks of 6 labelled rows (gradients.test.ts)
  { layout: 'llava-med-v1.5' as const, stage: 'full' as const, tol: 1e-4, lossTol: 1e-5, lossRows: 6 },
  { layout: 'llava-med-v1' as const, stage: 'instruct' as const, tol: 1e-4, lossTol: 1e-5 },
  { layout: 'llava-rad' as const, trainable: ['*lora_*', '*mm_projector*', 'visual.*', 'vision_tower.*', '*trunk*'], tol: 1e-2, lossTol: 1e-4 },
];

describe.each(layouts)('training on the emulated CUDA device: $layout', ({ layout, stage, trainable, tol, lossTol, lossRows }) => {
  let model: Model;
  beforeAll(async () => {
    const f = (await generateFixture({ layout, out: join(root, layout) })) as { dir: string };
    model = await loadModel(f.dir, { device: 'cpu' });
  }, 300_000);
  afterAll(async () => { await model?.dispose(); });

  it('loss and every gradient match float64 autograd; the CPU step agrees', async () => {
    // the trainable set the public API picks for this stage / these globs
    const trainer = await createTrainer(model, stage ? { stage } : { trainable });
    const names = trainer.parameters.filter((p) => p.trainable && !p.tiedTo).map((p) => p.name);
    await trainer.dispose();
    const image = await testImage(13);
    const batch = batchFor(model.spec.llm.vocab, image, { long: true });
    const nb = await nativeBatch(model, batch);
    const spec = modelInternals(model).spec;
    const l = llmLoadArgs(spec), v = visionLoadArgs(spec);
    // LoRA dropout 0.1 where there are adapters (LLaVA-Rad), step seed 5: the reference drops the same elements
    const table = modelInternals(model).trainingParts().llm.parameters().map((p) => p.name);
    const lora = table.some((n) => n.includes('lora_A'));
    const drop = { ...(lora ? { loraDropout: 0.1, dropoutStep: 5 } : {}), ...(lossRows ? { lossRows } : {}) };
    const emu = simt().trainGradients(l.config, l.tensors, v.config, v.tensors, nb, names, { device: 'emulated', ...drop });
    const cpu = simt().trainGradients(l.config, l.tensors, v.config, v.tensors, nb, names, { device: 'cpu', ...drop });
    const pixels = await modelInternals(model).trainingParts().pixels(image);
    const seeds = Object.fromEntries(table.filter((n) => n.includes('lora_A')).map((n) => [n,
      ((5n * 0x9E3779B97F4A7C15n + BigInt(table.indexOf(n) + 1)) & ((1n << 64n) - 1n)).toString()]));
    const ref = await torchReference(model, batch.map((e, i) => ({
      inputIds: Array.from(e.inputIds), labels: Array.from(e.labels), pixels: i === 0 ? [pixels] : [],
    })), names, lora ? { loraDropout: { p: 0.1, T: Math.max(...nb.seqs.map((q) => q.tokens.length)), seeds } } : {});
    expect(emu.tokens).toBe(ref.tokens);
    const loss = emu.loss / emu.tokens;
    const lossErr = Math.abs(loss - ref.loss) / ref.loss;
    const norm = (a: ArrayLike<number>) => Math.sqrt(Array.from(a).reduce((s, x) => s + x * x, 0));
    const total = Math.sqrt(Object.values(ref.grads).reduce((s, g) => s + norm(g) ** 2, 0));
    let worst = 0, worstName = '', worstCpu = 0;
    expect(Object.keys(emu.grads).sort()).toEqual([...names].sort());
    for (const name of names) {
      const g = emu.grads[name]!, want = ref.grads[name]!;
      worstCpu = Math.max(worstCpu, relErr(g, cpu.grads[name]!) * (norm(cpu.grads[name]!) < 1e-9 * total ? 0 : 1));
      if (norm(want) < 1e-9 * total) {  // a key bias: identically zero (gradients.test.ts)
        expect(norm(g) / total, name).toBeLessThan(1e-5);
        continue;
      }
      const e = relErr(g, want);
      if (e > worst) { worst = e; worstName = name; }
    }
    // the gradients land where the trainer expects them: divided by the target count, as lossAndGradients
    console.log(`${layout} on the emulated device: loss rel ${lossErr.toExponential(2)}, ${names.length} gradients, worst rel vs torch ` +
      `${worst.toExponential(2)} (${worstName}), worst rel vs the CPU step ${worstCpu.toExponential(2)}`);
    expect(lossErr).toBeLessThan(lossTol);
    expect(worst).toBeLessThan(tol);
  }, 600_000);
});

describe('the device training engine (native/cuda/train_device.cuh) under the emulator', () => {
  it.each(layouts)('$layout: three AdamW steps on the device engine track the CPU engine', async ({ layout, stage, trainable, tol }) => {
    const { model, names, image, nb, l, v } = await engineCase(layout, `engine-${layout}`, stage ? { stage } : { trainable }, 17);
    try {
      const o = { steps: 3, lr: 1e-3, loraDropout: 0.1, seed: 4 };
      const cpu = simt().trainerSteps(l.config, l.tensors, v.config, v.tensors, nb, names, { device: 'cpu', ...o });
      const emu = simt().trainerSteps(l.config, l.tensors, v.config, v.tensors, nb, names, { device: 'emulated', ...o });
      const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);
      const lossErr = Math.max(...emu.losses.map((x, i) => rel(x, cpu.losses[i]!)));
      const normErr = Math.max(...emu.norms.map((x, i) => rel(x, cpu.norms[i]!)));
      let worst = 0;
      const sq = (a: ArrayLike<number>) => Array.from(a).reduce((acc, x) => acc + x * x, 0);
      const total = Math.sqrt(names.reduce((acc, n) => acc + sq(cpu.grads[n]!), 0));
      for (const n of names) {
        const want = cpu.grads[n]!;
        let num = 0;
        emu.grads[n]!.forEach((x, i) => { num += (x - want[i]!) ** 2; });
        // key biases: a gradient that is exactly 0 (gradients.test.ts), held to the whole gradient's scale
        worst = Math.max(worst, Math.sqrt(num) / Math.max(Math.sqrt(sq(want)), 1e-5 * total));
      }
      // AdamW ran on the device (master values and moments in device memory); the host tables got them back
      // lazily, as an inference forward would: the final values and second moments equal the CPU engine's
      const relArr = (a: Float32Array, b: Float32Array) => {
        let num = 0, den = 0;
        a.forEach((x, i) => { num += (x - b[i]!) ** 2; den += b[i]! ** 2; });
        return Math.sqrt(num / Math.max(den, 1e-30));
      };
      // over all values at once, less the key biases: AdamW turns their identically-zero gradient's fp32 noise
      // into full steps of either sign (gradients.test.ts)
      const kept = names.filter((n) => sq(cpu.grads[n]!) > 1e-18 * total * total);
      const moved = relArr(Float32Array.from(kept.flatMap((n) => Array.from(emu.values[n]!))),
        Float32Array.from(kept.flatMap((n) => Array.from(cpu.values[n]!))));
      const vErr = Math.max(...kept.map((n) => relArr(emu.v[n]!, cpu.v[n]!)));
      console.log(`${layout}, device engine vs CPU engine over 3 AdamW steps: losses ${emu.losses.map((x) => x.toFixed(5)).join(' ')} ` +
        `(worst rel ${lossErr.toExponential(2)}), grad norms rel ${normErr.toExponential(2)}, first-step gradients rel ${worst.toExponential(2)}, ` +
        `final values rel ${moved.toExponential(2)}, AdamW v rel ${vErr.toExponential(2)}`);
      expect(Object.keys(emu.values).sort()).toEqual([...names].sort());
      expect(moved).toBeLessThan(tol);
      expect(vErr).toBeLessThan(Math.max(tol, 1e-4) * 10);
      expect(emu.losses[2]!).toBeLessThan(emu.losses[0]!);
      expect(worst).toBeLessThan(tol);
      expect(lossErr).toBeLessThan(tol);
      expect(normErr).toBeLessThan(tol);
    } finally {
      await model.dispose();
    }
  }, 600_000);
});

describe('the device engine and the host tables', () => {
  it('a value written through the host table between steps reaches the device engine (as writeParameter does)', async () => {
    const { model, names, nb, l, v } = await engineCase('llava-med-v1', 'engine-write', { stage: 'instruct' }, 19);
    try {
      const o = { steps: 3, lr: 1e-3, hostWrite: { step: 2, name: 'model.norm.weight', value: 0.5 } };
      const cpu = simt().trainerSteps(l.config, l.tensors, v.config, v.tensors, nb, names, { device: 'cpu', ...o });
      const emu = simt().trainerSteps(l.config, l.tensors, v.config, v.tensors, nb, names, { device: 'emulated', ...o });
      const plain = simt().trainerSteps(l.config, l.tensors, v.config, v.tensors, nb, names, { device: 'emulated', steps: 3, lr: 1e-3 });
      // step 3 ran on the written value, differing from a run without the write, and on the first two steps'
      // updates of every other parameter (the write pulled them to the host first, then the engine re-uploaded
      // the whole table): the same loss as the CPU engine, whose updates never leave the table
      expect(Math.abs(emu.losses[2]! - plain.losses[2]!) / plain.losses[2]!).toBeGreaterThan(1e-4);
      expect(Math.abs(emu.losses[2]! - cpu.losses[2]!) / cpu.losses[2]!).toBeLessThan(1e-6);
    } finally {
      await model.dispose();
    }
  }, 600_000);
});

describe('mixed precision on the device engine (bf16 compute copies of the trainable matrices)', () => {
  it('first-step gradients stay within the bf16 bound of torch\'s float64 ones; the loss falls', async () => {
    const { model, names, image, batch, nb, l, v } = await engineCase('llava-med-v1.5', 'engine-bf16', { stage: 'full' }, 23);
    try {
      const o = { device: 'emulated' as const, steps: 3, lr: 1e-3 };
      const bf = simt().trainerSteps(l.config, l.tensors, v.config, v.tensors, nb, names, { ...o, bf16: true });
      const f32 = simt().trainerSteps(l.config, l.tensors, v.config, v.tensors, nb, names, o);
      const pixels = await modelInternals(model).trainingParts().pixels(image);
      const ref = await torchReference(model, batch.map((e, i) => ({
        inputIds: Array.from(e.inputIds), labels: Array.from(e.labels), pixels: i === 0 ? [pixels] : [],
      })), names);
      const sq = (a: ArrayLike<number>) => Array.from(a).reduce((acc, x) => acc + x * x, 0);
      const total = Math.sqrt(Object.values(ref.grads).reduce((acc, g) => acc + sq(g), 0));
      // the engine's gradients are the mean's (divided by the target count), as lossAndGradients'
      let worst = 0, worstName = '', worstF32 = 0;
      for (const n of names) {
        const want = ref.grads[n]!;
        if (Math.sqrt(sq(want)) < 1e-9 * total) continue;  // a key bias: identically zero (gradients.test.ts)
        const rel = (g: Float32Array) => Math.sqrt(g.reduce((acc, x, i) => acc + (x - want[i]!) ** 2, 0) / sq(want));
        const e = rel(bf.grads[n]!);
        if (e > worst) { worst = e; worstName = n; }
        worstF32 = Math.max(worstF32, rel(f32.grads[n]!));
      }
      const lossErr = Math.abs(bf.losses[0]! - ref.loss) / ref.loss;
      console.log(`bf16 compute, llava-med-v1.5 full: loss ${bf.losses.map((x) => x.toFixed(5)).join(' ')} (step 1 rel vs torch ` +
        `${lossErr.toExponential(2)}), worst gradient rel vs torch ${worst.toExponential(2)} (${worstName}); f32 compute ${worstF32.toExponential(2)}`);
      // bf16 keeps 8 significant bits (unit roundoff 2⁻⁹ ≈ 2e-3) of each weight and GEMM input; a gradient goes
      // through ~10 such roundings on its way down from the loss, which bounds it near 2e-2
      expect(worst).toBeLessThan(2e-2);
      expect(lossErr).toBeLessThan(1e-2);
      // and the copies are what the GEMMs read: far from the f32 engine's agreement with torch
      expect(worst).toBeGreaterThan(10 * worstF32);
      expect(bf.losses[2]!).toBeLessThan(bf.losses[0]!);
    } finally {
      await model.dispose();
    }
  }, 600_000);
});

describe('the device engine borrows the inference runners\' frozen weights', () => {
  it('LoRA over the bf16 base (LLaVA-Rad): the same losses, without a second copy of the frozen weights', async () => {
    const { model, names, nb, l, v } = await engineCase('llava-rad', 'engine-share', { trainable: ['*lora_*', '*mm_projector*'] }, 29);
    try {
      const o = { device: 'emulated' as const, steps: 2, lr: 1e-3 };
      const own = simt().trainerSteps(l.config, l.tensors, v.config, v.tensors, nb, names, o);
      const shared = simt().trainerSteps(l.config, l.tensors, v.config, v.tensors, nb, names, { ...o, shareRunner: true });
      console.log(`device engine parameter memory: ${(own.paramBytes / 1024).toFixed(0)} KiB alone, ` +
        `${(shared.paramBytes / 1024).toFixed(0)} KiB beside the inference runners (frozen weights borrowed)`);
      expect(shared.losses).toEqual(own.losses);
      // what is left is the trainable f32 master copies: LoRA pairs and the projector
      const trainableBytes = names.reduce((n, name) => n + own.values[name]!.length * 4, 0);
      expect(shared.paramBytes).toBe(trainableBytes);
      expect(own.paramBytes).toBeGreaterThan(2 * trainableBytes);
    } finally {
      await model.dispose();
    }
  }, 600_000);
});

describe('cancelling a running step (Trainer::cancel: E_ABORTED at the next layer)', () => {
  it.each(['cpu', 'emulated'] as const)('%s: a step stopped mid-forward or mid-backward leaves the weights as they were', async (device) => {
    const { model, names, nb, l, v } = await engineCase('llava-med-v1.5', `cancel-${device}`, { stage: 'full' }, 31);
    try {
      const o = { device, steps: 2, lr: 1e-3 };
      const plain = simt().trainerSteps(l.config, l.tensors, v.config, v.tensors, nb, names, o);
      // checks run before each tower block and LLM layer, each loss-head chunk, then backward's layers and blocks:
      // check 1 is in the tower's forward, check 6 in the LLM's backward (gradients already accumulating)
      for (const check of [1, 6]) {
        const cut = simt().trainerSteps(l.config, l.tensors, v.config, v.tensors, nb, names, { ...o, abortAt: { step: 1, check } });
        expect(cut.losses, `check ${check}`).toEqual(plain.losses);
      }
    } finally {
      await model.dispose();
    }
  }, 600_000);
});

describe('resuming a training engine (restore_param_state, as trainer.load does)', () => {
  it.each(['cpu', 'emulated'] as const)('%s: an engine dropped after step 1 and a new one given the saved values, moments and dropout stream '
    + 'continue with exactly the losses and final values of an uninterrupted run (LLaVA-Rad LoRA + projector with dropout; bf16 compute on the device)', async (device) => {
    const { model, names, nb, l, v } = await engineCase('llava-rad', `resume-${device}`, { trainable: ['*lora_*', '*mm_projector*'] }, 37);
    try {
      const o = { device, steps: 3, lr: 2e-3, loraDropout: 0.3, seed: 5, ...(device === 'emulated' ? { bf16: true } : {}) };
      const plain = simt().trainerSteps(l.config, l.tensors, v.config, v.tensors, nb, names, o);
      const resumed = simt().trainerSteps(l.config, l.tensors, v.config, v.tensors, nb, names, { ...o, resumeAt: 1 });
      expect(resumed.losses).toEqual(plain.losses);
      for (const n of names) {
        expect(resumed.values[n], n).toEqual(plain.values[n]);
        expect(resumed.v[n], n).toEqual(plain.v[n]);
      }
      // each restored piece matters (on the CPU engine, the emulator being slow): leave one out and the later
      // losses differ
      if (device === 'cpu') {
        for (const skip of ['value', 'm', 'v', 'dropout'] as const) {
          const cut = simt().trainerSteps(l.config, l.tensors, v.config, v.tensors, nb, names, { ...o, resumeAt: 1, resumeSkip: skip });
          expect(cut.losses.slice(1), skip).not.toEqual(plain.losses.slice(1));
        }
      }
    } finally {
      await model.dispose();
    }
  }, 600_000);
});

describe('data parallel on the device engine (allreduce_grads: NCCL on a GPU, a stand-in reducer here)', () => {
  it('every device gradient buffer goes through the reducer on the engine\'s stream: ×2 doubles the global norm exactly and '
    + 'the steps match the CPU engine\'s with the same reducer', async () => {
    const { model, names, nb, l, v } = await engineCase('llava-med-v1.5', 'reduce', { trainable: ['*mm_projector*', 'model.layers.1.*'] }, 41);
    try {
      const o = { steps: 2, lr: 1e-3 };
      const one = simt().trainerSteps(l.config, l.tensors, v.config, v.tensors, nb, names, { device: 'emulated', ...o });
      const two = simt().trainerSteps(l.config, l.tensors, v.config, v.tensors, nb, names, { device: 'emulated', ...o, reduceTimes: 2 });
      const cpu = simt().trainerSteps(l.config, l.tensors, v.config, v.tensors, nb, names, { device: 'cpu', ...o, reduceTimes: 2 });
      expect(two.losses[0]).toBe(one.losses[0]);  // the same forward; only the reduced gradients differ
      expect(Math.abs(two.norms[0]! / one.norms[0]! - 2)).toBeLessThan(1e-6);
      expect(two.losses[1]).not.toBe(one.losses[1]);
      for (let s = 0; s < 2; s++) {
        // against the CPU engine with the same reducer: the frozen tower and layer 0 are read in their stored half type
        // by the device GEMMs, so the engines differ by ~2e-5 in the loss and ~1e-4 in the norm (as without a reducer)
        expect(Math.abs(two.losses[s]! - cpu.losses[s]!) / cpu.losses[s]!, `loss ${s}`).toBeLessThan(1e-4);
        expect(Math.abs(two.norms[s]! - cpu.norms[s]!) / cpu.norms[s]!, `norm ${s}`).toBeLessThan(1e-3);
      }
    } finally {
      await model.dispose();
    }
  }, 600_000);
});

describe('the to_bf16 kernel (mixed-precision compute copies)', () => {
  it('rounds to nearest, ties to even, on random values with ragged length, ties, extremes, ±0, ±inf and NaN, as ggml\'s BF16 conversion', async () => {
    const { native } = await import('../../lib/native.js');
    const n = 1000 + 37;
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = (Math.sin(i * 12.9898) * 43758.5453 % 1) * 10 ** ((i % 13) - 6);
    const bits = new Uint32Array(x.buffer);
    bits[0] = 0x3f808000;  // a tie, even below: rounds down
    bits[1] = 0x3f818000;  // a tie, odd below: rounds up
    bits[2] = 0x7f7fffff;  // the largest float: rounds to inf
    x[3] = -0, x[4] = Infinity, x[5] = -Infinity, x[6] = 1e-40;  // a subnormal
    const got = simt().emulatedToBf16(x);
    const want = new Uint16Array(native().ggmlQuantize('BF16', x).buffer);
    expect(Array.from(got)).toEqual(Array.from(want));
    x[7] = NaN;
    expect((simt().emulatedToBf16(x)[7]! & 0x7fff) > 0x7f80).toBe(true);  // still a NaN
  });
});
