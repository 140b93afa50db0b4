/**
 * medllava convert: HF checkpoints → GGUF pairs that llama.cpp (node-llama-cpp) runs to the same
 * next-token distribution as a float64 reference over the original HF weights; LLaVA-Rad → one
 * safetensors checkpoint with the LoRA merged into every adapted linear as torch computes it (float64).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { convertModel } from '../../lib/convert/convert.js';
import { generateFixture } from '../../lib/fixtures/generate.js';
import { loadModelSpec, loadTokenizer } from '../../lib/index.js';
import { native, packageRoot } from '../../lib/native.js';
import { llamaNextLogProbs } from '../support/llama-reference.js';
import { redrawAdapter, torchLoraMerge } from '../support/lora.js';
import { importPeer } from '../support/peers.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-convert-'));

interface Peer {
  getLlama(o: object): Promise<{ loadModel(o: { modelPath: string }): Promise<{
    createContext(o: object): Promise<{ getSequence(): { controlledEvaluate(i: unknown[]): Promise<({ next?: { probabilities?: Map<number, number> } } | undefined)[]> }; dispose(): Promise<void> }>;
    dispose(): Promise<void> }> }>;
  LlamaLogLevel: { error: unknown };
}

async function hfReference(dir: string, text: string) {
  const spec = await loadModelSpec(dir);
  const cache = new Map<string, Float64Array>();
  for (const [name, file] of Object.entries(spec.files.weights)) {
    const raw = file.endsWith('.bin') ? await native().readTorchTensor(file, name) : await native().readSafetensorsTensor(file, name);
    const n = raw.length / 2;
    const dtype = file.endsWith('.bin') ? 'F16' : 'BF16';
    cache.set(name, Float64Array.from(native().ggmlDequantize(dtype, raw, n)));
  }
  const tok = await loadTokenizer(dir);
  const tokens = [tok.bosId, ...tok.encode(text)];
  return { tokens, logp: llamaNextLogProbs({ get: (k) => cache.get(k)! }, spec.llm, tokens) };
}

async function llamaCppLogProbs(modelPath: string, tokens: number[]) {
  const nlc = await importPeer<Peer>('node-llama-cpp', 'dist/index.js');
  const llama = await nlc.getLlama({ gpu: false, build: 'never', logLevel: nlc.LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath });
  const ctx = await model.createContext({ contextSize: 128, batchSize: 64 });
  const res = await ctx.getSequence().controlledEvaluate(tokens.map((t, i) => (i === tokens.length - 1
    ? [t, { generateNext: { probabilities: true } }] : t)));
  const probs = res[res.length - 1]!.next!.probabilities!;
  await ctx.dispose();
  await model.dispose();
  return probs;
}

function worstLogProbDiff(probs: Map<number, number>, ref: Float64Array): number {
  let worst = 0;
  for (const [id, p] of probs) if (p > 1e-4) worst = Math.max(worst, Math.abs(Math.log(p) - ref[id]!));
  return worst;
}

let v15: { dir: string; tower: string };
let v1: { dir: string; tower: string };
let rad: { dir: string; base: string; tower: string };

beforeAll(async () => {
  v15 = (await generateFixture({ layout: 'llava-med-v1.5', out: join(root, 'v15') })) as typeof v15;
  v1 = (await generateFixture({ layout: 'llava-med-v1', out: join(root, 'v1') })) as typeof v1;
  rad = (await generateFixture({ layout: 'llava-rad', out: join(root, 'rad') })) as typeof rad;
}, 180_000);

describe('HF → GGUF', () => {
  it('LLaVA-Med v1.5 (bf16 safetensors shards) → F16 GGUF that llama.cpp runs like the original', async () => {
    const out = await convertModel({ model: v15.dir, to: 'gguf', out: join(root, 'v15-gguf') });
    const spec = await loadModelSpec(out.llm!);
    expect(spec.llm).toMatchObject({ hidden: 64, layers: 2, heads: 4, kvHeads: 2, vocab: 600 });
    const { tokens, logp } = await hfReference(v15.dir, 'is there a pleural effusion');
    expect(worstLogProbDiff(await llamaCppLogProbs(out.llm!, tokens), logp)).toBeLessThan(0.02);
  });

  it('LLaVA-Med v1.0 (fp16 pickle shards, added tokens, linear projector) → GGUF', async () => {
    const out = await convertModel({ model: v1.dir, to: 'gguf', out: join(root, 'v1-gguf'), quant: 'q8_0' });
    const spec = await loadModelSpec(out.llm!);
    expect(spec).toMatchObject({ projector: { type: 'linear' }, llm: { vocab: 603, kvHeads: 4 } });
    const tok = await loadTokenizer(out.llm!);
    expect(tok.vocabSize).toBe(603);
    const { tokens, logp } = await hfReference(v1.dir, 'describe the chest x-ray');
    // Q8_0 weights: a looser bound than F16
    expect(worstLogProbDiff(await llamaCppLogProbs(out.llm!, tokens), logp)).toBeLessThan(0.1);
  });

  it('LLaVA-Rad → GGUF is refused: llama.cpp\'s mmproj cannot hold its LayerScale ViT', async () => {
    await expect(convertModel({ model: rad.dir, to: 'gguf', out: join(root, 'rad-gguf') }))
      .rejects.toMatchObject({ code: 'E_UNSUPPORTED', message: expect.stringMatching(/LayerScale/) });
  });
});

describe('HF → safetensors', () => {
  it('LLaVA-Rad: LoRA merged as W + (alpha/r)·B·A into every adapted linear, as torch computes it', async () => {
    // the fixture seeds q/k/v/o of a layer alike; redraw so every (layer, module) has its own A, B
    redrawAdapter(rad.dir, 1234);
    const out = await convertModel({ model: rad.dir, to: 'safetensors', out: join(root, 'rad-st'), quant: 'f32' });
    const adapterCfg = JSON.parse(readFileSync(join(rad.dir, 'adapter_config.json'), 'utf8')) as { r: number; target_modules: string[] };
    const ref = torchLoraMerge(join(rad.base, 'model.safetensors'), rad.dir, 'peft', root);
    const baseSpec = await loadModelSpec(rad.dir);
    // every layer × every target module of the adapter: 2 × 7 here
    expect(ref.size).toBe(baseSpec.llm.layers * adapterCfg.target_modules.length);
    const ours = new Map<string, Float32Array>();
    for (const name of ref.keys()) ours.set(name, new Float32Array((await native().readSafetensorsTensor(out.weights!, name)).slice().buffer));
    const worstAgainst = (r: Map<string, { data: Float64Array }>) => {
      let worst = 0;
      for (const [name, t] of r) {
        const o = ours.get(name)!;
        expect(o.length).toBe(t.data.length);
        for (let i = 0; i < o.length; i++) worst = Math.max(worst, Math.abs(o[i]! - t.data[i]!));
      }
      return worst;
    };
    let peak = 0;
    for (const t of ref.values()) for (const v of t.data) peak = Math.max(peak, Math.abs(v));
    const worst = worstAgainst(ref);
    // the merge is an f32 sum of W (exact: bf16 ⊂ f32) and r products: each term and the running
    // sum round at most r + 2 times by 2^-24 relative, of values ≤ peak
    const bound = (adapterCfg.r + 2) * 2 ** -24 * peak;
    const rslora = worstAgainst(torchLoraMerge(join(rad.base, 'model.safetensors'), rad.dir, 'rslora', root));
    const swapped = worstAgainst(torchLoraMerge(join(rad.base, 'model.safetensors'), rad.dir, 'swapped', root));
    console.log(`LoRA merge vs torch float64 over ${ref.size} tensors: max |Δ| = ${worst.toExponential(2)} (bound ` +
      `${bound.toExponential(2)}); controls: alpha/√r scale ${rslora.toExponential(2)}, B·A of another module ${swapped.toExponential(2)}`);
    expect(worst).toBeLessThan(bound);
    // negative controls: a wrong scale or another module's adapter is far outside the bound
    expect(rslora).toBeGreaterThan(100 * bound);
    expect(swapped).toBeGreaterThan(100 * bound);
    // the tensors LoRA does not touch are the base's, bit for bit
    const header = await native().readSafetensorsHeader(out.weights!);
    const untouched = header.tensors.filter((t) => !ref.has(t.name) && baseSpec.files.weights[t.name] === join(rad.base, 'model.safetensors'));
    expect(untouched.length).toBe(3 + 2 * baseSpec.llm.layers); // embed, norm, lm_head + two norms a layer
    for (const t of untouched) {
      const o = new Float32Array((await native().readSafetensorsTensor(out.weights!, t.name)).slice().buffer);
      const raw = await native().readSafetensorsTensor(join(rad.base, 'model.safetensors'), t.name);
      expect(o, t.name).toEqual(native().ggmlDequantize('BF16', raw, raw.length / 2));
    }
    // and the result is a checkpoint again: config + tokenizer beside the weights
    const spec = await loadModelSpec(out.dir!, { visionTower: v15.tower });
    expect(spec.llm.vocab).toBe(600);
  });

  it('the CLI converts too', () => {
    const stdout = execFileSync(process.execPath, [join(packageRoot(), 'dist/lib/cli/main.js'), 'convert', '--model', v15.dir,
      '--to', 'safetensors', '--out', join(root, 'cli-st'), '--quant', 'f16'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(stdout).toMatch(/weights: .*model\.safetensors/);
  });

  it('bad arguments → E_ARGUMENT', async () => {
    await expect(convertModel({ model: v15.dir, to: 'onnx' as 'gguf', out: join(root, 'x') })).rejects.toMatchObject({ code: 'E_ARGUMENT' });
    await expect(convertModel({ model: v15.dir, to: 'gguf', out: join(root, 'y'), quant: 'q3_k' })).rejects.toMatchObject({ code: 'E_ARGUMENT' });
  });
});
