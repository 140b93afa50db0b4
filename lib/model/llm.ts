/** The language model of a ModelSpec, loaded natively: weights mapped from their files, as stored. */
import { medllavaError } from '../errors.js';
import { native, type NativeLlm, type NativeLlmConfig, type NativeLlmTensors, type NativeTensorRef } from '../native.js';
import type { ModelSpec } from './spec.js';

export async function loadLlm(spec: ModelSpec,
  options: { contextLength?: number; device?: 'cpu' | 'cuda'; deviceIndex?: number } = {}): Promise<NativeLlm> {
  const { config, tensors } = llmLoadArgs(spec, options);
  return native().NativeLlm.load({ ...config, device: options.device ?? 'cpu', deviceIndex: options.deviceIndex ?? 0 }, tensors);
}

/** What NativeLlm.load (and the test addon's emulated CUDA model) takes for a spec's LLM. */
export function llmLoadArgs(spec: ModelSpec, options: { contextLength?: number } = {}): {
  config: NativeLlmConfig; tensors: NativeLlmTensors;
} {
  const { llm } = spec;
  const contextLength = options.contextLength ?? llm.contextLength;
  if (!Number.isInteger(contextLength) || contextLength < 1 || contextLength > llm.contextLength) {
    throw medllavaError('E_ARGUMENT', `contextLength must be an integer in [1, ${llm.contextLength}], got ${contextLength}`);
  }
  const w = spec.files.weights;
  const ref = (name: string): NativeTensorRef => {
    const file = w[name];
    if (!file) throw medllavaError('E_FORMAT', `the checkpoint has no tensor ${name}`);
    return [file, name];
  };
  let tensors: NativeLlmTensors;
  if (spec.format === 'gguf') {
    tensors = {
      embed: ref('token_embd.weight'), norm: ref('output_norm.weight'),
      lmHead: llm.tieEmbeddings ? ref('token_embd.weight') : ref('output.weight'),
      layers: Array.from({ length: llm.layers }, (_, l) => ({
        attnNorm: ref(`blk.${l}.attn_norm.weight`), wq: ref(`blk.${l}.attn_q.weight`), wk: ref(`blk.${l}.attn_k.weight`),
        wv: ref(`blk.${l}.attn_v.weight`), wo: ref(`blk.${l}.attn_output.weight`), ffnNorm: ref(`blk.${l}.ffn_norm.weight`),
        wGate: ref(`blk.${l}.ffn_gate.weight`), wUp: ref(`blk.${l}.ffn_up.weight`), wDown: ref(`blk.${l}.ffn_down.weight`),
      })),
    };
  } else {
    tensors = {
      embed: ref('model.embed_tokens.weight'), norm: ref('model.norm.weight'),
      lmHead: llm.tieEmbeddings ? ref('model.embed_tokens.weight') : ref('lm_head.weight'),
      layers: Array.from({ length: llm.layers }, (_, l) => {
        const p = `model.layers.${l}`;
        return {
          attnNorm: ref(`${p}.input_layernorm.weight`), wq: ref(`${p}.self_attn.q_proj.weight`), wk: ref(`${p}.self_attn.k_proj.weight`),
          wv: ref(`${p}.self_attn.v_proj.weight`), wo: ref(`${p}.self_attn.o_proj.weight`),
          ffnNorm: ref(`${p}.post_attention_layernorm.weight`), wGate: ref(`${p}.mlp.gate_proj.weight`),
          wUp: ref(`${p}.mlp.up_proj.weight`), wDown: ref(`${p}.mlp.down_proj.weight`),
        };
      }),
    };
  }
  if (spec.lora) {
    // PEFT adapters: base_model.model.<module>.lora_A/B.weight for every target linear; kept separate
    const pairs: Record<string, { a: NativeTensorRef; b: NativeTensorRef }> = {};
    for (let l = 0; l < llm.layers; l++) {
      for (const m of spec.lora.targetModules) {
        const mod = ['q_proj', 'k_proj', 'v_proj', 'o_proj'].includes(m) ? 'self_attn' : 'mlp';
        const base = `model.layers.${l}.${mod}.${m}`;
        pairs[`${base}.weight`] = {
          a: [spec.lora.file, `base_model.model.${base}.lora_A.weight`], b: [spec.lora.file, `base_model.model.${base}.lora_B.weight`],
        };
      }
    }
    tensors.lora = { scale: spec.lora.alpha / spec.lora.r, pairs };
  }
  const config: NativeLlmConfig = {
    hidden: llm.hidden, layers: llm.layers, heads: llm.heads, kvHeads: llm.kvHeads, ffn: llm.ffn, vocab: llm.vocab,
    contextLength, ropeTheta: llm.ropeTheta, rmsEps: llm.rmsEps, ropeMode: spec.format === 'gguf' ? 'adjacent' : 'half',
  };
  return { config, tensors };
}
