/**
 * The training forward (native/model/llm_graph.h: llm_forward_train) over its activation table: B
 * sequences through the same layer code as inference, each causal within itself with f32 keys and
 * values. Its log-probabilities at every position match a float64 LLaMA forward written here; what it
 * saves for backward (RMSNorm's 1/rms, attention's log-sum-exp) matches those quantities recomputed
 * in float64 from its own saved inputs; activation checkpointing changes nothing but the table's
 * size; the emulated CUDA device fills the same table.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { generateFixture } from '../../lib/fixtures/generate.js';
import { loadModelSpec, type ModelSpec } from '../../lib/index.js';
import { llmLoadArgs } from '../../lib/model/llm.js';
import { native } from '../../lib/native.js';
import { simt } from '../support/addons.js';
import { llamaNextLogProbs } from '../support/llama-reference.js';
import { logSoftmax, maxAbsDiff, relativeError } from '../support/reference.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-train-'));
let spec: ModelSpec;
const W = new Map<string, Float64Array>();

beforeAll(async () => {
  const hf = (await generateFixture({ layout: 'llava-med-v1.5', out: join(root, 'hf') })) as { dir: string };
  spec = await loadModelSpec(hf.dir);
  for (const [name, file] of Object.entries(spec.files.weights)) {
    if (!name.startsWith('model.layers.') && !['model.embed_tokens.weight', 'model.norm.weight', 'lm_head.weight'].includes(name)) continue;
    const raw = await native().readSafetensorsTensor(file, name);
    W.set(name, Float64Array.from(native().ggmlDequantize('BF16', raw, raw.length / 2)));
  }
}, 120_000);

const B = 2, T = 6;
function batch(): Int32Array {
  // two different sequences; the second repeats a token so causality matters
  return Int32Array.from([1, 17, 230, 5, 99, 41, 1, 64, 64, 301, 7, 12].map((t) => t % spec.llm.vocab));
}

describe('the training forward and its activation table', () => {
  it('log-probabilities at every position of every sequence match a float64 forward of that prefix', () => {
    const { config, tensors } = llmLoadArgs(spec);
    const tokens = batch();
    const r = simt().trainForward(config, tensors, tokens, B, T);
    const V = spec.llm.vocab;
    let worst = 0;
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) {
        const prefix = Array.from(tokens.subarray(b * T, b * T + t + 1));
        const ref = llamaNextLogProbs({ get: (k) => W.get(k)! }, spec.llm, prefix);
        const ours = logSoftmax(r.logits.subarray((b * T + t) * V, (b * T + t + 1) * V));
        worst = Math.max(worst, maxAbsDiff(ours, ref));
      }
    }
    console.log(`training forward vs float64, every position of ${B} sequences: max |Δ log p| = ${worst.toExponential(2)}`);
    // fp32 with f32 keys and values (the inference path, with an f16 KV cache, is held to 1e-3)
    expect(worst).toBeLessThan(2e-4);
  });

  it('the saved RMSNorm statistics and attention log-sum-exps are what float64 computes from the saved inputs', () => {
    const { config, tensors } = llmLoadArgs(spec);
    checkSaved(simt().trainForward(config, tensors, batch(), B, T), 'cpu');
  });

  function checkSaved(r: ReturnType<ReturnType<typeof simt>['trainForward']>, where: string) {
    const { hidden: D, heads: H, kvHeads: KVH, rmsEps: eps } = spec.llm;
    const hd = D / H, N = B * T;
    for (const [l, layer] of r.layers.entries()) {
      const want = Float64Array.from({ length: N }, (_, n) => {
        let ss = 0;
        for (let d = 0; d < D; d++) ss += layer.x[n * D + d]! ** 2;
        return 1 / Math.sqrt(ss / D + eps);
      });
      expect(relativeError(layer.rstd1!, want), `${where}: layer ${l} rstd1`).toBeLessThan(1e-6);
      // lse (B, H, T) from the saved q, k (after RoPE)
      const lse = new Float64Array(B * H * T);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < H; h++) {
          const kvh = Math.floor(h / (H / KVH));
          for (let t = 0; t < T; t++) {
            const s: number[] = [];
            for (let u = 0; u <= t; u++) {
              let dot = 0;
              for (let d = 0; d < hd; d++) dot += layer.q![((b * T + t) * H + h) * hd + d]! * layer.k![((b * T + u) * KVH + kvh) * hd + d]!;
              s.push(dot / Math.sqrt(hd));
            }
            const m = Math.max(...s);
            lse[(b * H + h) * T + t] = m + Math.log(s.reduce((a, x) => a + Math.exp(x - m), 0));
          }
        }
      }
      expect(maxAbsDiff(layer.lse!, lse), `${where}: layer ${l} lse`).toBeLessThan(1e-5);
    }
  }

  it('activation checkpointing: recomputed layers keep only their input, the logits do not change, the table shrinks', () => {
    const { config, tensors } = llmLoadArgs(spec);
    const full = simt().trainForward(config, tensors, batch(), B, T);
    const L = spec.llm.layers;
    expect(L).toBeGreaterThanOrEqual(2);
    for (const recompute of [Array.from({ length: L }, (_, l) => l === 0), Array.from({ length: L }, () => true)]) {
      const ckpt = simt().trainForward(config, tensors, batch(), B, T, { recompute });
      expect(Array.from(ckpt.logits)).toEqual(Array.from(full.logits));
      expect(ckpt.layers.map((l) => l.recompute)).toEqual(recompute);
      for (const [l, layer] of ckpt.layers.entries()) expect(Array.from(layer.x), `layer ${l} input`).toEqual(Array.from(full.layers[l]!.x));
      // one layer checkpointed costs its own buffers once, shared; every layer: (L − 1) layers' worth saved
      if (recompute.every(Boolean)) expect(ckpt.floats).toBeLessThan(full.floats);
      else expect(ckpt.floats).toBe(full.floats);
    }
  });

  it('the emulated CUDA device fills the same table', () => {
    const { config, tensors } = llmLoadArgs(spec);
    const cpu = simt().trainForward(config, tensors, batch(), B, T);
    const dev = simt().trainForward(config, tensors, batch(), B, T, { device: 'emulated' });
    expect(dev.logits.some(Number.isNaN), 'every logit written').toBe(false);
    const err = relativeError(dev.logits, cpu.logits);
    console.log(`training forward, emulated CUDA vs CPU: logits relative error ${err.toExponential(2)}`);
    // the fixture's weights are bf16: on CUDA they multiply on tensor cores, which round the activations
    // to bf16 (2^-8 relative per product; the inference path on the emulated device is held to the same
    // kind of bound in cuda-emulated.test.ts). Measured 2.8e-3.
    expect(err).toBeLessThan(1e-2);
    // before any matmul, the device's statistics are the CPU's
    expect(relativeError(dev.layers[0]!.rstd1!, cpu.layers[0]!.rstd1!)).toBeLessThan(1e-6);
    // and what it saved is consistent with itself: its rstd and lse are float64's from its own saved inputs
    checkSaved(dev, 'emulated CUDA');
  });
});
