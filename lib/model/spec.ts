/**
 * Checkpoint discovery: a source path (an HF LLaVA directory, a .gguf file, or a directory of
 * *.gguf + mmproj*.gguf) → ModelSpec: family, vision tower, projector, LLM hyper-parameters,
 * tokenizer, default template, and the files that hold each part. Every hyper-parameter read from
 * a config is checked against the tensor shapes it must agree with. Nothing touches the network.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, join } from 'node:path';

import { medllavaError } from '../errors.js';
import { native, type GgufHeader, type SafetensorsHeader } from '../native.js';
import { readJsonFile } from '../util/json.js';

export type ModelFamily = 'llava-med-v1.5' | 'llava-med-v1' | 'llava-rad' | 'llava-1.5';

export interface ModelSpec {
  family: ModelFamily;
  format: 'hf' | 'gguf';
  vision: {
    /** OpenAI CLIP (HF CLIPVisionModel names, pre-LN, quick_gelu) or a timm ViT (open_clip's BiomedCLIP: LayerScale, GELU) */
    kind: 'clip' | 'timm-vit';
    imageSize: number; patchSize: number; hidden: number; layers: number; heads: number; ffn: number;
    /** LLaVA's mm_vision_select_layer: -2 = the second-to-last layer's output */
    selectLayer: number;
    /** 'patch' drops the class token, 'cls_patch' keeps it */
    selectFeature: 'patch' | 'cls_patch';
    layerNormEps: number;
    activation: 'quick_gelu' | 'gelu';
    imageMean: number[]; imageStd: number[];
    /** HF's CLIPImageProcessor (centre crop offset floored) or open_clip's torchvision transform (rounded half to even) */
    preprocessor: 'clip' | 'open_clip';
    /** timm towers: the trunk's name prefix in its file, LayerScale, pre-norm (norm_pre) */
    timm?: { prefix: string; layerScale: boolean; preNorm: boolean };
  };
  projector: { type: 'linear' | 'mlp2x_gelu'; inDim: number; outDim: number };
  llm: {
    arch: 'llama' | 'mistral';
    hidden: number; layers: number; heads: number; kvHeads: number; ffn: number; vocab: number;
    ropeTheta: number; rmsEps: number; contextLength: number; tieEmbeddings: boolean;
  };
  template: string;
  imageAspectRatio: 'pad' | 'square' | 'anyres';
  mmUseImStartEnd: boolean;
  /** LLaVA-Rad ships its LLM as a LoRA adapter over a base model: W' = W + (alpha / r) · B · A */
  lora?: { r: number; alpha: number; targetModules: string[]; file: string; baseModel: string };
  files: {
    /** tensor name → file, for every LLM + projector tensor (HF names, or GGUF names for gguf) */
    weights: Record<string, string>;
    /** canonical name → the name stored in the file, where they differ (LLaVA-Rad's base_model.model.… projector) */
    storedNames?: Record<string, string>;
    visionTower: string;
    tokenizer: string;
  };
}

/** OpenAI CLIP's normalisation (preprocessor_config.json of every CLIP checkpoint LLaVA uses). */
export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711];

async function readJson(path: string): Promise<Record<string, unknown>> {
  const v = await readJsonFile(path);
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw medllavaError('E_FORMAT', `${path} is not a JSON object`);
  return v as Record<string, unknown>;
}

function num(cfg: Record<string, unknown>, key: string, where: string, dflt?: number): number {
  const v = cfg[key];
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (v === undefined && dflt !== undefined) return dflt;
  throw medllavaError('E_FORMAT', `${where}: '${key}' must be a number${v === undefined ? ' (missing)' : `, got ${JSON.stringify(v)}`}`);
}

type Shapes = Map<string, { shape: number[]; file: string }>;

/** Tensor shapes of an HF checkpoint: model.safetensors, sharded safetensors with an index, or
 * PyTorch pickles (pytorch_model.bin, or shards with pytorch_model.bin.index.json). */
async function weightShapes(dir: string): Promise<Shapes> {
  const shapes: Shapes = new Map();
  const add = (h: Pick<SafetensorsHeader, 'tensors'>, file: string) => {
    for (const t of h.tensors) shapes.set(t.name, { shape: t.shape, file });
  };
  const read = (path: string) => (path.endsWith('.bin') || path.endsWith('.pt')
    ? native().readTorchCheckpoint(path) : native().readSafetensorsHeader(path));
  const index = ['model.safetensors.index.json', 'pytorch_model.bin.index.json'].map((f) => join(dir, f)).find(existsSync);
  if (index) {
    const idx = await readJson(index);
    const map = idx['weight_map'] as Record<string, string> | undefined;
    if (!map || typeof map !== 'object') throw medllavaError('E_FORMAT', `${index}: no weight_map`);
    for (const file of new Set(Object.values(map))) {
      const path = join(dir, file);
      if (!existsSync(path)) throw medllavaError('E_IO', `${index} names ${file}, which is missing`);
      add(await read(path), path);
    }
    for (const name of Object.keys(map)) {
      if (!shapes.has(name)) throw medllavaError('E_FORMAT', `${index} maps ${name} to ${map[name]}, which does not hold it`);
    }
    return shapes;
  }
  const single = join(dir, 'model.safetensors');
  if (existsSync(single)) {
    add(await native().readSafetensorsHeader(single), single);
    return shapes;
  }
  const bin = join(dir, 'pytorch_model.bin');
  if (existsSync(bin)) {
    add(await read(bin), bin);
    return shapes;
  }
  throw medllavaError('E_IO', `${dir} has no model.safetensors, pytorch_model.bin or a shard index`);
}

