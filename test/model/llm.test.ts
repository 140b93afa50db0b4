/**
 * The native LLM against independent references: a float64 forward over the HF checkpoint (TS,
 * from the HF modeling definitions) and llama.cpp (node-llama-cpp) on the GGUF files of the same
 * model; plus KV-cache properties and context overflow.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { generateFixture } from '../../lib/fixtures/generate.js';
import { loadModelSpec, loadTokenizer } from '../../lib/index.js';
import { loadLlm } from '../../lib/model/llm.js';
import { native } from '../../lib/native.js';
import { llamaNextLogProbs } from '../support/llama-reference.js';
import { importPeer } from '../support/peers.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-llm-'));
let hf: { dir: string; tower: string };
const gg: Record<string, { llm: string; mmproj: string }> = {};
const TEXT = 'is there a pleural effusion in the left lower lobe of the chest x-ray';

beforeAll(async () => {
  hf = (await generateFixture({ layout: 'llava-med-v1.5', out: join(root, 'hf') })) as typeof hf;
  for (const t of ['F32', 'Q8_0', 'Q4_0']) {
    gg[t] = (await generateFixture({ layout: 'gguf', out: join(root, t), ggufType: t })) as { llm: string; mmproj: string };
  }
}, 180_000);

function logSoftmax(logits: Float32Array): Float64Array {
  let m = -Infinity;
  for (const v of logits) m = Math.max(m, v);
  let z = 0;
  for (const v of logits) z += Math.exp(v - m);
  const lse = m + Math.log(z);
  return Float64Array.from(logits, (v) => v - lse);
}

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i]! - b[i]!));
  return w;
};

describe('native LLM vs a float64 reference (HF layout, bf16 weights)', () => {
  it('next-token log-probabilities agree', async () => {
    const spec = await loadModelSpec(hf.dir);
    const cache = new Map<string, Float64Array>();
    for (const [name, file] of Object.entries(spec.files.weights)) {
      const raw = await native().readSafetensorsTensor(file, name);
      cache.set(name, Float64Array.from(native().ggmlDequantize('BF16', raw, raw.length / 2)));
    }
    const tok = await loadTokenizer(hf.dir);
    const tokens = [tok.bosId, ...tok.encode(TEXT)];
    const ref = llamaNextLogProbs({ get: (k) => cache.get(k)! }, spec.llm, tokens);
    const llm = await loadLlm(spec);
    const ctx = llm.createContext();
    const ours = logSoftmax(await ctx.eval(Int32Array.from(tokens)));
    const diff = maxAbsDiff(ours, ref);
    console.log(`native vs float64 reference: max |Δ log p| = ${diff.toExponential(2)} over ${ours.length} tokens`);
    // fp32 compute with an f16 KV cache
    expect(diff).toBeLessThan(5e-3);
    // the portable scalar kernels (matmul, attention) agree as well
    native().setCpuDispatch('scalar');
    const scalarCtx = llm.createContext();
    const scalar = logSoftmax(await scalarCtx.eval(Int32Array.from(tokens)));
    native().setCpuDispatch('auto');
    expect(maxAbsDiff(scalar, ref)).toBeLessThan(5e-3);
    expect(maxAbsDiff(scalar, ours)).toBeLessThan(1e-3);
    scalarCtx.dispose();
    ctx.dispose();
    llm.dispose();
  });
});

describe('native LLM vs llama.cpp (GGUF layout)', () => {
  interface Peer {
    getLlama(o: object): Promise<{ loadModel(o: { modelPath: string }): Promise<{
      createContext(o: object): Promise<{ getSequence(): { controlledEvaluate(i: unknown[]): Promise<({ next?: { probabilities?: Map<number, number> } } | undefined)[]> }; dispose(): Promise<void> }>;
      dispose(): Promise<void> }> }>;
    LlamaLogLevel: { error: unknown };
  }
  for (const [type, bound] of [['F32', 0.02], ['Q8_0', 0.05], ['Q4_0', 0.15]] as const) {
    it(`${type}: next-token distributions agree`, async () => {
      const spec = await loadModelSpec(gg[type]!.llm);
      const tok = await loadTokenizer(gg[type]!.llm);
      const tokens = [tok.bosId, ...tok.encode(TEXT)];
      const llm = await loadLlm(spec);
      const ctx = llm.createContext();
      const ours = logSoftmax(await ctx.eval(Int32Array.from(tokens)));
      const nlc = await importPeer<Peer>('node-llama-cpp', 'dist/index.js');
      const llama = await nlc.getLlama({ gpu: false, build: 'never', logLevel: nlc.LlamaLogLevel.error });
      const model = await llama.loadModel({ modelPath: gg[type]!.llm });
      const lctx = await model.createContext({ contextSize: 128, batchSize: 64 });
      const res = await lctx.getSequence().controlledEvaluate(tokens.map((t, i) => (i === tokens.length - 1
        ? [t, { generateNext: { probabilities: true } }] : t)));
      const probs = res[res.length - 1]!.next!.probabilities!;
      let worst = 0;
      for (const [id, p] of probs) if (p > 1e-4) worst = Math.max(worst, Math.abs(Math.log(p) - ours[id]!));
      console.log(`${type}: native vs llama.cpp max |Δ log p| = ${worst.toExponential(2)}`);
      // llama.cpp quantizes activations to 8 bits for its quantized dot products; we keep them fp32
      expect(worst).toBeLessThan(bound);
      await lctx.dispose();
      await model.dispose();
      ctx.dispose();
      llm.dispose();
    });
  }
});

describe('KV cache and context', () => {
  it('token by token through the cache gives the logits of the whole prompt at once', async () => {
    const spec = await loadModelSpec(gg['F32']!.llm);
    const tok = await loadTokenizer(gg['F32']!.llm);
    const tokens = [tok.bosId, ...tok.encode(TEXT)];
    const llm = await loadLlm(spec);
    const a = llm.createContext();
    const all = await a.eval(Int32Array.from(tokens), { allLogits: true });
    const b = llm.createContext();
    for (let i = 0; i < tokens.length; i++) {
      const step = await b.eval(Int32Array.from([tokens[i]!]));
      expect(maxAbsDiff(step, all.subarray(i * spec.llm.vocab, (i + 1) * spec.llm.vocab))).toBeLessThan(1e-4);
    }
    expect(b.nPast).toBe(tokens.length);
    b.reset();
    expect(b.nPast).toBe(0);
    a.dispose();
    b.dispose();
    llm.dispose();
  });

  it('overflowing the context → E_CONTEXT_FULL, and the context stays usable', async () => {
    const spec = await loadModelSpec(gg['Q8_0']!.llm);
    const llm = await loadLlm(spec, { contextLength: 8 });
    const ctx = llm.createContext();
    await ctx.eval(Int32Array.from([1, 5, 6, 7, 8]));
    await expect(ctx.eval(Int32Array.from([1, 2, 3, 4]))).rejects.toMatchObject({ code: 'E_CONTEXT_FULL' });
    expect(ctx.nPast).toBe(5);
    await ctx.eval(Int32Array.from([9, 10, 11]));
    expect(ctx.nPast).toBe(8);
    await expect(ctx.eval(Int32Array.from([700]))).rejects.toMatchObject({ code: 'E_CONTEXT_FULL' });
    ctx.dispose();
    llm.dispose();
  });

  it('bad tokens and concurrent evals are refused with a code', async () => {
    const spec = await loadModelSpec(gg['Q8_0']!.llm);
    const llm = await loadLlm(spec);
    const ctx = llm.createContext();
    await expect(ctx.eval(Int32Array.from([1, 100000]))).rejects.toMatchObject({ code: 'E_ARGUMENT', message: expect.stringMatching(/outside the vocabulary/) });
    const first = ctx.eval(Int32Array.from([1, 2, 3]));
    expect(() => ctx.eval(Int32Array.from([4]))).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
    await first;
    llm.dispose();
    expect(() => llm.createContext()).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
    // the context outlives its model's dispose
    await ctx.eval(Int32Array.from([5]));
    ctx.dispose();
    await expect(loadLlm(spec, { contextLength: 0 })).rejects.toMatchObject({ code: 'E_ARGUMENT' });
  });
});

describe('LoRA kept separate (LLaVA-Rad)', () => {
  it('W x + (alpha/r)·B(A x) at run time gives the logits of the merged checkpoint', async () => {
    const { convertModel } = await import('../../lib/convert/convert.js');
    const rad = (await generateFixture({ layout: 'llava-rad', out: join(root, 'rad') })) as { dir: string };
    const spec = await loadModelSpec(rad.dir);
    expect(spec.lora).toBeDefined();
    const tok = await loadTokenizer(spec.files.tokenizer); // the base model's
    const tokens = Int32Array.from([tok.bosId, ...tok.encode(TEXT)]);
    const live = await loadLlm(spec);
    const a = await live.createContext().eval(tokens);
    // the merged checkpoint (its merge matches numpy + torch, test/convert), in f32
    const merged = await convertModel({ model: rad.dir, to: 'safetensors', out: join(root, 'rad-merged'), quant: 'f32' });
    const mspec = { ...(await loadModelSpec(merged.dir!, { visionTower: join(root, 'hf', 'clip-vit-large-patch14-336') })) };
    const b = await (await loadLlm(mspec)).createContext().eval(tokens);
    // the base is bf16 on both sides; only the order of the LoRA sum differs
    expect(maxAbsDiff(logSoftmax(a), logSoftmax(b))).toBeLessThan(1e-3);
    // and the adapter matters: without it the logits are far off
    const noLora = await (await loadLlm({ ...spec, lora: undefined })).createContext().eval(tokens);
    expect(maxAbsDiff(logSoftmax(noLora), logSoftmax(b))).toBeGreaterThan(1e-2);
  });
});
