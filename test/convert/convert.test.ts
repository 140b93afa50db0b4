/**
 * medllava convert: HF checkpoints → GGUF pairs that llama.cpp (node-llama-cpp) runs to the same
 * next-token distribution as a float64 reference over the original HF weights; LLaVA-Rad → one
 * safetensors checkpoint with the LoRA merged exactly as numpy + torch compute it.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { convertModel } from '../../lib/convert/convert.js';
import { generateFixture } from '../../lib/fixtures/generate.js';
import { loadModelSpec, loadTokenizer } from '../../lib/index.js';
import { native, packageRoot } from '../../lib/native.js';
import { llamaNextLogProbs } from '../support/llama-reference.js';
import { importPeer } from '../support/peers.js';
import { python } from '../support/python.js';

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
  it('LLaVA-Rad: LoRA merged as W + (alpha/r)·B·A, identical to numpy + torch', async () => {
    const out = await convertModel({ model: rad.dir, to: 'safetensors', out: join(root, 'rad-st'), quant: 'f32' });
    const name = 'model.layers.1.mlp.down_proj.weight';
    const ours = new Float32Array((await native().readSafetensorsTensor(out.weights!, name)).slice().buffer);
    const theirs = JSON.parse(python(`
import json, struct, sys, numpy as np, torch
def st(path, name):
    raw = open(path, 'rb').read(); n = struct.unpack('<Q', raw[:8])[0]; h = json.loads(raw[8:8 + n])
    b, e = h[name]['data_offsets']
    v = (np.frombuffer(raw[8 + n + b:8 + n + e], np.uint16).astype(np.uint32) << 16).view(np.float32)
    return v.reshape(h[name]['shape']).astype(np.float64)
w = st(sys.argv[1] + '/model.safetensors', sys.argv[3])
cfg = json.load(open(sys.argv[2] + '/adapter_config.json'))
ad = torch.load(sys.argv[2] + '/adapter_model.bin')
k = 'base_model.model.' + sys.argv[3][:-len('.weight')]
A = ad[k + '.lora_A.weight'].double().numpy(); B = ad[k + '.lora_B.weight'].double().numpy()
print(json.dumps((w + cfg['lora_alpha'] / cfg['r'] * B @ A).reshape(-1).tolist()))
`, [rad.base, rad.dir, name])) as number[];
    expect(ours.length).toBe(theirs.length);
    let worst = 0;
    for (let i = 0; i < ours.length; i++) worst = Math.max(worst, Math.abs(ours[i]! - theirs[i]!));
    expect(worst).toBeLessThan(1e-5);
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