function expectShape(shapes: Shapes, name: string, want: number[], where: string) {
  const t = shapes.get(name);
  if (!t) throw medllavaError('E_FORMAT', `${where}: tensor ${name} is missing`);
  if (t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i])) {
    throw medllavaError('E_SHAPE', `${where}: ${name} has shape [${t.shape}], the config implies [${want}]`);
  }
}


/** LLM hyper-parameters from an HF config, checked against every tensor's shape. */
function llmFromConfig(cfg: Record<string, unknown>, cfgPath: string, shapes: Shapes, dir: string,
  arch: 'llama' | 'mistral', prefix = ''): ModelSpec['llm'] {
  const llm = {
    arch,
    hidden: num(cfg, 'hidden_size', cfgPath), layers: num(cfg, 'num_hidden_layers', cfgPath),
    heads: num(cfg, 'num_attention_heads', cfgPath), kvHeads: num(cfg, 'num_key_value_heads', cfgPath, num(cfg, 'num_attention_heads', cfgPath)),
    ffn: num(cfg, 'intermediate_size', cfgPath), vocab: num(cfg, 'vocab_size', cfgPath),
    ropeTheta: num(cfg, 'rope_theta', cfgPath, 10000), rmsEps: num(cfg, 'rms_norm_eps', cfgPath, 1e-6),
    contextLength: num(cfg, 'max_position_embeddings', cfgPath, 2048), tieEmbeddings: cfg['tie_word_embeddings'] === true,
  };
  const hd = llm.hidden / llm.heads;
  if (!Number.isInteger(hd) || llm.heads % llm.kvHeads) throw medllavaError('E_FORMAT', `${cfgPath}: heads / kv heads do not divide`);
  const x = (name: string, want: number[]) => expectShape(shapes, prefix + name, want, dir);
  x('model.embed_tokens.weight', [llm.vocab, llm.hidden]);
  for (let l = 0; l < llm.layers; l++) {
    const p = `model.layers.${l}`;
    x(`${p}.self_attn.q_proj.weight`, [llm.heads * hd, llm.hidden]);
    x(`${p}.self_attn.k_proj.weight`, [llm.kvHeads * hd, llm.hidden]);
    x(`${p}.self_attn.v_proj.weight`, [llm.kvHeads * hd, llm.hidden]);
    x(`${p}.self_attn.o_proj.weight`, [llm.hidden, llm.heads * hd]);
    x(`${p}.mlp.gate_proj.weight`, [llm.ffn, llm.hidden]);
    x(`${p}.mlp.up_proj.weight`, [llm.ffn, llm.hidden]);
    x(`${p}.mlp.down_proj.weight`, [llm.hidden, llm.ffn]);
    x(`${p}.input_layernorm.weight`, [llm.hidden]);
    x(`${p}.post_attention_layernorm.weight`, [llm.hidden]);
  }
  x('model.norm.weight', [llm.hidden]);
  if (!llm.tieEmbeddings) x('lm_head.weight', [llm.vocab, llm.hidden]);
  return llm;
}

/** Local places an HF repo name may live: as a path, beside the checkpoint, in the HF cache. */
function findLocal(name: string, explicit: string | undefined, checkpoint: string, what: string, option: string,
  isIt: (d: string) => boolean): string {
  if (explicit) {
    if (isIt(explicit)) return explicit;
    throw medllavaError('E_IO', `${option} ${explicit} is not a ${what}`);
  }
  const looked: string[] = [];
  for (const d of [name, join(checkpoint, name), join(dirname(checkpoint), basename(name))]) {
    looked.push(d);
    if (existsSync(d) && isIt(d)) return d;
  }
  for (const snaps of hfCacheCandidates(name)) {
    looked.push(`${snaps}/*`);
    if (!existsSync(snaps)) continue;
    for (const s of readdirSync(snaps)) if (isIt(join(snaps, s))) return join(snaps, s);
  }
  throw medllavaError('E_IO', `the ${what} '${name}' was not found locally (medllava never downloads); looked in: ` +
    `${looked.join(', ')}. Pass { ${option}: '<path>' }`);
}

/** Where an HF vision tower named like 'openai/clip-vit-large-patch14-336' can be found locally. */
function hfCacheCandidates(repo: string): string[] {
  const roots = [process.env['HF_HUB_CACHE'], process.env['HF_HOME'] && join(process.env['HF_HOME'], 'hub'),
    join(homedir(), '.cache', 'huggingface', 'hub')].filter((x): x is string => !!x);
  const out: string[] = [];
  for (const root of roots) {
    const snaps = join(root, `models--${repo.replace('/', '--')}`, 'snapshots');
    out.push(snaps);
  }
  return out;
}

function findVisionTower(name: string, explicit: string | undefined, checkpoint: string): string {
  return findLocal(name, explicit, checkpoint, 'vision tower', 'visionTower',
    (d) => statSync(d).isDirectory() && existsSync(join(d, 'config.json')));
}

const EMBEDDED = 'model.vision_tower.vision_tower.vision_model.';

/** CLIP hyper-parameters from the shapes of tower weights saved inside a LLaVA checkpoint
 * (OpenAI CLIP: 64-wide heads, quick_gelu, LayerNorm eps 1e-5). */
