/**
 * Q4_K / Q6_K weights through the whole LLM, against llama.cpp on the same GGUF file. No K-quant
 * writer exists here, so the file holds random super-blocks (scales kept modest): both engines
 * must compute the same function of those bytes.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { generateFixture } from '../../lib/fixtures/generate.js';
import { loadModelSpec, loadTokenizer } from '../../lib/index.js';
import { loadLlm } from '../../lib/model/llm.js';
import { native } from '../../lib/native.js';
import { importPeer } from '../support/peers.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-kq-'));

function randomBlocks(type: 'Q4_K' | 'Q6_K', elems: number, seed: number): Uint8Array {
  const bytes = type === 'Q4_K' ? 144 : 210;
  const out = new Uint8Array((elems / 256) * bytes);
  let s = seed >>> 0;
  for (let i = 0; i < out.length; i++) { s = (Math.imul(s, 1103515245) + 12345) >>> 0; out[i] = s >>> 24; }
  const dv = new DataView(out.buffer);
  for (let b = 0; b < out.length / bytes; b++) {
    if (type === 'Q4_K') { dv.setUint16(b * bytes, 0x0c00, true); dv.setUint16(b * bytes + 2, 0x0c00, true); } // d, dmin = 2^-12
    else dv.setUint16(b * bytes + 208, 0x0400, true); // d = 2^-14
  }
  return out;
}

describe('K-quant weights', () => {
  it('a Q4_K / Q6_K model: next-token distributions agree with llama.cpp', async () => {
    // the tiny fixture's tokenizer and metadata, with a 256-wide model so rows are whole super-blocks
    const fx = (await generateFixture({ layout: 'gguf', out: join(root, 'base'), ggufType: 'F32' })) as { llm: string };
    const h = await native().readGguf(fx.llm);
    const D = 256, F = 512, V = 600, L = 2;
    const set = (k: string, v: number) => { h.metadata.find((m) => m.key === k)!.value = v; };
    set('llama.embedding_length', D);
    set('llama.feed_forward_length', F);
    set('llama.rope.dimension_count', D / 4);
    set('llama.block_count', L);
    const norm = () => new Float32Array(D).fill(1);
    const tensors: { name: string; dims: number[]; type: string; data: Float32Array | Uint8Array }[] = [
      { name: 'token_embd.weight', dims: [D, V], type: 'Q6_K', data: randomBlocks('Q6_K', D * V, 1) },
    ];
    for (let l = 0; l < L; l++) {
      const q4 = (name: string, rows: number, cols: number, seed: number) =>
        tensors.push({ name: `blk.${l}.${name}.weight`, dims: [cols, rows], type: 'Q4_K', data: randomBlocks('Q4_K', rows * cols, seed + l * 100) });
      tensors.push({ name: `blk.${l}.attn_norm.weight`, dims: [D], type: 'F32', data: norm() });
      q4('attn_q', D, D, 2);
      q4('attn_k', D / 2, D, 3);
      q4('attn_v', D / 2, D, 4);
      q4('attn_output', D, D, 5);
      tensors.push({ name: `blk.${l}.ffn_norm.weight`, dims: [D], type: 'F32', data: norm() });
      q4('ffn_gate', F, D, 6);
      q4('ffn_up', F, D, 7);
      tensors.push({ name: `blk.${l}.ffn_down.weight`, dims: [F, D], type: 'Q6_K', data: randomBlocks('Q6_K', F * D, 8 + l) });
    }
    tensors.push({ name: 'output_norm.weight', dims: [D], type: 'F32', data: norm() },
      { name: 'output.weight', dims: [D, V], type: 'Q6_K', data: randomBlocks('Q6_K', D * V, 9) });
    const file = join(root, 'kq.gguf');
    await native().writeGguf(file, h.metadata.filter((m) => m.key !== 'general.file_type'), tensors, 32);
    // this LLM has no matching mmproj (the spec checks the pair), so its spec is the fixture's with the new
    // widths and files; heads stay the fixture's 4, so head_dim = 64 here
    const base = await loadModelSpec(fx.llm);
    const spec = { ...base, llm: { ...base.llm, hidden: D, ffn: F },
      files: { ...base.files, weights: Object.fromEntries(tensors.map((t) => [t.name, file])) } };
    const tok = await loadTokenizer(file);
    const tokens = [tok.bosId, ...tok.encode('is the left lung clear')];
    const llm = await loadLlm(spec);
    const ctx = llm.createContext();
    const logits = await ctx.eval(Int32Array.from(tokens));
    let m = -Infinity;
    for (const v of logits) m = Math.max(m, v);
    let z = 0;
    for (const v of logits) z += Math.exp(v - m);
    const ours = Float64Array.from(logits, (v) => v - m - Math.log(z));
    interface Peer {
      getLlama(o: object): Promise<{ loadModel(o: { modelPath: string }): Promise<{
        createContext(o: object): Promise<{ getSequence(): { controlledEvaluate(i: unknown[]): Promise<({ next?: { probabilities?: Map<number, number> } } | undefined)[]> }; dispose(): Promise<void> }>;
        dispose(): Promise<void> }> }>;
      LlamaLogLevel: { error: unknown };
    }
    const nlc = await importPeer<Peer>('node-llama-cpp', 'dist/index.js');
    const llama = await nlc.getLlama({ gpu: false, build: 'never', logLevel: nlc.LlamaLogLevel.error });
    const model = await llama.loadModel({ modelPath: file });
    const lctx = await model.createContext({ contextSize: 64, batchSize: 32 });
    const res = await lctx.getSequence().controlledEvaluate(tokens.map((t, i) => (i === tokens.length - 1
      ? [t, { generateNext: { probabilities: true } }] : t)));
    const probs = res[res.length - 1]!.next!.probabilities!;
    let worst = 0;
    let compared = 0;
    for (const [id, p] of probs) if (p > 1e-4) { compared++; worst = Math.max(worst, Math.abs(Math.log(p) - ours[id]!)); }
    console.log(`Q4_K/Q6_K model: native vs llama.cpp max |Δ log p| = ${worst.toExponential(2)} over ${compared} tokens`);
    expect(compared).toBeGreaterThan(50);
    // llama.cpp rounds activations to 8 bits (Q8_K) for its K-quant dot products; we keep fp32
    expect(worst).toBeLessThan(0.1);
    await lctx.dispose();
    await model.dispose();
    ctx.dispose();
    llm.dispose();
  }, 120_000);
});
