/**
 * llama.cpp (through npm: node-llama-cpp and @fugood/llama.node) as the independent reader of what
 * we write: it loads our GGUF files in every type we write, tokenizes our vocabulary exactly as we
 * do, computes the same next-token distribution as a float64 reference built from the HF-layout
 * fixture (so the GGUF layout, q/k permutation included, is right), and loads our mmproj.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { loadModelSpec, loadTokenizer } from '../../lib/index.js';
import { generateFixture } from '../../lib/fixtures/generate.js';
import { native } from '../../lib/native.js';
import { llamaNextLogProbs } from '../support/llama-reference.js';
import { importPeer } from '../support/peers.js';
import { PARITY_TEXT } from '../tokenizer/corpus.js';

// the parts of node-llama-cpp's API used here (it is not a dependency, so no type package)
interface NlcModel {
  fileInsights: { trainContextSize?: number };
  tokens: { bos: number | null; eos: number | null };
  tokenize(text: string, specialTokens?: boolean): readonly number[];
  createContext(o: object): Promise<{ getSequence(): NlcSequence; dispose(): Promise<void> }>;
  dispose(): Promise<void>;
}
interface NlcSequence {
  controlledEvaluate(input: unknown[]): Promise<({ next?: { probabilities?: Map<number, number> } } | undefined)[]>;
}
interface NodeLlamaCpp {
  getLlama(o: object): Promise<{ loadModel(o: { modelPath: string }): Promise<NlcModel> }>;
  LlamaLogLevel: { error: unknown };
}
const root = mkdtempSync(join(tmpdir(), 'medllava-peers-'));
let nlc: NodeLlamaCpp;
let llama: Awaited<ReturnType<NodeLlamaCpp['getLlama']>>;
const files: Record<string, { llm: string; mmproj: string }> = {};
let hf: { dir: string; tower: string };

beforeAll(async () => {
  nlc = await importPeer<NodeLlamaCpp>('node-llama-cpp', 'dist/index.js');
  llama = await nlc.getLlama({ gpu: false, build: 'never', logLevel: nlc.LlamaLogLevel.error });
  hf = (await generateFixture({ layout: 'llava-med-v1.5', out: join(root, 'hf') })) as typeof hf;
  for (const t of ['BF16', 'F16', 'Q8_0', 'Q4_0']) {
    files[t] = (await generateFixture({ layout: 'gguf', out: join(root, t), ggufType: t })) as { llm: string; mmproj: string };
  }
}, 300_000);

describe('node-llama-cpp reads our GGUF files', () => {
  for (const t of ['BF16', 'F16', 'Q8_0', 'Q4_0']) {
    it(`loads the ${t} LLM and reports its shape`, async () => {
      const model = await llama.loadModel({ modelPath: files[t]!.llm });
      expect(model.fileInsights.trainContextSize).toBe(512);
      expect(model.tokens.bos).toBe(1);
      expect(model.tokens.eos).toBe(2);
      await model.dispose();
    });
  }

  it('tokenizes the whole corpus to the same ids as our tokenizer', async () => {
    const model = await llama.loadModel({ modelPath: files['F16']!.llm });
    const ours = await loadTokenizer(files['F16']!.llm);
    const mismatches: string[] = [];
    for (const text of PARITY_TEXT) {
      const theirs = Array.from(model.tokenize(text, false));
      const mine = ours.encode(text);
      if (JSON.stringify(theirs) !== JSON.stringify(mine)) mismatches.push(`${JSON.stringify(text)}: llama.cpp ${theirs} vs ${mine}`);
    }
    await model.dispose();
    expect(mismatches).toEqual([]);
  });

  it('computes the next-token distribution of a float64 reference built from the HF checkpoint', async () => {
    // the reference reads the HF layout (bf16 safetensors, HF tensor names, no permutation) …
    const spec = await loadModelSpec(hf.dir);
    const cache = new Map<string, Float64Array>();
    const W = {
      get(name: string) {
        let v = cache.get(name);
        if (!v) throw new Error(`not loaded: ${name}`);
        return v;
      },
    };
    for (const [name, file] of Object.entries(spec.files.weights)) {
      const raw = await native().readSafetensorsTensor(file, name);
      const u16 = new Uint16Array(raw.slice().buffer);
      cache.set(name, Float64Array.from(u16, (b) => new Float32Array(new Uint32Array([b << 16]).buffer)[0]!));
    }
    const dims = { ...spec.llm };
    const tok = await loadTokenizer(hf.dir);
    const tokens = [tok.bosId, ...tok.encode('is there a pleural effusion in the left lower lobe')];
    const ref = llamaNextLogProbs(W, dims, tokens);
    const wrongRope = llamaNextLogProbs(W, dims, tokens, 'interleaved');

    // … llama.cpp reads the BF16 GGUF of the same weights
    const model = await llama.loadModel({ modelPath: files['BF16']!.llm });
    const ctx = await model.createContext({ contextSize: 128, batchSize: 64 });
    const seq = ctx.getSequence();
    const res = await seq.controlledEvaluate(tokens.map((t, i) => (i === tokens.length - 1
      ? [t, { generateNext: { probabilities: true } }] : t)));
    const probs = res[res.length - 1]!.next!.probabilities!;
    await ctx.dispose();
    await model.dispose();

    let worst = 0;
    let worstWrong = 0;
    let compared = 0;
    for (const [id, p] of probs) {
      if (p < 1e-4) continue;
      compared++;
      worst = Math.max(worst, Math.abs(Math.log(p) - ref[id]!));
      worstWrong = Math.max(worstWrong, Math.abs(Math.log(p) - wrongRope[id]!));
    }
    console.log(`llama.cpp vs float64 reference: max abs log-prob difference ${worst.toExponential(2)} over ${compared} tokens (wrong RoPE convention: ${worstWrong.toExponential(2)})`);
    expect(compared).toBeGreaterThan(100);
    // bf16 weights on both sides; llama.cpp rounds activations to bf16 for its dot products
    expect(worst).toBeLessThan(0.02);
    // and the check can tell RoPE conventions apart (i.e. a wrong q/k permutation would fail it)
    expect(worstWrong).toBeGreaterThan(5 * worst);
  });
});

describe('@fugood/llama.node (llama.cpp\'s mtmd) reads our mmproj', () => {
  it('initialises multimodal support with it', async () => {
    const lib = await importPeer<{ loadModel(o: object): Promise<{
      initMultimodal(o: object): boolean; getMultimodalSupport(): { vision: boolean }; release(): Promise<void> }> }>(
      '@fugood/llama.node', 'lib/index.js');
    const ctx = await lib.loadModel({ model: files['F16']!.llm, n_ctx: 128, n_gpu_layers: 0 });
    expect(ctx.initMultimodal({ path: files['F16']!.mmproj, use_gpu: false })).toBe(true);
    expect(ctx.getMultimodalSupport().vision).toBe(true);
    await ctx.release();
  });
});