function clipVisionFromShapes(shapes: Shapes, where: string) {
  const get = (n: string) => {
    const t = shapes.get(EMBEDDED + n);
    if (!t) throw medllavaError('E_FORMAT', `${where}: embedded vision tower lacks ${n}`);
    return t.shape;
  };
  const hidden = get('embeddings.class_embedding')[0]!;
  const patch = get('embeddings.patch_embedding.weight');
  const positions = get('embeddings.position_embedding.weight')[0]!;
  let layers = 0;
  while (shapes.has(`${EMBEDDED}encoder.layers.${layers}.self_attn.q_proj.weight`)) layers++;
  const grid = Math.sqrt(positions - 1);
  if (!Number.isInteger(grid) || patch.length !== 4 || layers === 0) throw medllavaError('E_FORMAT', `${where}: embedded vision tower has unexpected shapes`);
  if (hidden % 64) {
    throw medllavaError('E_FORMAT', `${where}: the embedded vision tower's head count cannot be inferred (width ${hidden} is not a ` +
      "multiple of CLIP's 64-wide heads) and its config was not found; pass { visionTower }");
  }
  return {
    imageSize: grid * patch[2]!, patchSize: patch[2]!, hidden, layers, heads: hidden / 64,
    ffn: get('encoder.layers.0.mlp.fc1.weight')[0]!, layerNormEps: 1e-5, activation: 'quick_gelu' as const,
    imageMean: CLIP_MEAN, imageStd: CLIP_STD,
  };
}

async function clipVision(dir: string) {
  const cfgPath = join(dir, 'config.json');
  const cfg = await readJson(cfgPath);
  const v = (cfg['vision_config'] as Record<string, unknown> | undefined) ?? cfg;
  const where = `${cfgPath} vision_config`;
  const pre = join(dir, 'preprocessor_config.json');
  const pp = existsSync(pre) ? await readJson(pre) : {};
  const act = (v['hidden_act'] as string | undefined) ?? 'quick_gelu';
  if (act !== 'quick_gelu' && act !== 'gelu') throw medllavaError('E_UNSUPPORTED', `${where}: hidden_act '${act}'`);
  return {
    imageSize: num(v, 'image_size', where), patchSize: num(v, 'patch_size', where), hidden: num(v, 'hidden_size', where),
    layers: num(v, 'num_hidden_layers', where), heads: num(v, 'num_attention_heads', where),
    ffn: num(v, 'intermediate_size', where), layerNormEps: num(v, 'layer_norm_eps', where, 1e-5),
    activation: act as 'quick_gelu' | 'gelu',
    imageMean: (pp['image_mean'] as number[] | undefined) ?? CLIP_MEAN,
    imageStd: (pp['image_std'] as number[] | undefined) ?? CLIP_STD,
  };
}

async function hfSpec(dir: string, options: { visionTower?: string }): Promise<ModelSpec> {
  const cfgPath = join(dir, 'config.json');
  const cfg = await readJson(cfgPath);
  const modelType = cfg['model_type'];
  if (modelType !== 'llava_mistral' && modelType !== 'llava_llama' && modelType !== 'llava') {
    throw medllavaError('E_UNSUPPORTED', `${cfgPath}: model_type '${String(modelType)}' is not a LLaVA model ` +
      '(expected llava_mistral, llava_llama or llava)');
  }
  const shapes = await weightShapes(dir);
  const llm = llmFromConfig(cfg, cfgPath, shapes, dir, modelType === 'llava_mistral' ? 'mistral' : 'llama');
  const mmHidden = num(cfg, 'mm_hidden_size', cfgPath);
  const ptype = (cfg['mm_projector_type'] as string | undefined) ?? 'linear';
  if (ptype !== 'linear' && ptype !== 'mlp2x_gelu') throw medllavaError('E_UNSUPPORTED', `${cfgPath}: mm_projector_type '${ptype}'`);
  if (ptype === 'linear') expectShape(shapes, 'model.mm_projector.weight', [llm.hidden, mmHidden], dir);
  else {
    expectShape(shapes, 'model.mm_projector.0.weight', [llm.hidden, mmHidden], dir);
    expectShape(shapes, 'model.mm_projector.2.weight', [llm.hidden, llm.hidden], dir);
  }

  const towerName = (cfg['mm_vision_tower'] as string | undefined) ?? (cfg['vision_tower'] as string | undefined);
  if (!towerName) throw medllavaError('E_FORMAT', `${cfgPath}: no mm_vision_tower`);
  // the tower's weights may be saved inside the checkpoint; its config then still comes from the tower
  // repo when it is local, and otherwise from the embedded tensors' shapes
  const embedded = shapes.has(`${EMBEDDED}embeddings.class_embedding`);
  let tower: string;
  let vis: Awaited<ReturnType<typeof clipVision>>;
  if (embedded && !options.visionTower) {
    let found: string | undefined;
    try {
      found = findVisionTower(towerName, undefined, dir);
    } catch {
      found = undefined;
    }
    tower = dir;
    vis = found ? await clipVision(found) : clipVisionFromShapes(shapes, dir);
  } else {
    tower = findVisionTower(towerName, options.visionTower, dir);
    vis = await clipVision(tower);
  }
  if (vis.hidden !== mmHidden) {
    throw medllavaError('E_SHAPE', `${tower}: the vision tower is ${vis.hidden} wide; ${cfgPath} says mm_hidden_size ${mmHidden}`);
  }
  const sel = (cfg['mm_vision_select_feature'] as string | undefined) ?? 'patch';
  if (sel !== 'patch' && sel !== 'cls_patch') throw medllavaError('E_UNSUPPORTED', `${cfgPath}: mm_vision_select_feature '${sel}'`);
  const aspect = (cfg['image_aspect_ratio'] as string | undefined) ?? 'square';
  const family: ModelFamily = modelType === 'llava_mistral' ? 'llava-med-v1.5'
    : cfg['mm_use_im_start_end'] === true && ptype === 'linear' ? 'llava-med-v1' : 'llava-1.5';
  const template = family === 'llava-med-v1.5' ? 'mistral_instruct' : family === 'llava-med-v1' ? 'llava_med_v1' : 'llava_v1';
  const weights: Record<string, string> = {};
  for (const [name, t] of shapes) weights[name] = t.file;
  return {
    family, format: 'hf',
    vision: { kind: 'clip', ...vis, selectLayer: num(cfg, 'mm_vision_select_layer', cfgPath, -2), selectFeature: sel, preprocessor: 'clip' },
    projector: { type: ptype, inDim: mmHidden, outDim: llm.hidden },
    llm, template,
    imageAspectRatio: aspect === 'pad' || aspect === 'anyres' ? aspect : 'square',
    mmUseImStartEnd: cfg['mm_use_im_start_end'] === true,
    files: { weights, visionTower: tower, tokenizer: dir },
  };
}

