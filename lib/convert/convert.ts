/**
 * `medllava convert`: an HF-layout LLaVA checkpoint (safetensors or PyTorch pickles; LLaVA-Med
 * v1.5 / v1.0, LLaVA-1.5, LLaVA-Rad with its LoRA merged) → a llama.cpp GGUF pair, or → a single
 * HF safetensors checkpoint. Tensors stream through one at a time.
 */
import { copyFile, mkdir } from 'node:fs/promises';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { medllavaError } from '../errors.js';
import { loadModelSpec, type ModelSpec } from '../model/spec.js';
import { native } from '../native.js';
import { loadTokenizer } from '../tokenizer/load.js';
import { SentencePieceTokenizer } from '../tokenizer/tokenizer.js';
import { writeLlavaGguf } from './gguf.js';

interface StoredTensor { name: string; dtype: string; shape: number[] }

/** Reads HF-named tensors as f32 from the files a spec names (prefix variants PEFT adds included). */
class TensorReader {
  private headers = new Map<string, Map<string, StoredTensor>>();

  private async header(file: string): Promise<Map<string, StoredTensor>> {
    let h = this.headers.get(file);
    if (!h) {
      const list = file.endsWith('.safetensors') ? (await native().readSafetensorsHeader(file)).tensors
        : (await native().readTorchCheckpoint(file)).tensors;
      h = new Map(list.map((t) => [t.name, { name: t.name, dtype: t.dtype, shape: t.shape }]));
      this.headers.set(file, h);
    }
    return h;
  }

  async read(file: string, name: string): Promise<{ shape: number[]; data: Float32Array }> {
    const h = await this.header(file);
    const stored = [name, `base_model.model.${name}`, `base_model.${name}`, `model.vision_tower.vision_tower.${name}`]
      .map((n) => h.get(n)).find(Boolean);
    if (!stored) throw medllavaError('E_FORMAT', `${file} has no tensor ${name}`);
    const bytes = file.endsWith('.safetensors') ? await native().readSafetensorsTensor(file, stored.name)
      : await native().readTorchTensor(file, stored.name);
    const n = stored.shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    if (stored.dtype === 'F32') data = new Float32Array(bytes.slice().buffer);
    else if (stored.dtype === 'F16' || stored.dtype === 'BF16') data = native().ggmlDequantize(stored.dtype, bytes, n);
    else throw medllavaError('E_UNSUPPORTED', `${file}: ${name} is ${stored.dtype}; weights must be F32, F16 or BF16`);
    return { shape: stored.shape, data };
  }
}

/** W + (alpha / r) · B · A for a LoRA target (W: out × in, A: r × in, B: out × r). */
export function mergeLora(w: Float32Array, a: Float32Array, b: Float32Array, out: number, inF: number, r: number,
  scale: number): Float32Array {
  const merged = Float32Array.from(w);
  for (let o = 0; o < out; o++) {
    for (let k = 0; k < r; k++) {
      const s = scale * b[o * r + k]!;
      if (s === 0) continue;
      const row = o * inF;
      const arow = k * inF;
      for (let i = 0; i < inF; i++) merged[row + i]! += s * a[arow + i]!;
    }
  }
  return merged;
}

function towerFile(spec: ModelSpec): string | undefined {
  const t = spec.files.visionTower;
  if (!statSync(t).isDirectory()) return t;
  for (const f of ['model.safetensors', 'pytorch_model.bin']) if (existsSync(join(t, f))) return join(t, f);
  return undefined;
}

export interface ConvertOptions {
  model: string;
  to: 'gguf' | 'safetensors';
  out: string;
  /** gguf: F16 (default), F32, BF16, Q8_0, Q4_0; safetensors: BF16 (default), F16, F32 */
  quant?: string;
  visionTower?: string;
  baseModel?: string;
  onProgress?: (message: string) => void;
}

