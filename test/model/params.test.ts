/**
 * The parameter tables (native/model/params.h): every tensor a model reads is listed once under the
 * checkpoint's own name (HF / PEFT) with its PyTorch shape and stored type; parameters marked
 * trainable move into the flat fp32 buffer, and a value written through the table is what the next
 * forward reads — on the CPU and on the (emulated) CUDA device.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { generateFixture } from '../../lib/fixtures/generate.js';
import { loadModel, loadModelSpec, type ModelSpec } from '../../lib/index.js';
import { loadLlm } from '../../lib/model/llm.js';
import { loadVision, visionLoadArgs } from '../../lib/model/vision.js';
import { native } from '../../lib/native.js';
import { simt } from '../support/addons.js';
import { randomNormal } from '../support/reference.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-params-'));
let med: ModelSpec;
let medDir: string;
let rad: ModelSpec;

beforeAll(async () => {
  const hf = (await generateFixture({ layout: 'llava-med-v1.5', out: join(root, 'hf') })) as { dir: string };
  med = await loadModelSpec(hf.dir);
  medDir = hf.dir;
  const r = (await generateFixture({ layout: 'llava-rad', out: join(root, 'rad') })) as { dir: string };
  rad = await loadModelSpec(r.dir);
}, 120_000);

const PROJECTOR = ['model.mm_projector.0.weight', 'model.mm_projector.0.bias', 'model.mm_projector.2.weight', 'model.mm_projector.2.bias'];
const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

describe('parameter tables', () => {
  it('the LLM lists exactly the checkpoint\'s LLM tensors, under their own names, shapes and types', async () => {
    const llm = await loadLlm(med);
    const params = llm.parameters();
    const names = params.map((p) => p.name);
    expect(new Set(names).size).toBe(names.length);
    // every language-model tensor of the HF checkpoint, and nothing else
    const inFiles = Object.keys(med.files.weights).filter((n) => n.startsWith('model.layers.') || n === 'model.embed_tokens.weight' ||
      n === 'model.norm.weight' || n === 'lm_head.weight');
    expect([...names].sort()).toEqual([...inFiles].sort());
    const q = params.find((p) => p.name === 'model.layers.0.self_attn.q_proj.weight')!;
    expect(q).toMatchObject({ shape: [med.llm.hidden, med.llm.hidden], trainable: false, tiedTo: null });
    const header = await native().readSafetensorsHeader(med.files.weights[q.name]!);
    expect(q.dtype).toBe(header.tensors.find((t) => t.name === q.name)!.dtype.toLowerCase());
    llm.dispose();
  });

  it('LLaVA-Rad: the adapter\'s LoRA pairs are parameters under PEFT\'s names', async () => {
    const llm = await loadLlm(rad);
    const names = llm.parameters().map((p) => p.name);
    const lora = names.filter((n) => n.includes('.lora_'));
    const file = rad.lora!.file;
    const stored = file.endsWith('.safetensors') ? (await native().readSafetensorsHeader(file)).tensors
      : (await native().readTorchCheckpoint(file)).tensors;
    const inAdapter = stored.map((t) => t.name).filter((n) => n.includes('.lora_'));
    expect(lora.length).toBe(2 * rad.llm.layers * rad.lora!.targetModules.length);
    expect([...lora].sort()).toEqual([...inAdapter].sort());
    llm.dispose();
  });

  it('a trainable parameter reads like the stored one; written values reach the next forward; frozen again, the file\'s values return', async () => {
    const llm = await loadLlm(med);
    const ctx = () => llm.createContext();
    const tokens = Int32Array.from([1, 5, 9, 13]);
    const before = await ctx().eval(tokens);
    await expect(llm.writeParameter('model.norm.weight', new Float32Array(4))).rejects.toMatchObject({ code: 'E_ARGUMENT' });
    expect(() => llm.setTrainable(['no.such.weight'])).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
    const stored = await llm.readParameter('model.norm.weight');
    expect(await llm.setTrainable(['model.norm.weight'])).toBe(med.llm.hidden);
    expect(llm.parameters().find((p) => p.name === 'model.norm.weight')!.trainable).toBe(true);
    expect(await llm.readParameter('model.norm.weight')).toEqual(stored);
    expect(await ctx().eval(tokens)).toEqual(before);
    // the final norm's weight at zero: every logit is exactly 0 (no lm_head bias)
    await llm.writeParameter('model.norm.weight', new Float32Array(med.llm.hidden));
    const zeroed = await ctx().eval(tokens);
    expect(zeroed.every((v) => v === 0)).toBe(true);
    expect(() => llm.writeParameter('model.norm.weight', new Float32Array(2), med.llm.hidden - 1)).toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
    await llm.setTrainable(['model.norm.weight'], false);
    expect(await llm.readParameter('model.norm.weight')).toEqual(stored);
    expect(await ctx().eval(tokens)).toEqual(before);
    llm.dispose();
  });

  it('the projector marked trainable: one value changed through the table, the next encode sees it (CPU and emulated CUDA)', async () => {
    const vision = await loadVision(med);
    const params = vision.parameters();
    for (const name of PROJECTOR) expect(params.map((p) => p.name)).toContain(name);
    const S = med.vision.imageSize;
    const px = randomNormal(3 * S * S, 7);
    const frozen = await vision.encode(px);
    const count = await vision.setTrainable(PROJECTOR);
    expect(count).toBe(PROJECTOR.reduce((a, n) => a + numel(params.find((p) => p.name === n)!.shape), 0));
    const trainable = await vision.encode(px);
    // the fp32 copy holds the bf16 values exactly; only the kernel (f32 instead of bf16 weights) differs
    let worst = 0;
    for (let i = 0; i < frozen.length; i++) worst = Math.max(worst, Math.abs(trainable[i]! - frozen[i]!) / (Math.abs(frozen[i]!) + 1));
    expect(worst).toBeLessThan(1e-5);
    // + 0.5 on one output bias: that column moves by 0.5, nothing else moves
    const D = med.projector.outDim;
    const j = 3;
    const bias = await vision.readParameter('model.mm_projector.2.bias');
    await vision.writeParameter('model.mm_projector.2.bias', Float32Array.of(bias[j]! + 0.5), j);
    const edited = await vision.encode(px);
    for (let r = 0; r < edited.length / D; r++) {
      for (let c = 0; c < D; c++) {
        const i = r * D + c;
        if (c === j) expect(Math.abs(edited[i]! - trainable[i]! - 0.5)).toBeLessThan(1e-5);
        else expect(edited[i]).toBe(trainable[i]);
      }
    }
    vision.dispose();

    // the same edit on the emulated device: it re-reads the table when the table changes
    const { config, tensors } = visionLoadArgs(med);
    const dev = simt().emulatedVisionEdited(config, tensors, px, [{ name: 'model.mm_projector.2.bias', offset: j, values: Float32Array.of(bias[j]! + 0.5) }]);
    for (let r = 0; r < dev.after.length / D; r++) {
      for (let c = 0; c < D; c++) {
        const i = r * D + c;
        if (c === j) expect(Math.abs(dev.after[i]! - dev.before[i]! - 0.5)).toBeLessThan(1e-5);
        else expect(Math.abs(dev.after[i]! - dev.before[i]!)).toBeLessThan(1e-5 * (Math.abs(dev.before[i]!) + 1));
      }
    }
    expect(dev.binds, 'each encode made the device current').toBeGreaterThanOrEqual(2);
  }, 120_000);

  it('Model.parameters(): the LLM\'s and the tower + projector\'s, each once; a bad cudaDevice is E_ARGUMENT', async () => {
    const model = await loadModel(medDir, { device: 'cpu', prefetch: false });
    const params = model.parameters();
    const llm = params.filter((p) => p.component === 'llm'), vision = params.filter((p) => p.component === 'vision');
    expect(llm.map((p) => p.name)).toContain('model.layers.0.mlp.down_proj.weight');
    expect(vision.map((p) => p.name)).toEqual(expect.arrayContaining(PROJECTOR));
    expect(vision.some((p) => p.name.includes('vision_model.encoder.layers.0.self_attn.q_proj.weight'))).toBe(true);
    expect(new Set(params.map((p) => p.name)).size).toBe(params.length);
    await model.dispose();
    await expect(loadModel(medDir, { device: 'cpu', cudaDevice: -1 })).rejects.toMatchObject({ code: 'E_ARGUMENT' });
    await expect(loadModel(medDir, { device: 'cpu', cudaDevice: 0.5 })).rejects.toMatchObject({ code: 'E_ARGUMENT' });
  });
});