/** Heads of timm ViTs whose head width is not 64 (every other timm ViT, BiomedCLIP's included, has 64-wide heads). */
const TIMM_HEADS: Record<string, number> = { vit_huge: 16, vit_giant: 16, vit_gigantic: 16 };

/**
 * BiomedCLIP-CXR (open_clip + timm ViT). Its JSON names only the timm model and the image size
 * (`{"timm_model_name": "vit_base_patch14_dinov2.lvd142m", "image_size": 518}`): width, patch and
 * depth come from the checkpoint's shapes, heads from `vision_cfg.heads` or the timm name, LayerScale
 * from the presence of `ls1.gamma`, a pre-norm from `norm_pre`. The .pt is a state dict or an
 * open_clip training checkpoint (`state_dict`, DDP's `module.` prefix); the trunk is found by name.
 */
async function timmVision(ptPath: string) {
  const jsonPath = ptPath.replace(/\.(pt|bin)$/, '.json');
  if (!existsSync(jsonPath)) throw medllavaError('E_IO', `${ptPath}: its open_clip config ${jsonPath} is missing`);
  const cfg = await readJson(jsonPath);
  const v = cfg['vision_cfg'] as Record<string, unknown> | undefined;
  if (!v) throw medllavaError('E_FORMAT', `${jsonPath}: no vision_cfg`);
  const where = `${jsonPath} vision_cfg`;
  const timmName = String(v['timm_model_name'] ?? '');
  if (!timmName.startsWith('vit_')) {
    throw medllavaError('E_UNSUPPORTED', `${where}: timm_model_name '${timmName}' is not a timm ViT (vit_*)`);
  }
  const sz = Array.isArray(v['image_size']) ? (v['image_size'] as unknown[]) : [v['image_size']];
  if (sz.length > 2 || sz.some((x) => x !== sz[0]) || typeof sz[0] !== 'number') {
    throw medllavaError('E_UNSUPPORTED', `${where}: image_size must be one number (square images), got ${JSON.stringify(v['image_size'])}`);
  }
  const imageSize = sz[0];
  const shapes: Shapes = new Map();
  const names: string[] = [];
  for (const t of (await native().readTorchCheckpoint(ptPath)).tensors) {
    shapes.set(t.name, { shape: t.shape, file: ptPath });
    names.push(t.name);
  }
  const anchor = names.find((x) => x.endsWith('visual.trunk.patch_embed.proj.weight'))
    ?? names.find((x) => x.endsWith('trunk.patch_embed.proj.weight'));
  if (!anchor) throw medllavaError('E_FORMAT', `${ptPath}: no visual.trunk.patch_embed.proj.weight — not an open_clip timm ViT checkpoint`);
  const prefix = anchor.slice(0, -'patch_embed.proj.weight'.length);
  const shape = (name: string) => {
    const t = shapes.get(prefix + name);
    if (!t) throw medllavaError('E_FORMAT', `${ptPath}: tensor ${prefix + name} is missing`);
    return t.shape;
  };
  const pe = shape('patch_embed.proj.weight');
  if (pe.length !== 4 || pe[1] !== 3 || pe[2] !== pe[3]) throw medllavaError('E_SHAPE', `${ptPath}: ${anchor} has shape [${pe}], expected (width, 3, p, p)`);
  const hidden = pe[0]!;
  const patchSize = pe[2]!;
  if (imageSize % patchSize) throw medllavaError('E_SHAPE', `${where}: image_size ${imageSize} is not a multiple of the patch ${patchSize}`);
  let layers = 0;
  while (shapes.has(`${prefix}blocks.${layers}.attn.qkv.weight`)) layers++;
  if (!layers) throw medllavaError('E_FORMAT', `${ptPath}: no ${prefix}blocks.0.attn.qkv.weight`);
  const family = /^vit_[a-z]+/.exec(timmName)![0];
  const heads = num(v, 'heads', where, TIMM_HEADS[family] ?? hidden / 64);
  if (!Number.isInteger(heads) || heads <= 0 || hidden % heads) {
    throw medllavaError('E_FORMAT', `${where}: ${hidden} wide with ${heads} heads; give vision_cfg.heads`);
  }
  if (shapes.has(`${prefix}reg_token`)) throw medllavaError('E_UNSUPPORTED', `${ptPath}: register tokens (timm *_reg* ViTs)`);
  const ffn = shape('blocks.0.mlp.fc1.weight')[0]!;
  const layerScale = shapes.has(`${prefix}blocks.0.ls1.gamma`);
  const n = (imageSize / patchSize) ** 2;
  const pos = shape('pos_embed');
  if (pos.length !== 3 || pos[1] !== n + 1 || pos[2] !== hidden) {
    throw medllavaError('E_SHAPE', `${ptPath}: ${prefix}pos_embed has shape [${pos}]; image_size ${imageSize} with patch ${patchSize} ` +
      `needs [1, ${n + 1}, ${hidden}] (position interpolation to other sizes is not supported)`);
  }
  expectShape(shapes, `${prefix}cls_token`, [1, 1, hidden], ptPath);
  for (let l = 0; l < layers; l++) {
    const b = `${prefix}blocks.${l}`;
    expectShape(shapes, `${b}.attn.qkv.weight`, [3 * hidden, hidden], ptPath);
    expectShape(shapes, `${b}.attn.proj.weight`, [hidden, hidden], ptPath);
    expectShape(shapes, `${b}.mlp.fc1.weight`, [ffn, hidden], ptPath);
    expectShape(shapes, `${b}.mlp.fc2.weight`, [hidden, ffn], ptPath);
    if (layerScale) {
      expectShape(shapes, `${b}.ls1.gamma`, [hidden], ptPath);
      expectShape(shapes, `${b}.ls2.gamma`, [hidden], ptPath);
    }
  }
  const pre = (cfg['preprocess_cfg'] as Record<string, unknown> | undefined) ?? {};
  return {
    imageSize, patchSize, hidden, layers, heads, ffn,
    // timm's ViT: LayerNorm(eps=1e-6), nn.GELU (exact) unless the model name says quickgelu
    layerNormEps: num(v, 'layer_norm_eps', where, 1e-6),
    activation: timmName.includes('quickgelu') ? 'quick_gelu' as const : 'gelu' as const,
    imageMean: (pre['mean'] as number[] | undefined) ?? CLIP_MEAN,
    imageStd: (pre['std'] as number[] | undefined) ?? CLIP_STD,
    timm: { prefix, layerScale, preNorm: shapes.has(`${prefix}norm_pre.weight`) },
  };
}

