/**
 * The bridge from a loaded model to test/support/torch_llava.py, the float64 PyTorch (autograd)
 * reference of the LLaVA training loss, its gradients and AdamW steps: every parameter's current
 * values (read back through the parameter table) go to a float32 file, the roles of the tensors are
 * named from the same load arguments the model was built from, and the script is run on Debian's
 * python3 with its torch.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { llmLoadArgs } from '../../lib/model/llm.js';
import { modelInternals, type Model } from '../../lib/model/model.js';
import { visionLoadArgs } from '../../lib/model/vision.js';
import { PYTHON } from './python.js';

export interface TorchExample { inputIds: number[]; labels: number[]; pixels?: Float32Array[] }
export interface TorchAdamW {
  steps: number; lr: number; betas: [number, number]; eps: number; weightDecay: number; noDecay: string[];
  maxGradNorm: number | null; lrs?: Record<string, number>;
}
export interface TorchResult {
  loss: number; tokens: number; grads: Record<string, number[]>; losses?: number[]; gradNorms?: number[];
  finalParams?: Record<string, number[]>;
}

const SCRIPT = join(import.meta.dirname, 'torch_llava.py');

export async function torchReference(model: Model, examples: TorchExample[], trainable: string[],
  o: { adamw?: TorchAdamW; sampleWeights?: number[]; loraScale?: number;
    loraDropout?: { p: number; T: number; seeds: Record<string, string> } } = {}): Promise<TorchResult> {
  const m = modelInternals(model);
  const spec = m.spec;
  const parts = m.trainingParts();
  const gguf = spec.format === 'gguf';
  // every parameter, as the model holds it now
  const params: { name: string; shape: number[]; offset: number }[] = [];
  const chunks: Float32Array[] = [];
  let offset = 0;
  for (const table of [parts.llm, gguf ? undefined : parts.vision]) {
    if (!table) continue;
    for (const p of table.parameters()) {
      if (p.tiedTo) continue;
      const v = await table.readParameter(p.name);
      params.push({ name: p.name, shape: p.shape, offset });
      chunks.push(v);
      offset += v.length;
    }
  }
  const dir = mkdtempSync(join(tmpdir(), 'medllava-torch-'));
  const bin = join(dir, 'params.bin');
  const all = new Float32Array(offset);
  let at = 0;
  for (const c of chunks) { all.set(c, at); at += c.length; }
  writeFileSync(bin, new Uint8Array(all.buffer));

  // the table's names: the checkpoint's own for HF files, HF's for GGUF (whose tensors are named otherwise)
  const second = (r: [string, string] | undefined, hf?: string) => (gguf ? hf : r?.[1]);
  const { tensors: lt } = llmLoadArgs(spec);
  const loraRole: Record<string, string> = {
    q_proj: 'wq', k_proj: 'wk', v_proj: 'wv', o_proj: 'wo', gate_proj: 'wGate', up_proj: 'wUp', down_proj: 'wDown',
  };
  // LoRA pairs as the table names them (PEFT's names; an adapter file's, or adapters the trainer added)
  const loraNames = parts.llm.parameters().map((p) => p.name)
    .map((n) => /^base_model\.model\.model\.layers\.(\d+)\.\w+\.(\w+)\.lora_A\.weight$/.exec(n)).filter((m) => m !== null);
  const loraScale = o.loraScale ?? lt.lora?.scale;
  const llmNames = {
    embed: second(lt.embed, 'model.embed_tokens.weight'), norm: second(lt.norm, 'model.norm.weight'),
    lmHead: second(lt.lmHead, spec.llm.tieEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight'),
    layers: lt.layers.map((L, l) => {
      const lora: Record<string, { a: string; b: string }> = {};
      for (const mm of loraNames) {
        if (Number(mm[1]) === l) lora[loraRole[mm[2]!]!] = { a: mm[0], b: mm[0].replace('lora_A', 'lora_B') };
      }
      const h = (m: string) => `model.layers.${l}.${m}.weight`;
      return {
        attnNorm: second(L.attnNorm, h('input_layernorm')), wq: second(L.wq, h('self_attn.q_proj')), wk: second(L.wk, h('self_attn.k_proj')),
        wv: second(L.wv, h('self_attn.v_proj')), wo: second(L.wo, h('self_attn.o_proj')), ffnNorm: second(L.ffnNorm, h('post_attention_layernorm')),
        wGate: second(L.wGate, h('mlp.gate_proj')), wUp: second(L.wUp, h('mlp.up_proj')), wDown: second(L.wDown, h('mlp.down_proj')),
        ...(Object.keys(lora).length ? { lora } : {}),
      };
    }),
  };
  let visionNames: unknown = null;
  // a GGUF mmproj's tensors are named otherwise: its tower is left out (text-only batches)
  const withVision = parts.vision && !gguf;
  if (gguf && examples.some((e) => e.pixels?.length)) throw new Error('torchReference: images with a GGUF model are not supported');
  if (withVision) {
    const { tensors: vt } = visionLoadArgs(spec);
    visionNames = {
      patch: second(vt.patchEmbed), patchBias: second(vt.patchBias), cls: second(vt.classEmbed), pos: second(vt.posEmbed),
      preW: second(vt.preLnW), preB: second(vt.preLnB), proj0W: second(vt.proj0W), proj0B: second(vt.proj0B),
      proj2W: second(vt.proj2W), proj2B: second(vt.proj2B),
      // only the blocks LLaVA runs: hidden_states[select_layer] is the output of that many blocks
      layers: vt.layers.slice(0, spec.vision.selectLayer < 0 ? spec.vision.layers + 1 + spec.vision.selectLayer : spec.vision.selectLayer).map((L) => ({
        ln1W: second(L.ln1W), ln1B: second(L.ln1B), qW: second(L.qW), qB: second(L.qB), kW: second(L.kW), kB: second(L.kB),
        vW: second(L.vW), vB: second(L.vB), qkvW: second(L.qkvW), qkvB: second(L.qkvB), oW: second(L.oW), oB: second(L.oB),
        ln2W: second(L.ln2W), ln2B: second(L.ln2B), fc1W: second(L.fcAW), fc1B: second(L.fcAB), fc2W: second(L.fcBW), fc2B: second(L.fcBB),
        ls1: second(L.ls1), ls2: second(L.ls2),
      })),
    };
  }
  const v = spec.vision;
  const input = {
    llm: { ...spec.llm, ropeMode: spec.format === 'gguf' ? 'adjacent' : 'half' }, projector: { type: spec.projector.type },
    vision: withVision ? {
      kind: v.kind, imageSize: v.imageSize, patchSize: v.patchSize, hidden: v.hidden, layers: v.layers, heads: v.heads, ffn: v.ffn,
      selectLayer: v.selectLayer, selectFeature: v.selectFeature, layerNormEps: v.layerNormEps, activation: v.activation,
      ...(v.timm ? { timm: v.timm } : {}),
    } : null,
    lora: loraNames.length ? { scale: loraScale } : null,
    imStartEnd: parts.frame[0].length ? [parts.frame[0][0], parts.frame[1][0]] : null,
    paramsBin: bin, params, names: { llm: llmNames, vision: visionNames },
    examples: examples.map((e) => ({ inputIds: e.inputIds, labels: e.labels, pixels: (e.pixels ?? []).map((p) => Array.from(p)) })),
    trainable, sampleWeights: o.sampleWeights ?? null, adamw: o.adamw ?? null, loraDropout: o.loraDropout ?? null,
  };
  const inputPath = join(dir, 'input.json');
  writeFileSync(inputPath, JSON.stringify(input));
  const r = spawnSync(PYTHON, [SCRIPT], { input: JSON.stringify(input), encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`torch_llava.py failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as TorchResult;
}
