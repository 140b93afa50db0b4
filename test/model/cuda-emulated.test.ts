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
import { native, type NativeTensorRef } from '../../lib/native.js';
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

  it('LoRA adapters added to a model on the device mid-chat (Llm::add_lora): uploaded and used by the next forward, as on the CPU', () => {
    const spec = specs['F32']!;
    const steps = [
      { tokens: Int32Array.from([1, 11, 12, 13, 14, 15]) },
      // every B = 0.05: the adapters now change the output; the chat's arena grows for their scratch
      { tokens: Int32Array.from([16, 17]), addLora: { r: 4, alpha: 8, seed: 3, b: 0.05 } },
      { tokens: Int32Array.of(18) },
    ];
    const { config, tensors } = llmLoadArgs(spec, { contextLength: 256 });
    const dev = simt().emulatedLlm(config, tensors, steps);
    const cpu = simt().emulatedLlm(config, tensors, steps, { cpu: true });
    const plain = simt().emulatedLlm(config, tensors, steps.map(({ tokens }) => ({ tokens })), { cpu: true });
    for (let i = 0; i < steps.length; i++) expect(relativeError(dev[i]!, cpu[i]!), `step ${i}`).toBeLessThan(1e-4);
    expect(relativeError(cpu[1]!, plain[1]!)).toBeGreaterThan(1e-2);
    expect(relativeError(cpu[0]!, plain[0]!)).toBe(0);
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
  /**
   * The bound, from the arithmetic: the device's tensor cores round every input of an f16 / bf16-weight
   * matmul to the weight type (unit roundoff u = 2^-11 f16, 2^-8 bf16); the CPU keeps them f32 (both
   * accumulate in f32, the weights are the same stored values). Rounding to nearest leaves a relative
   * error δ·2^(1-p)/m per element (δ uniform on ±1/2, mantissa m log-uniform on [1, 2)), whose rms is
   * σ·u with σ = 2·√(E[1/m²]/12) = 2·√(3/(8·ln 2)/12) ≈ 0.4246; a matmul passes that relative rms to its
   * output, and S independent sites add in quadrature: σ·u·√S. Growth factor G = 2 on top: the
   * quadrature sum takes each site's gain to the output as 1, but GELU's slope reaches 1.13, softmax
   * scales the q/k errors by the attention logits, and cancellation in the next matmul can raise a
   * relative error (the CLIP case below, 2 sites in series through a GELU, measures 1.02 × σ·u·√S; the
   * f16 tower, 15 sites partly diluted by the residual stream, 0.49 ×). Sites: one per such matmul
   * input — the patch embedding, q, k, v, o, fc1, fc2 of each block run, the projector's one or two;
   * the f32 tower gets f32 accumulation-order noise only. Measured / bound: bf16 projector 2.4e-3 /
   * 4.7e-3, f16 tower 4.0e-4 / 1.6e-3 (the former bound was 2e-2 for both).
   */
  const G = 2;
  const SIGMA = 2 * Math.sqrt(3 / (8 * Math.LN2) / 12);
  const headers = new Map<string, Promise<Map<string, string>>>();
  /** the stored type of a tensor, from its file's header */
  const storedType = async ([file, name]: NativeTensorRef) => {
    if (!headers.has(file)) {
      headers.set(file, (async () => {
        const list = file.endsWith('.gguf') ? (await native().readGguf(file)).tensors.map((t) => [t.name, t.type])
          : file.endsWith('.safetensors') ? (await native().readSafetensorsHeader(file)).tensors.map((t) => [t.name, t.dtype])
            : (await native().readTorchCheckpoint(file)).tensors.map((t) => [t.name, t.dtype]);
        return new Map(list as [string, string][]);
      })());
    }
    return (await headers.get(file)!).get(name);
  };
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
      // one rounding site per matmul whose weight is stored f16 / bf16 (fused timm qkv: three), in the
      // blocks that run: up to the select layer (-2: all but the last)
      const run = spec.vision.layers + 1 + spec.vision.selectLayer;
      expect(run).toBe(spec.vision.layers - 1);
      const sites = { F16: 0, BF16: 0 };
      const refs: [NativeTensorRef | undefined, number][] = [[tensors.patchEmbed, 1], [tensors.proj0W, 1], [tensors.proj2W, 1],
        ...tensors.layers.slice(0, run).flatMap((l) => [[l.qW, 1], [l.kW, 1], [l.vW, 1], [l.qkvW, 3], [l.oW, 1], [l.fcAW, 1], [l.fcBW, 1]] as [NativeTensorRef | undefined, number][])];
      for (const [ref, n] of refs) {
        if (!ref) continue;
        const t = await storedType(ref);
        if (t === 'F16' || t === 'BF16') sites[t] += n;
        else expect(t, `${ref[1]}`).toBe('F32');
      }
      // G·σ·√(S_f16·u_f16² + S_bf16·u_bf16²), + 1e-5 for f32 accumulation order (measured 5e-7 on the all-f32 tower)
      const U = { F16: 2 ** -11, BF16: 2 ** -8 };
      const bound = G * SIGMA * Math.sqrt(sites.F16 * U.F16 ** 2 + sites.BF16 * U.BF16 ** 2) + 1e-5;
      const expected = { 'llava-med-v1.5 (HF CLIP)': { F16: 0, BF16: 2 }, F32: { F16: 1 + 6 * run + 2, BF16: 0 },
        'llava-rad (bf16 + LoRA)': { F16: 0, BF16: 0 } }[name];
      expect(sites).toEqual(expected);
      console.log(`${name} tower on the emulated CUDA backend vs the CPU: relative error ${err.toExponential(2)}; bound ` +
        `${bound.toExponential(2)} (rounding sites: ${sites.F16} f16, ${sites.BF16} bf16; ${run} blocks run)`);
      expect(err).toBeLessThan(bound);
      // negative control: the device run with the last block's LayerNorm-2 weight taken from block 0 (a
      // plausible mix-up; 1.6e-2 on the f16 / bf16 towers, which the former bound 2e-2 let through)
      expect(run).toBeGreaterThanOrEqual(2);
      const mixed = { ...tensors, layers: tensors.layers.map((l, i) => (i === run - 1 ? { ...l, ln2W: tensors.layers[0]!.ln2W } : l)) };
      const control = relativeError(simt().emulatedVision(config, mixed, px), want);
      console.log(`${name}: with block ${run - 1}'s ln2 weight from block 0: ${control.toExponential(2)} (${(control / bound).toFixed(1)}× the bound)`);
      expect(control).toBeGreaterThan(2 * bound);
    }, 120_000);
  }
});
