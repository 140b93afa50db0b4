/**
 * What a training stage leaves behind, in the layouts the LLaVA ecosystem reads (and loadModel reads back):
 *   - 'align'   → config.json + mm_projector.safetensors (the trained projector; the rest is the base
 *                 checkpoint, named by config `_name_or_path`), as LLaVA's stage 1 saves mm_projector.bin;
 *   - 'instruct' / 'finetune' / 'full' → an HF LLaVA directory: model.safetensors (trained tensors f32, the
 *                 others in their stored type), config.json, the tokenizer files;
 *   - 'lora'    → a PEFT adapter (adapter_config.json + adapter_model.safetensors) and non_lora_trainables.bin
 *                 (the projector, PyTorch pickle as LLaVA-Rad ships it) beside config.json; also 'align' on a
 *                 model that is an adapter over a plain LLM (LLaVA-Rad), its adapter unchanged.
 * Every file is written atomically (temp file, fsync, rename); a checkpoint directory is built under a temporary
 * name and renamed into place only when complete (writeCheckpointDir).
 */
import { closeSync, copyFileSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync,
  statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

import { medllavaError } from '../errors.js';
import { writeTorchCheckpoint } from '../fixtures/torch-writer.js';
import { commit, tmpBeside, writeFileAtomic } from '../util/files.js';
import { modelInternals, type Model } from '../model/model.js';
import { native } from '../native.js';
import type { TrainingStage } from './trainer.js';

export { writeFileAtomic };

function copyAtomic(from: string, to: string): void {
  const tmp = tmpBeside(to);
  copyFileSync(from, tmp);
  commit(tmp, to);
}

function fsyncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try { fsyncSync(fd); } finally { closeSync(fd); }
  } catch { /* directories cannot be fsynced on every platform */ }
}

/**
 * Builds a checkpoint directory completely under a temporary name beside `dir`, then renames it into place;
 * an old `dir` is moved aside first and removed only once the new one is in place. A process killed at any
 * moment leaves either the old directory or the new one complete (plus a `.tmp` leftover that the next
 * write clears).
 */