const PROJECTOR_FILES = ['mm_projector.safetensors', 'mm_projector.bin'];
const hasModelWeights = (d: string) => ['model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin',
  'pytorch_model.bin.index.json'].some((f) => existsSync(join(d, f)));
const isLlavaDir = (d: string) => statSync(d).isDirectory() && existsSync(join(d, 'config.json'))
  && (hasModelWeights(d) || PROJECTOR_FILES.some((f) => existsSync(join(d, f))));

/** The projector as a tensor map [canonical name → stored name] of a projector file (names with or without
 * PEFT's `base_model.model.` prefix), checked against the spec's projector shape. */
async function projectorTensors(file: string, spec: ModelSpec): Promise<Record<string, string>> {
  const list = file.endsWith('.safetensors') ? (await native().readSafetensorsHeader(file)).tensors
    : (await native().readTorchCheckpoint(file)).tensors;
  const shapes: Shapes = new Map(), stored: Record<string, string> = {};
  for (const t of list) {
    const canonical = t.name.replace(/^base_model\.(model\.)?/, '');
    shapes.set(canonical, { shape: t.shape, file });
    stored[canonical] = t.name;
  }
  const { inDim, outDim, type } = spec.projector;
  if (type === 'linear') expectShape(shapes, 'model.mm_projector.weight', [outDim, inDim], file);
  else {
    expectShape(shapes, 'model.mm_projector.0.weight', [outDim, inDim], file);
    expectShape(shapes, 'model.mm_projector.2.weight', [outDim, outDim], file);
  }
  return Object.fromEntries(Object.entries(stored).filter(([c]) => c.startsWith('model.mm_projector.')));
}

/** A stage-1 (align) output: config.json + mm_projector.safetensors / .bin and no LLM weights, over the LLaVA
 * checkpoint named by config `_name_or_path` (or `baseModel`), whose projector it replaces. */
async function projectorSpec(dir: string, file: string, options: { visionTower?: string; baseModel?: string }): Promise<ModelSpec> {
  const cfgPath = join(dir, 'config.json');
  const cfg = await readJson(cfgPath);
  const baseName = (cfg['_name_or_path'] as string | undefined) ?? '';
  const base = findLocal(baseName, options.baseModel, dir, 'base LLaVA checkpoint', 'baseModel', isLlavaDir);
  const spec = await loadModelSpec(base, { visionTower: options.visionTower });
  if (spec.format !== 'hf') throw medllavaError('E_UNSUPPORTED', `${dir}: the projector's base ${base} is not an HF LLaVA checkpoint`);
  const proj = await projectorTensors(file, spec);
  const weights = { ...spec.files.weights }, storedNames = { ...(spec.files.storedNames ?? {}) };
  for (const [canonical, stored] of Object.entries(proj)) {
    weights[canonical] = file;
    if (stored !== canonical) storedNames[canonical] = stored;
    else delete storedNames[canonical];
  }
  return { ...spec, files: { ...spec.files, weights, storedNames } };
}

