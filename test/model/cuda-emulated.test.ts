/**
 * The whole LLM on the CUDA backend's kernels (native/cuda/llm_device.cuh: weights uploaded in their
 * stored type, activations in a planned arena, f16 KV cache on the device, flash prefill and
 * split-KV decode attention, argmax on the device) executed under the SIMT emulator, against the
 * CPU engine on the same files: the same prompt logits and the same greedy tokens.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { generateFixture } from '../../lib/fixtures/generate.js';
import { loadModelSpec, type ModelSpec } from '../../lib/index.js';
import { llmLoadArgs, loadLlm } from '../../lib/model/llm.js';
import { loadVision, visionLoadArgs } from '../../lib/model/vision.js';
import { simt } from '../support/addons.js';
import { randomNormal, relativeError } from '../support/reference.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-cuda-emu-'));
const specs: Record<string, ModelSpec> = {};

beforeAll(async () => {
  for (const type of ['F32', 'Q8_0']) {
    const f = (await generateFixture({ layout: 'gguf', out: join(root, type), ggufType: type })) as { llm: string };
    specs[type] = await loadModelSpec(f.llm);
  }
  const rad = (await generateFixture({ layout: 'llava-rad', out: join(root, 'rad') })) as { dir: string };
  specs['llava-rad (bf16 + LoRA)'] = await loadModelSpec(rad.dir);
  const hf = (await generateFixture({ layout: 'llava-med-v1.5', out: join(root, 'hf') })) as { dir: string };
  specs['llava-med-v1.5 (HF CLIP)'] = await loadModelSpec(hf.dir);
}, 120_000);

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

async function cpuGreedy(spec: ModelSpec, prompt: Int32Array, steps: number, embeddings?: Float32Array) {
  const llm = await loadLlm(spec, { contextLength: 256 });
  const ctx = llm.createContext();
  const logits = await ctx.eval(prompt, embeddings ? { embeddings } : {});
  const tokens: number[] = [];
  let next = argmax(logits);
  for (let i = 0; i < steps; i++) {
    tokens.push(next);
    if (i + 1 < steps) next = argmax(await ctx.eval(Int32Array.of(next)));
  }
  ctx.dispose();
  llm.dispose();
  return { logits, tokens };
}

describe('the LLM on the emulated CUDA backend vs the CPU engine', () => {
  const cases = [['F32', 1], ['Q8_0', 256], ['llava-rad (bf16 + LoRA)', 5]] as const;
  for (const [name, maxBatch] of cases) {
    it(`${name}: prompt logits and 12 greedy tokens${maxBatch < 20 ? `, prompt in chunks of ${maxBatch}` : ''}`, async () => {
      const spec = specs[name]!;
      const prompt = Int32Array.from({ length: 19 }, (_, i) => 1 + ((i * 37 + 11) % (spec.llm.vocab - 1)));
      const steps = 12;
      const cpu = await cpuGreedy(spec, prompt, steps);
      const { config, tensors } = llmLoadArgs(spec, { contextLength: 256 });
      const dev = simt().emulatedGreedy(config, tensors, prompt, steps, { maxBatch });
      const err = relativeError(dev.logits, cpu.logits);
      console.log(`${name}: emulated CUDA vs CPU prompt logits relative error ${err.toExponential(2)}; ` +
        `greedy ${Array.from(dev.tokens).join(' ')}; device memory ${(dev.deviceBytes / 1024).toFixed(0)} KiB`);
      // the CPU quantizes decode activations to Q8_0 for Q8_0/Q4_0 weights (llama.cpp's q8 path), the device does
      // not; for bf16 weights the device's tensor cores round the activations to bf16 (2^-8), the CPU does not
      expect(err).toBeLessThan(name === 'F32' ? 1e-4 : 2e-2);
      expect(Array.from(dev.tokens)).toEqual(cpu.tokens);
    }, 300_000);
  }

  it('image rows (tokens < 0) take the given embeddings, as on the CPU', async () => {
    const spec = specs['F32']!;
    const prompt = Int32Array.from([1, 50, -200, -200, -200, 60, 70]);
    const embeddings = randomNormal(prompt.length * spec.llm.hidden, 99);
    const cpu = await cpuGreedy(spec, prompt, 4, embeddings);
    const { config, tensors } = llmLoadArgs(spec, { contextLength: 256 });
    const dev = simt().emulatedGreedy(config, tensors, prompt, 4, { embeddings });
    expect(relativeError(dev.logits, cpu.logits)).toBeLessThan(1e-4);
    expect(Array.from(dev.tokens)).toEqual(cpu.tokens);
  }, 120_000);

  it('two chats interleaved step by step, each on its own device KV cache, arena and stream, both match the CPU', async () => {
    const spec = specs['F32']!;
    const a = Int32Array.from([1, 20, 30, 40, 50]);
    const b = Int32Array.from([1, 99, 98, 97, 96, 95, 94, 93, 92]);
    const [ca, cb] = [await cpuGreedy(spec, a, 8), await cpuGreedy(spec, b, 8)];
    const { config, tensors } = llmLoadArgs(spec, { contextLength: 256 });
    const dev = simt().emulatedGreedy(config, tensors, a, 8, { secondPrompt: b });
    expect(Array.from(dev.tokens)).toEqual(ca.tokens);
    expect(Array.from(dev.secondTokens)).toEqual(cb.tokens);
    expect(ca.tokens).not.toEqual(cb.tokens);
  }, 120_000);

  it('through Llm::forward with the device attached (the addon\'s path): steps, truncation and reuse match the CPU context', async () => {
    const spec = specs['Q8_0']!;
    const steps = [
      { tokens: Int32Array.from([1, 11, 12, 13, 14, 15]) },
      { tokens: Int32Array.of(16) },
      { tokens: Int32Array.from([21, 22]), truncate: 3 },  // a new turn that shares the first 3 positions
      { tokens: Int32Array.of(23) },
    ];
    const { config, tensors } = llmLoadArgs(spec, { contextLength: 256 });
    const dev = simt().emulatedLlm(config, tensors, steps);
    const llm = await loadLlm(spec, { contextLength: 256 });
    const ctx = llm.createContext();
    for (const [i, st] of steps.entries()) {
      if (st.truncate !== undefined) ctx.truncate(st.truncate);
      const cpu = await ctx.eval(st.tokens);
      // Q8_0: the CPU quantizes activations to Q8_0 (VNNI / decode path), the device does not
      expect(relativeError(dev[i]!, cpu), `step ${i}`).toBeLessThan(2e-2);
      expect(argmax(dev[i]!), `step ${i}`).toBe(argmax(cpu));
    }
    ctx.dispose();
    llm.dispose();
  }, 120_000);

  it('E_OOM before allocating when the model does not fit, saying how much it needs', () => {
    const spec = specs['F32']!;
    const { config, tensors } = llmLoadArgs(spec, { contextLength: 256 });
    let err: unknown;
    try {
      simt().emulatedGreedy(config, tensors, Int32Array.of(1), 1, { budgetBytes: 100_000 });
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'E_OOM', message: expect.stringMatching(/needs \d+ MiB of device memory \(weights .*per chat.*\); 1 MiB are free/) });
  });
});

describe('the vision tower + projector on the emulated CUDA backend vs the CPU engine', () => {
  const towers = [['llava-med-v1.5 (HF CLIP)', 'CLIP: pre-LN, quick_gelu, f32 tower, bf16 projector'],
    ['F32', "GGUF mmproj (llama.cpp's names), f16 weights"],
    ['llava-rad (bf16 + LoRA)', 'BiomedCLIP: timm ViT with LayerScale, fused qkv, patch bias, GELU; all f32']] as const;
  for (const [name, what] of towers) {
    it(`${name} — ${what}`, async () => {
      const spec = specs[name]!;
      const S = spec.vision.imageSize;
      const px = randomNormal(3 * S * S, 123);
      const cpu = await loadVision(spec);
      const want = await cpu.encode(px);
      cpu.dispose();
      const { config, tensors } = visionLoadArgs(spec);
      const got = simt().emulatedVision(config, tensors, px);
      expect(got.some(Number.isNaN), 'every output written').toBe(false);
      const err = relativeError(got, want);
      console.log(`${name} tower on the emulated CUDA backend vs the CPU: relative error ${err.toExponential(2)}`);
      // f16 / bf16 weights go through the tensor cores, which round the activations to the weight type; f32 is exact-ish
      expect(err).toBeLessThan(name.startsWith('llava-rad') ? 1e-5 : 2e-2);
    }, 120_000);
  }
});