export async function writeCheckpointDir(dir: string, fill: (tmp: string) => Promise<void>): Promise<void> {
  const parent = dirname(resolve(dir));
  mkdirSync(parent, { recursive: true });
  const tmp = join(parent, `.${basename(dir)}.tmp`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  await fill(tmp);
  fsyncDir(tmp);
  const old = join(parent, `.${basename(dir)}.old`);
  rmSync(old, { recursive: true, force: true });
  if (existsSync(dir)) renameSync(dir, old);
  renameSync(tmp, dir);
  fsyncDir(parent);
  rmSync(old, { recursive: true, force: true });
}

const TOKENIZER_FILES = /^(tokenizer\.model|tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|added_tokens\.json|generation_config\.json)$/;

/** Where the model's LLM weights come from (the directory holding model.embed_tokens.weight). */
export function llmSourceDir(model: Model): string {
  const spec = modelInternals(model).spec;
  if (spec.lora) return spec.lora.baseModel;
  const f = spec.files.weights['model.embed_tokens.weight'];
  if (!f) throw medllavaError('E_FORMAT', 'the model has no model.embed_tokens.weight');
  return dirname(resolve(f));
}

/** The LLaVA config.json the output carries: the source's, with the vision tower resolved to where it was found. */
function outputConfig(model: Model, source: string): Record<string, unknown> {
  const spec = modelInternals(model).spec;
  const cfgPath = join(source, 'config.json');
  const cfg = JSON.parse(readFileSync(cfgPath, 'utf8')) as Record<string, unknown>;
  const tower = spec.files.visionTower;
  // an external tower (not this checkpoint's own embedded weights) is named by its absolute path, so the
  // output finds it wherever it is written
  if (tower && resolve(tower) !== resolve(source) && !spec.files.weights['model.vision_tower.vision_tower.vision_model.embeddings.class_embedding']) {
    cfg['mm_vision_tower'] = resolve(tower);
  }
  return cfg;
}

/** Checks, before any training, that `stage`'s output can be written for this model. */
export function checkWritable(model: Model, stage: TrainingStage): void {
  const spec = modelInternals(model).spec;
  if (spec.format !== 'hf') {
    throw medllavaError('E_UNSUPPORTED', 'training writes HF / PEFT checkpoints, which need the source\'s HF config: train from an HF ' +
      'LLaVA checkpoint (a GGUF pair has none)');
  }
  if ((stage === 'instruct' || stage === 'finetune' || stage === 'full') && spec.lora) {
    throw medllavaError('E_UNSUPPORTED', `stage '${stage}' trains the whole LLM, but this model is a LoRA adapter over ${spec.lora.baseModel}: ` +
      "train stage 'lora' (or merge it first: medllava convert --to safetensors)");
  }
  if (stage === 'full' && spec.vision.kind !== 'clip') {
    throw medllavaError('E_UNSUPPORTED', `stage 'full' writes the vision tower into an HF LLaVA checkpoint, which holds CLIP towers only ` +
      `(this model's is ${spec.vision.kind})`);
  }
}

async function readRaw(file: string, name: string): Promise<Uint8Array> {
  return file.endsWith('.safetensors') ? native().readSafetensorsTensor(file, name) : native().readTorchTensor(file, name);
}

async function storedInfo(file: string): Promise<Map<string, { dtype: string; shape: number[] }>> {
  const list = file.endsWith('.safetensors') ? (await native().readSafetensorsHeader(file)).tensors
    : (await native().readTorchCheckpoint(file)).tensors;
  return new Map(list.map((t) => [t.name, { dtype: t.dtype, shape: t.shape }]));
}

/** Writes `stage`'s model output into `dir` (an existing, empty-enough directory). */
export async function writeStageOutput(model: Model, stage: TrainingStage, dir: string, meta: Record<string, unknown> = {}): Promise<void> {
  const m = modelInternals(model);
  const spec = m.spec;
  const parts = m.trainingParts();
  const tables = [{ t: parts.llm, vision: false }, ...(parts.vision ? [{ t: parts.vision, vision: true }] : [])];
  const params = tables.flatMap(({ t, vision }) => t.parameters().map((p) => ({ ...p, table: t, vision })));
  const llmDir = llmSourceDir(model);
  // the LLaVA config: the adapter's own beside it, else the checkpoint holding the LLM (a projector-only source's base)
  const adapterDir = spec.lora ? dirname(resolve(spec.lora.file)) : undefined;
  const cfgDir = adapterDir && existsSync(join(adapterDir, 'config.json')) ? adapterDir : llmDir;
  const cfg = outputConfig(model, cfgDir);
  // the projector under its canonical names (a LLaVA-Rad table names it as its file did: base_model.model.model.mm_projector.*)
  const canonical = (name: string) => name.replace(/^base_model\.(model\.)?(?=model\.mm_projector\.)/, '');
  const projector = params.filter((p) => canonical(p.name).startsWith('model.mm_projector.'));
  const f32 = async (p: (typeof params)[number]) => ({ name: canonical(p.name), dtype: 'F32', shape: p.shape, data: await p.table.readParameter(p.name) });
  // a model that is an adapter over a plain LLM (LLaVA-Rad) keeps that layout whatever trained: its projector
  // goes to non_lora_trainables.bin beside the (possibly unchanged) adapter
  if (stage === 'align' && spec.lora) stage = 'lora';
  if (stage === 'align') {
    cfg['_name_or_path'] = llmDir;  // the LLaVA checkpoint whose projector this one replaces
    cfg['medllava'] = { stage, ...meta };
    await native().writeSafetensors(join(dir, 'mm_projector.safetensors'), await Promise.all(projector.map(f32)), { format: 'pt' });
    writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify(cfg, null, 2)}\n`);
    return;
  }
  if (stage === 'lora') {
    const lora = params.filter((p) => /\.lora_[AB]\.weight$/.test(p.name));
    if (lora.length === 0) throw medllavaError('E_ARGUMENT', 'the model has no LoRA adapters to save');
    const targets = [...new Set(lora.map((p) => /\.(\w+)\.lora_[AB]\.weight$/.exec(p.name)![1]!))];
    const a0 = lora.find((p) => p.name.endsWith('lora_A.weight'))!;
    const r = a0.shape[0]!;
    const alpha = spec.lora?.alpha ?? (meta['loraAlpha'] as number | undefined) ?? 2 * r;
    const adapter = {
      peft_type: 'LORA', task_type: 'CAUSAL_LM', base_model_name_or_path: llmDir, r, lora_alpha: alpha,
      lora_dropout: (meta['loraDropout'] as number | undefined) ?? 0.05, target_modules: targets, bias: 'none',
      fan_in_fan_out: false, inference_mode: true, modules_to_save: null, init_lora_weights: true,
    };
    await native().writeSafetensors(join(dir, 'adapter_model.safetensors'), await Promise.all(lora.map(f32)), { format: 'pt' });
    const proj = await Promise.all(projector.map(f32));
    await writeTorchCheckpoint(join(dir, 'non_lora_trainables.bin'),
      proj.map((t) => ({ name: `base_model.model.${t.name}`, dtype: 'F32' as const, shape: t.shape, data: t.data })));
    writeFileAtomic(join(dir, 'adapter_config.json'), `${JSON.stringify(adapter, null, 2)}\n`);
    if (spec.family === 'llava-rad') cfg['mm_vision_tower'] = resolve(spec.files.visionTower);
    cfg['medllava'] = { stage, ...meta };
    writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify(cfg, null, 2)}\n`);
    for (const f of readdirSync(spec.files.tokenizer)) {
      if (TOKENIZER_FILES.test(f)) copyAtomic(join(spec.files.tokenizer, f), join(dir, f));
    }
    return;
  }
  // a whole HF LLaVA checkpoint: every LLM tensor and the projector; the tower when it trained (else named by path)
  const tensors: { name: string; dtype: string; shape: number[]; data: ArrayBufferView }[] = [];
  const byName = new Map(params.map((p) => [p.name, p]));
  const infoCache = new Map<string, Map<string, { dtype: string; shape: number[] }>>();
  const info = async (file: string) => {
    let i = infoCache.get(file);
    if (!i) infoCache.set(file, i = await storedInfo(file));
    return i;
  };
  const names = Object.keys(spec.files.weights).filter((n) => n.startsWith('model.') || n === 'lm_head.weight');
  const towerTrained = params.some((p) => p.vision && p.trainable && !p.name.startsWith('model.mm_projector.'));
  for (const name of names) {
    const file = spec.files.weights[name]!;
    const stored = spec.files.storedNames?.[name] ?? name;
    const p = byName.get(stored) ?? byName.get(name);
    if (p && (p.trainable || name.startsWith('model.mm_projector.'))) {
      tensors.push(await f32(p));
      continue;
    }
    const si = (await info(file)).get(stored);
    if (!si) throw medllavaError('E_FORMAT', `${file}: no tensor ${stored}`);
    tensors.push({ name, dtype: si.dtype, shape: si.shape, data: await readRaw(file, stored) });
  }
  if (towerTrained && !names.some((n) => n.startsWith('model.vision_tower.'))) {
    // the tower came from its own directory: written into the checkpoint (trained values f32, the layers
    // LLaVA does not read copied as stored), as LLaVA's own full checkpoints carry it
    const tower = spec.files.visionTower;
    const file = ['model.safetensors', 'pytorch_model.bin'].map((f) => join(tower, f)).find(existsSync);
    if (!file) throw medllavaError('E_IO', `${tower}: no model.safetensors or pytorch_model.bin to copy the tower from`);
    for (const [stored, si] of await info(file)) {
      if (!stored.startsWith('vision_model.')) continue;
      const name = `model.vision_tower.vision_tower.${stored}`;
      const p = byName.get(stored);
      tensors.push(p?.trainable ? { ...(await f32(p)), name } : { name, dtype: si.dtype, shape: si.shape, data: await readRaw(file, stored) });
    }
  }
  cfg['medllava'] = { stage, ...meta };
  await native().writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify(cfg, null, 2)}\n`);
  for (const f of readdirSync(spec.files.tokenizer)) {
    if (TOKENIZER_FILES.test(f) && statSync(join(spec.files.tokenizer, f)).isFile()) copyAtomic(join(spec.files.tokenizer, f), join(dir, f));
  }
}