/** A PEFT LoRA adapter (+ non_lora_trainables.bin) over a LLaVA checkpoint (what `train({ stage: 'lora' })` writes
 * for LLaVA-Med / LLaVA-1.5 models): the base's spec, its projector from non_lora_trainables, the adapter attached. */
async function llavaLoraSpec(dir: string, base: string, adapter: Record<string, unknown>, adapterPath: string,
  options: { visionTower?: string }): Promise<ModelSpec> {
  const spec = await loadModelSpec(base, { visionTower: options.visionTower });
  if (spec.format !== 'hf' || spec.lora) throw medllavaError('E_UNSUPPORTED', `${adapterPath}: the base ${base} is not a plain HF LLaVA checkpoint`);
  const r = num(adapter, 'r', adapterPath), alpha = num(adapter, 'lora_alpha', adapterPath);
  const targets = adapter['target_modules'] as string[];
  const adapterFile = ['adapter_model.safetensors', 'adapter_model.bin'].map((f) => join(dir, f)).find(existsSync);
  if (!adapterFile) throw medllavaError('E_IO', `${dir} has no adapter_model.safetensors or adapter_model.bin`);
  const list = adapterFile.endsWith('.bin') ? (await native().readTorchCheckpoint(adapterFile)).tensors
    : (await native().readSafetensorsHeader(adapterFile)).tensors;
  const loraShapes: Shapes = new Map(list.map((t) => [t.name, { shape: t.shape, file: adapterFile }]));
  const { hidden, heads, kvHeads, ffn } = spec.llm;
  const hd = hidden / heads;
  const dims: Record<string, [number, number]> = {
    q_proj: [heads * hd, hidden], k_proj: [kvHeads * hd, hidden], v_proj: [kvHeads * hd, hidden], o_proj: [hidden, heads * hd],
    gate_proj: [ffn, hidden], up_proj: [ffn, hidden], down_proj: [hidden, ffn],
  };
  for (let l = 0; l < spec.llm.layers; l++) {
    for (const m of targets) {
      const d = dims[m];
      if (!d) throw medllavaError('E_FORMAT', `${adapterPath}: target module '${m}' is not a linear layer of the base model`);
      const key = `base_model.model.model.layers.${l}.${['q_proj', 'k_proj', 'v_proj', 'o_proj'].includes(m) ? 'self_attn' : 'mlp'}.${m}`;
      expectShape(loraShapes, `${key}.lora_A.weight`, [r, d[1]], adapterFile);
      expectShape(loraShapes, `${key}.lora_B.weight`, [d[0], r], adapterFile);
    }
  }
  const projFile = ['non_lora_trainables.safetensors', 'non_lora_trainables.bin'].map((f) => join(dir, f)).find(existsSync);
  const weights = { ...spec.files.weights }, storedNames = { ...(spec.files.storedNames ?? {}) };
  if (projFile) {
    for (const [canonical, stored] of Object.entries(await projectorTensors(projFile, spec))) {
      weights[canonical] = projFile;
      if (stored !== canonical) storedNames[canonical] = stored;
      else delete storedNames[canonical];
    }
  }
  return { ...spec, lora: { r, alpha, targetModules: targets, file: adapterFile, baseModel: base }, files: { ...spec.files, weights, storedNames } };
}

