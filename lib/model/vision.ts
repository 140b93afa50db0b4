/** The vision tower + projector of a ModelSpec, loaded natively. */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { medllavaError } from '../errors.js';
import {
  native, type NativeTensorRef, type NativeVision, type NativeVisionConfig, type NativeVisionTensors,
} from '../native.js';
import type { ModelSpec } from './spec.js';

export async function loadVision(spec: ModelSpec, options: { device?: 'cpu' | 'cuda'; deviceIndex?: number } = {}): Promise<NativeVision> {
  const { config, tensors } = visionLoadArgs(spec);
  return native().NativeVision.load({ ...config, device: options.device ?? 'cpu', deviceIndex: options.deviceIndex ?? 0 }, tensors);
}

/** What NativeVision.load (and the test addon's emulated CUDA tower) takes for a spec's tower + projector. */
export function visionLoadArgs(spec: ModelSpec): { config: NativeVisionConfig; tensors: NativeVisionTensors } {
  const v = spec.vision;
  const w = (name: string): NativeTensorRef => {
    const f = spec.files.weights[name];
    if (!f) throw medllavaError('E_FORMAT', `the checkpoint has no tensor ${name}`);
    return [f, spec.files.storedNames?.[name] ?? name];
  };
  const hfProjector = () => (spec.projector.type === 'mlp2x_gelu'
    ? { proj0W: w('model.mm_projector.0.weight'), proj0B: w('model.mm_projector.0.bias'), proj2W: w('model.mm_projector.2.weight'),
      proj2B: w('model.mm_projector.2.bias') }
    : { proj0W: w('model.mm_projector.weight'), proj0B: w('model.mm_projector.bias') });
  let tensors: NativeVisionTensors;
  if (v.kind === 'timm-vit') {
    // open_clip's TimmModel trunk: fused qkv, LayerScale ls1/ls2, optional norm_pre
    if (!v.timm) throw medllavaError('E_ARGUMENT', 'a timm-vit vision spec needs its timm fields');
    const { prefix, layerScale, preNorm } = v.timm;
    const f = spec.files.visionTower;
    const r = (name: string): NativeTensorRef => [f, prefix + name];
    tensors = {
      patchEmbed: r('patch_embed.proj.weight'), classEmbed: r('cls_token'), posEmbed: r('pos_embed'),
      ...(preNorm ? { preLnW: r('norm_pre.weight'), preLnB: r('norm_pre.bias') } : {}),
      patchBias: r('patch_embed.proj.bias'),
      ...hfProjector(),
      layers: Array.from({ length: v.layers }, (_, l) => {
        const b = (x: string) => r(`blocks.${l}.${x}`);
        return {
          ln1W: b('norm1.weight'), ln1B: b('norm1.bias'), qkvW: b('attn.qkv.weight'), qkvB: b('attn.qkv.bias'),
          oW: b('attn.proj.weight'), oB: b('attn.proj.bias'), ln2W: b('norm2.weight'), ln2B: b('norm2.bias'),
          fcAW: b('mlp.fc1.weight'), fcAB: b('mlp.fc1.bias'), fcBW: b('mlp.fc2.weight'), fcBB: b('mlp.fc2.bias'),
          ...(layerScale ? { ls1: b('ls1.gamma'), ls2: b('ls2.gamma') } : {}),
        };
      }),
    };
  } else if (spec.format === 'gguf') {
    const f = spec.files.visionTower;
    const r = (name: string): NativeTensorRef => [f, name];
    tensors = {
      patchEmbed: r('v.patch_embd.weight'), classEmbed: r('v.class_embd'), posEmbed: r('v.position_embd.weight'),
      preLnW: r('v.pre_ln.weight'), preLnB: r('v.pre_ln.bias'), proj0W: r('mm.0.weight'), proj0B: r('mm.0.bias'),
      ...(spec.projector.type === 'mlp2x_gelu' ? { proj2W: r('mm.2.weight'), proj2B: r('mm.2.bias') } : {}),
      layers: Array.from({ length: v.layers }, (_, l) => {
        const b = (x: string) => r(`v.blk.${l}.${x}`);
        return {
          ln1W: b('ln1.weight'), ln1B: b('ln1.bias'), qW: b('attn_q.weight'), qB: b('attn_q.bias'), kW: b('attn_k.weight'),
          kB: b('attn_k.bias'), vW: b('attn_v.weight'), vB: b('attn_v.bias'), oW: b('attn_out.weight'), oB: b('attn_out.bias'),
          ln2W: b('ln2.weight'), ln2B: b('ln2.bias'), fcAW: b('ffn_down.weight'), fcAB: b('ffn_down.bias'),
          fcBW: b('ffn_up.weight'), fcBB: b('ffn_up.bias'),
        };
      }),
    };
  } else {
    // the tower's own checkpoint, or its weights saved inside the LLaVA checkpoint
    const embedded = 'model.vision_tower.vision_tower.vision_model.embeddings.class_embedding' in spec.files.weights;
    let file = '';
    if (!embedded) {
      const dir = spec.files.visionTower;
      file = statSync(dir).isDirectory()
        ? ['model.safetensors', 'pytorch_model.bin'].map((x) => join(dir, x)).find(existsSync) ?? '' : dir;
      if (!file) throw medllavaError('E_IO', `${dir} holds no model.safetensors or pytorch_model.bin`);
    }
    const r = (name: string): NativeTensorRef => {
      if (!embedded) return [file, `vision_model.${name}`];
      const full = `model.vision_tower.vision_tower.vision_model.${name}`;
      const f = spec.files.weights[full];
      if (!f) throw medllavaError('E_FORMAT', `the checkpoint has no tensor ${full}`);
      return [f, full];
    };
    const proj = hfProjector();
    tensors = {
      patchEmbed: r('embeddings.patch_embedding.weight'), classEmbed: r('embeddings.class_embedding'),
      posEmbed: r('embeddings.position_embedding.weight'), preLnW: r('pre_layrnorm.weight'), preLnB: r('pre_layrnorm.bias'),
      ...proj,
      layers: Array.from({ length: v.layers }, (_, l) => {
        const b = (x: string) => r(`encoder.layers.${l}.${x}`);
        return {
          ln1W: b('layer_norm1.weight'), ln1B: b('layer_norm1.bias'), qW: b('self_attn.q_proj.weight'), qB: b('self_attn.q_proj.bias'),
          kW: b('self_attn.k_proj.weight'), kB: b('self_attn.k_proj.bias'), vW: b('self_attn.v_proj.weight'), vB: b('self_attn.v_proj.bias'),
          oW: b('self_attn.out_proj.weight'), oB: b('self_attn.out_proj.bias'), ln2W: b('layer_norm2.weight'), ln2B: b('layer_norm2.bias'),
          fcAW: b('mlp.fc1.weight'), fcAB: b('mlp.fc1.bias'), fcBW: b('mlp.fc2.weight'), fcBB: b('mlp.fc2.bias'),
        };
      }),
    };
  }
  const config: NativeVisionConfig = {
    imageSize: v.imageSize, patchSize: v.patchSize, hidden: v.hidden, layers: v.layers, heads: v.heads, ffn: v.ffn,
    layerNormEps: v.layerNormEps, activation: v.activation, selectLayer: v.selectLayer, selectFeature: v.selectFeature,
    projector: spec.projector.type, outDim: spec.projector.outDim,
  };
  return { config, tensors };
}