export async function convertModel(o: ConvertOptions): Promise<Record<string, string>> {
  const progress = o.onProgress ?? (() => {});
  const spec = await loadModelSpec(o.model, { visionTower: o.visionTower, baseModel: o.baseModel });
  if (spec.format !== 'hf') throw medllavaError('E_UNSUPPORTED', 'convert reads HF checkpoints; this source is already GGUF');
  const reader = new TensorReader();
  const loraScale = spec.lora ? spec.lora.alpha / spec.lora.r : 0;
  const lora = spec.lora;
  const tensor = async (name: string) => {
    const file = spec.files.weights[name];
    if (name.startsWith('vision_model.')) {
      const embedded = spec.files.weights[`model.vision_tower.vision_tower.${name}`];
      const f = embedded ?? towerFile(spec);
      if (!f) throw medllavaError('E_IO', `${spec.files.visionTower}: no vision weights`);
      return reader.read(f, name);
    }
    if (!file) throw medllavaError('E_FORMAT', `the checkpoint has no tensor ${name}`);
    const t = await reader.read(file, name);
    const m = /^model\.layers\.\d+\.(self_attn|mlp)\.(\w+)\.weight$/.exec(name);
    if (lora && m && lora.targetModules.includes(m[2]!)) {
      const base = `base_model.model.${name.replace(/\.weight$/, '')}`;
      const a = await reader.read(lora.file, `${base}.lora_A.weight`);
      const b = await reader.read(lora.file, `${base}.lora_B.weight`);
      const [out, inF] = t.shape as [number, number];
      return { shape: t.shape, data: mergeLora(t.data, a.data, b.data, out, inF, lora.r, loraScale) };
    }
    return t;
  };
  await mkdir(o.out, { recursive: true });
  if (o.to === 'gguf') {
    if (spec.vision.kind !== 'clip') {
      throw medllavaError('E_UNSUPPORTED', `llama.cpp's LLaVA mmproj cannot hold ${spec.family}'s vision tower (a timm ViT with ` +
        'LayerScale); convert it to safetensors instead');
    }
    const tok = await loadTokenizer(spec.files.tokenizer);
    if (!(tok instanceof SentencePieceTokenizer)) throw medllavaError('E_UNSUPPORTED', 'the tokenizer is not SentencePiece');
    const type = (o.quant ?? 'F16').toUpperCase();
    const paths = { llm: join(o.out, `ggml-model-${type.toLowerCase()}.gguf`), mmproj: join(o.out, 'mmproj-model-f16.gguf') };
    await writeLlavaGguf({
      name: spec.family, llm: spec.llm, vision: spec.vision, projector: spec.projector.type, tokenizer: tok.vocabulary(), tensor,
    }, paths, type, progress);
    return paths;
  }
  if (o.to !== 'safetensors') throw medllavaError('E_ARGUMENT', `--to must be gguf or safetensors, got '${String(o.to)}'`);
  const dtype = (o.quant ?? 'BF16').toUpperCase();
  if (!['BF16', 'F16', 'F32'].includes(dtype)) throw medllavaError('E_ARGUMENT', `safetensors dtype must be BF16, F16 or F32, got '${dtype}'`);
  const names = Object.keys(spec.files.weights).filter((n) => n.startsWith('model.') || n === 'lm_head.weight');
  const tensors = [];
  for (const name of names) {
    progress(name);
    const t = await tensor(name);
    const data = dtype === 'F32' ? t.data : new Uint16Array(native().ggmlQuantize(dtype, t.data).buffer);
    tensors.push({ name, dtype, shape: t.shape, data });
  }
  const file = join(o.out, 'model.safetensors');
  progress(`writing ${file}`);
  await native().writeSafetensors(file, tensors, { format: 'pt' });
  // beside the weights: the config and the tokenizer files, so the directory is a checkpoint again
  const cfgDir = existsSync(join(o.model, 'config.json')) ? o.model : spec.files.tokenizer;
  await copyFile(join(cfgDir, 'config.json'), join(o.out, 'config.json'));
  for (const f of readdirSync(spec.files.tokenizer)) {
    if (/^(tokenizer\.model|tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|added_tokens\.json)$/.test(f)) {
      await copyFile(join(spec.files.tokenizer, f), join(o.out, f));
    }
  }
  return { dir: o.out, weights: file };
}