/** LLaVA-Rad: LoRA adapter + non_lora_trainables.bin over a base LLM, BiomedCLIP-CXR tower. */
async function radSpec(dir: string, options: { visionTower?: string; baseModel?: string }): Promise<ModelSpec> {
  const cfgPath = join(dir, 'config.json');
  const cfg = await readJson(cfgPath);
  const adapterPath = join(dir, 'adapter_config.json');
  const adapter = await readJson(adapterPath);
  if (adapter['peft_type'] !== 'LORA') throw medllavaError('E_UNSUPPORTED', `${adapterPath}: peft_type '${String(adapter['peft_type'])}'`);
  const r = num(adapter, 'r', adapterPath);
  const alpha = num(adapter, 'lora_alpha', adapterPath);
  const targets = adapter['target_modules'] as string[] | undefined;
  if (!Array.isArray(targets)) throw medllavaError('E_FORMAT', `${adapterPath}: target_modules must be a list`);
  const baseName = (adapter['base_model_name_or_path'] as string | undefined) ?? '';
  const base = findLocal(baseName, options.baseModel, dir, 'base model', 'baseModel',
    (d) => statSync(d).isDirectory() && existsSync(join(d, 'config.json')));
  // an adapter over a whole LLaVA checkpoint (its own tower and projector) rather than over a plain LLM
  const baseType = (await readJson(join(base, 'config.json')))['model_type'];
  if (typeof baseType === 'string' && baseType.startsWith('llava')) return llavaLoraSpec(dir, base, adapter, adapterPath, options);
  const baseShapes = await weightShapes(base);
  const llm = llmFromConfig(cfg, cfgPath, baseShapes, base, 'llama');
  // the adapter: lora_A (r, in) and lora_B (out, r) for every target module of every layer
  const adapterFile = ['adapter_model.safetensors', 'adapter_model.bin'].map((f) => join(dir, f)).find(existsSync);
  if (!adapterFile) throw medllavaError('E_IO', `${dir} has no adapter_model.safetensors or adapter_model.bin`);
  const loraShapes: Shapes = new Map();
  const lt = adapterFile.endsWith('.bin') ? await native().readTorchCheckpoint(adapterFile) : await native().readSafetensorsHeader(adapterFile);
  for (const t of lt.tensors) loraShapes.set(t.name, { shape: t.shape, file: adapterFile });
  for (let l = 0; l < llm.layers; l++) {
    for (const m of targets) {
      const mod = ['q_proj', 'k_proj', 'v_proj', 'o_proj'].includes(m) ? 'self_attn' : 'mlp';
      const w = baseShapes.get(`model.layers.${l}.${mod}.${m}.weight`);
      if (!w) throw medllavaError('E_FORMAT', `${adapterPath}: target module '${m}' is not a linear layer of the base model`);
      const key = `base_model.model.model.layers.${l}.${mod}.${m}`;
      expectShape(loraShapes, `${key}.lora_A.weight`, [r, w.shape[1]!], adapterFile);
      expectShape(loraShapes, `${key}.lora_B.weight`, [w.shape[0]!, r], adapterFile);
    }
  }
  // the projector, saved apart from the adapter
  const projFile = join(dir, 'non_lora_trainables.bin');
  if (!existsSync(projFile)) throw medllavaError('E_IO', `${dir} has no non_lora_trainables.bin (the projector)`);
  const projShapes: Shapes = new Map();
  const storedNames: Record<string, string> = {};
  for (const t of (await native().readTorchCheckpoint(projFile)).tensors) {
    const canonical = t.name.replace(/^base_model\.(model\.)?/, '');
    projShapes.set(canonical, { shape: t.shape, file: projFile });
    if (canonical !== t.name) storedNames[canonical] = t.name;
  }
  const mmHidden = num(cfg, 'mm_hidden_size', cfgPath);
  expectShape(projShapes, 'model.mm_projector.0.weight', [llm.hidden, mmHidden], projFile);
  expectShape(projShapes, 'model.mm_projector.2.weight', [llm.hidden, llm.hidden], projFile);
  // the vision tower: <mm_vision_tower>.pt + .json, given or beside the checkpoint
  const towerName = (cfg['mm_vision_tower'] as string | undefined) ?? '';
  const isPt = (p: string) => existsSync(p) && statSync(p).isFile() && /\.(pt|bin)$/.test(p);
  let tower = options.visionTower;
  if (tower && statSync(tower).isDirectory()) tower = join(tower, `${basename(towerName)}.pt`);
  if (!tower) {
    tower = [join(dir, `${towerName}.pt`), join(dirname(dir), `${towerName}.pt`), towerName].find(isPt);
    if (!tower) {
      throw medllavaError('E_IO', `LLaVA-Rad's vision tower '${towerName}' (.pt + .json) was not found in ${dir} or beside it; ` +
        "pass { visionTower: '<path to the BiomedCLIP-CXR .pt>' }");
    }
  }
  if (!isPt(tower)) throw medllavaError('E_IO', `visionTower ${tower} is not a .pt checkpoint`);
  const vis = await timmVision(tower);
  if (vis.hidden !== mmHidden) throw medllavaError('E_SHAPE', `${tower}: the tower is ${vis.hidden} wide, mm_hidden_size is ${mmHidden}`);
  const weights: Record<string, string> = {};
  for (const [name, t] of baseShapes) weights[name] = t.file;
  for (const [name, t] of projShapes) weights[name] = t.file;
  return {
    family: 'llava-rad', format: 'hf',
    vision: { kind: 'timm-vit', ...vis, selectLayer: num(cfg, 'mm_vision_select_layer', cfgPath, -2), selectFeature: 'patch',
      preprocessor: 'open_clip' },
    projector: { type: 'mlp2x_gelu', inDim: mmHidden, outDim: llm.hidden },
    llm, template: 'vicuna_v1',
    // LLaVA-Rad's open_clip preprocessor has no image_mean to pad with; its evaluation
    // (llava/eval/model_mimic_cxr.py) calls it directly: resize the short side, centre crop
    imageAspectRatio: 'square',
    mmUseImStartEnd: cfg['mm_use_im_start_end'] === true,
    lora: { r, alpha, targetModules: targets, file: adapterFile, baseModel: base },
    files: { weights, storedNames, visionTower: tower, tokenizer: existsSync(join(dir, 'tokenizer.model')) ? dir : base },
  };
}

function meta(h: GgufHeader, key: string, where: string, dflt?: unknown): unknown {
  const m = h.metadata.find((x) => x.key === key);
  if (m) return m.value;
  if (dflt !== undefined) return dflt;
  throw medllavaError('E_FORMAT', `${where}: metadata '${key}' is missing`);
}

async function ggufSpec(llmPath: string, mmprojPath: string | undefined): Promise<ModelSpec> {
  const h = await native().readGguf(llmPath);
  const arch = meta(h, 'general.architecture', llmPath);
  if (arch !== 'llama') throw medllavaError('E_UNSUPPORTED', `${llmPath}: general.architecture '${String(arch)}' (LLaVA LLMs are 'llama')`);
  if (!mmprojPath) {
    const dir = dirname(llmPath);
    const cands = readdirSync(dir).filter((f) => /^mmproj.*\.gguf$/i.test(f));
    if (cands.length !== 1) {
      throw medllavaError('E_IO', `${llmPath} needs its mmproj file: pass { mmproj } (found ${cands.length} mmproj*.gguf beside it)`);
    }
    mmprojPath = join(dir, cands[0]!);
  }
  const m = await native().readGguf(mmprojPath);
  if (meta(m, 'general.architecture', mmprojPath) !== 'clip') throw medllavaError('E_FORMAT', `${mmprojPath} is not a CLIP mmproj file`);
  const n = (hh: GgufHeader, k: string, w: string, d?: number) => {
    const v = meta(hh, k, w, d);
    if (typeof v !== 'number') throw medllavaError('E_FORMAT', `${w}: metadata '${k}' must be a number`);
    return v;
  };
  const llm = {
    arch: 'llama' as const,
    hidden: n(h, 'llama.embedding_length', llmPath), layers: n(h, 'llama.block_count', llmPath),
    heads: n(h, 'llama.attention.head_count', llmPath), kvHeads: n(h, 'llama.attention.head_count_kv', llmPath, n(h, 'llama.attention.head_count', llmPath)),
    ffn: n(h, 'llama.feed_forward_length', llmPath), vocab: 0,
    ropeTheta: n(h, 'llama.rope.freq_base', llmPath, 10000), rmsEps: n(h, 'llama.attention.layer_norm_rms_epsilon', llmPath),
    contextLength: n(h, 'llama.context_length', llmPath), tieEmbeddings: !h.tensors.some((t) => t.name === 'output.weight'),
  };
  const embd = h.tensors.find((t) => t.name === 'token_embd.weight');
  if (!embd || embd.dims[0] !== llm.hidden) throw medllavaError('E_FORMAT', `${llmPath}: token_embd.weight missing or not ${llm.hidden} wide`);
  llm.vocab = embd.dims[1]!;
  const vis = {
    imageSize: n(m, 'clip.vision.image_size', mmprojPath), patchSize: n(m, 'clip.vision.patch_size', mmprojPath),
    hidden: n(m, 'clip.vision.embedding_length', mmprojPath), layers: n(m, 'clip.vision.block_count', mmprojPath),
    heads: n(m, 'clip.vision.attention.head_count', mmprojPath), ffn: n(m, 'clip.vision.feed_forward_length', mmprojPath),
    layerNormEps: n(m, 'clip.vision.attention.layer_norm_epsilon', mmprojPath, 1e-5),
    activation: meta(m, 'clip.use_gelu', mmprojPath, false) === true ? 'gelu' as const : 'quick_gelu' as const,
    imageMean: Array.from(meta(m, 'clip.vision.image_mean', mmprojPath, CLIP_MEAN) as ArrayLike<number>),
    imageStd: Array.from(meta(m, 'clip.vision.image_std', mmprojPath, CLIP_STD) as ArrayLike<number>),
  };
  // the projector: mm.0 (vision → llm) and mm.2 (llm → llm) for LLaVA's mlp2x_gelu; mm.0 alone for linear
  const mm0 = m.tensors.find((t) => t.name === 'mm.0.weight');
  const mm2 = m.tensors.find((t) => t.name === 'mm.2.weight');
  if (!mm0) throw medllavaError('E_FORMAT', `${mmprojPath}: no mm.0.weight projector`);
  if (mm0.dims[0] !== vis.hidden || mm0.dims[1] !== llm.hidden) {
    throw medllavaError('E_SHAPE', `${mmprojPath}: mm.0.weight is [${mm0.dims}], expected [${vis.hidden}, ${llm.hidden}] (GGUF order)`);
  }
  const weights: Record<string, string> = {};
  for (const t of h.tensors) weights[t.name] = llmPath;
  return {
    family: 'llava-med-v1.5', format: 'gguf',
    // an mmproj for today's llama.cpp stores all N blocks and runs N - 1: LLaVA's select layer -2
    vision: { kind: 'clip', ...vis, selectLayer: -2, selectFeature: 'patch', preprocessor: 'clip' },
    projector: { type: mm2 ? 'mlp2x_gelu' : 'linear', inDim: vis.hidden, outDim: llm.hidden },
    llm, template: 'mistral_instruct', imageAspectRatio: 'pad', mmUseImStartEnd: false,
    files: { weights, visionTower: mmprojPath, tokenizer: llmPath },
  };
}

/** Reads a checkpoint's layout and hyper-parameters (no weights are loaded). */
export async function loadModelSpec(source: string,
  options: { visionTower?: string; mmproj?: string; baseModel?: string } = {}): Promise<ModelSpec> {
  if (typeof source !== 'string' || !source) throw medllavaError('E_ARGUMENT', 'loadModelSpec(source): source must be a path');
  if (!existsSync(source)) throw medllavaError('E_IO', `${source} does not exist`);
  if (statSync(source).isDirectory()) {
    if (existsSync(join(source, 'adapter_config.json'))) return radSpec(source, options);
    const projector = PROJECTOR_FILES.map((f) => join(source, f)).find(existsSync);
    if (projector && existsSync(join(source, 'config.json')) && !hasModelWeights(source)) return projectorSpec(source, projector, options);
    if (existsSync(join(source, 'config.json'))) return hfSpec(source, options);
    const ggufs = readdirSync(source).filter((f) => f.endsWith('.gguf') && !/^mmproj/i.test(f));
    if (ggufs.length === 1) return ggufSpec(join(source, ggufs[0]!), options.mmproj);
    throw medllavaError('E_IO', `${source}: neither an HF checkpoint (config.json) nor a directory with one LLM .gguf ` +
      `(found ${ggufs.length})`);
  }
  if (source.endsWith('.gguf')) return ggufSpec(source, options.mmproj);
  throw medllavaError('E_UNSUPPORTED', `${source}: give an HF checkpoint directory, a .gguf file, or a directory of .gguf files`);
}
