/**
 * Every fixture layout loads into the right ModelSpec; the vision tower is found where upstream
 * users keep it (explicit path, beside the checkpoint, the HF cache) and never fetched; configs
 * that disagree with their tensors are refused. The GGUF fixture is the same model as the HF one.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { gguf } from '@huggingface/gguf';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';

import { loadModelSpec, loadTokenizer } from '../../lib/index.js';
import { generateFixture, permuteQK } from '../../lib/fixtures/generate.js';
import { native, packageRoot } from '../../lib/native.js';
import { python } from '../support/python.js';
import { PARITY_TEXT } from '../tokenizer/corpus.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-spec-'));
let hf: { dir: string; tower: string };
let gg: { llm: string; mmproj: string };
const savedEnv = { HF_HOME: process.env['HF_HOME'], HF_HUB_CACHE: process.env['HF_HUB_CACHE'] };

beforeAll(async () => {
  hf = (await generateFixture({ layout: 'llava-med-v1.5', out: join(root, 'hf') })) as typeof hf;
  gg = (await generateFixture({ layout: 'gguf', out: join(root, 'gguf'), ggufType: 'F32' })) as typeof gg;
}, 120_000);

afterEach(() => {
  for (const [k, v] of Object.entries(savedEnv)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

const expectedTiny = {
  family: 'llava-med-v1.5',
  vision: { kind: 'clip', imageSize: 42, patchSize: 14, hidden: 32, layers: 3, heads: 2, ffn: 64, selectLayer: -2,
    selectFeature: 'patch', activation: 'quick_gelu' },
  projector: { type: 'mlp2x_gelu', inDim: 32, outDim: 64 },
  llm: { hidden: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 160, vocab: 600, ropeTheta: 1e6, contextLength: 512 },
  template: 'mistral_instruct',
  imageAspectRatio: 'pad',
  mmUseImStartEnd: false,
};

describe('HF LLaVA-Med v1.5 layout', () => {
  it('loads into the right spec with an explicit vision tower', async () => {
    const spec = await loadModelSpec(hf.dir, { visionTower: hf.tower });
    expect(spec).toMatchObject({ ...expectedTiny, format: 'hf', llm: { ...expectedTiny.llm, arch: 'mistral', tieEmbeddings: false } });
    expect(spec.llm.rmsEps).toBeCloseTo(1e-5, 12);
    expect(spec.vision.layerNormEps).toBe(1e-5);
    expect(spec.files.visionTower).toBe(hf.tower);
    expect(Object.keys(spec.files.weights)).toContain('model.mm_projector.2.bias');
    expect(new Set(Object.values(spec.files.weights)).size).toBe(2); // two shards through the index
  });

  it('finds the tower beside the checkpoint, and in the HF cache; never the network', async () => {
    // beside: <parent>/clip-vit-large-patch14-336, as the fixture writes it
    expect((await loadModelSpec(hf.dir)).files.visionTower).toBe(hf.tower);
    const moved = join(root, 'hf-alone');
    cpSync(hf.dir, join(moved, 'ckpt'), { recursive: true });
    const cache = join(root, 'hf-home');
    const snap = join(cache, 'hub', 'models--openai--clip-vit-large-patch14-336', 'snapshots', 'abc123');
    mkdirSync(snap, { recursive: true });
    cpSync(hf.tower, snap, { recursive: true });
    process.env['HF_HOME'] = join(root, 'nowhere');
    await expect(loadModelSpec(join(moved, 'ckpt'))).rejects.toMatchObject({
      code: 'E_IO', message: expect.stringMatching(/never downloads.*looked in: .*models--openai--clip-vit-large-patch14-336/),
    });
    process.env['HF_HOME'] = cache;
    expect((await loadModelSpec(join(moved, 'ckpt'))).files.visionTower).toBe(snap);
  });

  it('a tower saved inside the checkpoint: weights from the checkpoint, config from the tower repo or the shapes', async () => {
    const emb = join(root, 'hf', 'embedded'); // beside the fixture's tower repo
    cpSync(hf.dir, emb, { recursive: true });
    // move the CLIP-L-shaped (64-wide heads) tower into a third shard, under LLaVA's own prefix
    const towerFile = join(hf.tower, 'model.safetensors');
    const h = await native().readSafetensorsHeader(towerFile);
    const tensors = [];
    for (const t of h.tensors.filter((x) => x.name.startsWith('vision_model.'))) {
      const bytes = await native().readSafetensorsTensor(towerFile, t.name);
      tensors.push({ name: `model.vision_tower.vision_tower.${t.name}`, dtype: 'F32', shape: t.shape, data: new Float32Array(bytes.slice().buffer) });
    }
    await native().writeSafetensors(join(emb, 'model-00003-of-00003.safetensors'), tensors, { format: 'pt' });
    const index = JSON.parse(readFileSync(join(emb, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
    for (const t of tensors) index.weight_map[t.name] = 'model-00003-of-00003.safetensors';
    writeFileSync(join(emb, 'model.safetensors.index.json'), JSON.stringify(index));
    const alone = join(root, 'embedded-alone', 'ckpt');
    cpSync(emb, alone, { recursive: true });
    process.env['HF_HOME'] = join(root, 'nowhere');
    // alone, the tiny tower (16-wide heads, not CLIP's 64) cannot be described from its shapes
    await expect(loadModelSpec(alone)).rejects.toMatchObject({ code: 'E_FORMAT', message: expect.stringMatching(/head count cannot be inferred/) });
    // with the tower repo beside it, its config describes the embedded weights
    const spec = await loadModelSpec(emb);
    expect(spec.vision).toMatchObject({ imageSize: 42, patchSize: 14, hidden: 32, layers: 3, heads: 2, ffn: 64, activation: 'quick_gelu' });
    expect(spec.files.visionTower).toBe(emb);
    expect(spec.files.weights['model.vision_tower.vision_tower.vision_model.embeddings.class_embedding']).toMatch(/00003-of-00003/);
  });

  it('a config that disagrees with the tensors → E_SHAPE; a non-LLaVA config → E_UNSUPPORTED', async () => {
    const bad = join(root, 'bad-config');
    cpSync(hf.dir, bad, { recursive: true });
    const cfg = JSON.parse(readFileSync(join(bad, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(bad, 'config.json'), JSON.stringify({ ...cfg, intermediate_size: 128 }));
    await expect(loadModelSpec(bad, { visionTower: hf.tower })).rejects.toMatchObject({
      code: 'E_SHAPE', message: expect.stringMatching(/gate_proj.weight has shape \[160,64\], the config implies \[128,64\]/),
    });
    writeFileSync(join(bad, 'config.json'), JSON.stringify({ ...cfg, model_type: 'bert' }));
    await expect(loadModelSpec(bad)).rejects.toMatchObject({ code: 'E_UNSUPPORTED' });
    writeFileSync(join(bad, 'config.json'), JSON.stringify({ ...cfg, mm_hidden_size: 48 }));
    await expect(loadModelSpec(bad, { visionTower: hf.tower })).rejects.toMatchObject({ code: 'E_SHAPE' });
  });

  it('a missing shard → E_IO naming it; no weights at all → E_IO', async () => {
    const bad = join(root, 'bad-shard');
    cpSync(hf.dir, bad, { recursive: true });
    renameSync(join(bad, 'model-00002-of-00002.safetensors'), join(bad, 'moved.safetensors'));
    await expect(loadModelSpec(bad, { visionTower: hf.tower })).rejects.toMatchObject({
      code: 'E_IO', message: expect.stringMatching(/model-00002-of-00002.safetensors, which is missing/),
    });
    const none = join(root, 'no-weights');
    mkdirSync(none);
    cpSync(join(hf.dir, 'config.json'), join(none, 'config.json'));
    await expect(loadModelSpec(none)).rejects.toMatchObject({ code: 'E_IO', message: expect.stringMatching(/no model.safetensors/) });
  });
});

describe('HF LLaVA-Med v1.0 layout (LLaMA, linear projector, CLIP-L/224, fp16 pickle shards)', () => {
  let v1: { dir: string; tower: string };
  beforeAll(async () => {
    v1 = (await generateFixture({ layout: 'llava-med-v1', out: join(root, 'v1') })) as typeof v1;
  }, 120_000);

  it('loads into the right spec from its pytorch_model.bin shards', async () => {
    const spec = await loadModelSpec(v1.dir);
    expect(spec).toMatchObject({
      family: 'llava-med-v1', format: 'hf', template: 'llava_med_v1', mmUseImStartEnd: true, imageAspectRatio: 'square',
      projector: { type: 'linear', inDim: 32, outDim: 64 },
      vision: { imageSize: 28, patchSize: 14, hidden: 32, layers: 3 },
      llm: { arch: 'llama', hidden: 64, heads: 4, kvHeads: 4, vocab: 603, ropeTheta: 10000, rmsEps: 1e-6 },
    });
    expect(spec.files.visionTower).toBe(v1.tower);
    expect(new Set(Object.values(spec.files.weights)).size).toBe(2);
    expect(Object.values(spec.files.weights)[0]).toMatch(/pytorch_model-0000[12]-of-00002\.bin$/);
  });

  it('its tokenizer has the three image tokens, matched in prompts', async () => {
    const tok = await loadTokenizer(v1.dir);
    expect(tok.vocabSize).toBe(603);
    expect(tok.encodePrompt('<im_start><im_patch><im_end>')).toEqual([1, 601, 600, 602]);
  });

  it('torch.load reads its shards', () => {
    const out = python(`
import torch, sys
sd = torch.load(sys.argv[1])
print(sd['model.embed_tokens.weight'].dtype, list(sd['model.embed_tokens.weight'].shape))
`, [join(v1.dir, 'pytorch_model-00001-of-00002.bin')]);
    expect(out.trim()).toBe('torch.float16 [603, 64]');
  });
});

describe('LLaVA-Rad layout (LoRA adapter over a Vicuna base, non_lora_trainables.bin, BiomedCLIP-CXR .pt)', () => {
  let rad: { dir: string; base: string; tower: string };
  beforeAll(async () => {
    rad = (await generateFixture({ layout: 'llava-rad', out: join(root, 'rad') })) as typeof rad;
  }, 120_000);

  it('loads into the right spec, finding the base model and the tower beside it', async () => {
    const spec = await loadModelSpec(rad.dir);
    expect(spec).toMatchObject({
      family: 'llava-rad', format: 'hf', template: 'vicuna_v1', imageAspectRatio: 'square',
      vision: { kind: 'timm-vit', imageSize: 42, patchSize: 14, hidden: 32, layers: 3, heads: 2, ffn: 64, activation: 'gelu',
        selectLayer: -2, layerNormEps: 1e-6, preprocessor: 'open_clip' },
      projector: { type: 'mlp2x_gelu', inDim: 32, outDim: 64 },
      llm: { arch: 'llama', hidden: 64, kvHeads: 4, vocab: 600 },
      lora: { r: 8, alpha: 16, baseModel: rad.base },
    });
    expect(spec.lora!.targetModules).toContain('down_proj');
    expect(spec.files.visionTower).toBe(rad.tower);
    expect(spec.files.weights['model.mm_projector.0.weight']).toMatch(/non_lora_trainables\.bin$/);
    expect(spec.files.weights['model.layers.0.self_attn.q_proj.weight']).toMatch(/vicuna-7b-v1\.5\/model\.safetensors$/);
  });

  it('a tower config that is not a timm ViT, or an image size the positions do not fit, is refused with a code', async () => {
    const bad = join(root, 'rad-bad-tower');
    cpSync(rad.dir, bad, { recursive: true });
    const cfgPath = join(bad, 'biomedclipcxr_518.json');
    const cfg = JSON.parse(readFileSync(cfgPath, 'utf8')) as { vision_cfg: Record<string, unknown> };
    const opts = { baseModel: rad.base };
    writeFileSync(cfgPath, JSON.stringify({ ...cfg, vision_cfg: { ...cfg.vision_cfg, timm_model_name: 'convnext_base' } }));
    await expect(loadModelSpec(bad, opts)).rejects.toMatchObject({ code: 'E_UNSUPPORTED', message: expect.stringMatching(/not a timm ViT/) });
    writeFileSync(cfgPath, JSON.stringify({ ...cfg, vision_cfg: { ...cfg.vision_cfg, image_size: 56 } }));
    await expect(loadModelSpec(bad, opts)).rejects.toMatchObject({ code: 'E_SHAPE', message: expect.stringMatching(/pos_embed/) });
    writeFileSync(cfgPath, JSON.stringify({ ...cfg, vision_cfg: { ...cfg.vision_cfg, image_size: [42, 56] } }));
    await expect(loadModelSpec(bad, opts)).rejects.toMatchObject({ code: 'E_UNSUPPORTED' });
    writeFileSync(cfgPath, '{ not json');
    await expect(loadModelSpec(bad, opts)).rejects.toMatchObject({ code: 'E_FORMAT' });
  });

  it('the base model and the tower can be given explicitly; missing ones are E_IO', async () => {
    const alone = join(root, 'rad-alone');
    cpSync(rad.dir, alone, { recursive: true });
    await expect(loadModelSpec(alone)).rejects.toMatchObject({ code: 'E_IO', message: expect.stringMatching(/base model 'lmsys\/vicuna-7b-v1.5'.*baseModel/) });
    const spec = await loadModelSpec(alone, { baseModel: rad.base, visionTower: rad.tower });
    expect(spec.lora!.baseModel).toBe(rad.base);
  });

  it('torch.load reads the adapter, and PEFT\'s key layout is what we expect', () => {
    const out = python(`
import torch, sys
sd = torch.load(sys.argv[1])
k = 'base_model.model.model.layers.1.mlp.down_proj.lora_A.weight'
print(list(sd[k].shape), len(sd))
`, [join(rad.dir, 'adapter_model.bin')]);
    expect(out.trim()).toBe('[8, 160] 28');
  });
});

describe('GGUF layout (LLM + mmproj)', () => {
  it('loads into the same spec as the HF layout, from the file or its directory', async () => {
    const fromFile = await loadModelSpec(gg.llm);
    const fromDir = await loadModelSpec(join(root, 'gguf'));
    for (const spec of [fromFile, fromDir]) {
      expect(spec).toMatchObject({ ...expectedTiny, format: 'gguf', llm: { ...expectedTiny.llm, arch: 'llama' } });
      expect(spec.files.visionTower).toBe(gg.mmproj);
      expect(spec.vision.layerNormEps).toBeCloseTo(1e-5, 10); // stored as f32 in GGUF
    }
  });

  it('@huggingface/gguf reads both files', async () => {
    const llm = await gguf(gg.llm, { allowLocalFile: true });
    expect(llm.metadata['general.architecture']).toBe('llama');
    expect(llm.tensorInfos.length).toBe(2 + 2 * 9 + 1);
    const mm = await gguf(gg.mmproj, { allowLocalFile: true });
    expect(mm.metadata['general.architecture']).toBe('clip');
    expect(mm.tensorInfos.find((t) => t.name === 'mm.2.weight')?.shape.map(Number)).toEqual([64, 64]);
  });

  it('its tokenizer is the HF checkpoint\'s tokenizer', async () => {
    const a = await loadTokenizer(hf.dir);
    const b = await loadTokenizer(gg.llm);
    for (const t of PARITY_TEXT) expect(b.encode(t)).toEqual(a.encode(t));
    expect(a.encode('the chest x-ray shows')).toEqual(a.encode('the chest x-ray shows').filter((i) => i > 258)); // whole words, no byte fallback
  });

  it('attn_q / attn_k hold the HF weights with llama.cpp\'s row permutation', async () => {
    const q = (await native().readGgufTensor(gg.llm, 'blk.1.attn_q.weight', true)) as Float32Array;
    const k = (await native().readGgufTensor(gg.llm, 'blk.1.attn_k.weight', true)) as Float32Array;
    const file = (await loadModelSpec(hf.dir)).files.weights['model.layers.1.self_attn.q_proj.weight']!;
    const hq = await native().readSafetensorsTensor(file, 'model.layers.1.self_attn.q_proj.weight');
    const hfQ = Float32Array.from(new Uint16Array(hq.slice().buffer), (b) => new Float32Array(new Uint32Array([b << 16]).buffer)[0]!);
    const close = (x: Float32Array, y: Float32Array) => x.every((v, i) => Math.abs(v - y[i]!) <= 8e-3 * Math.max(1, Math.abs(v)));
    expect(close(permuteQK(hfQ, 64, 64, 4), q)).toBe(true);
    expect(close(hfQ, q)).toBe(false);
    expect(k.length).toBe(32 * 64);
  });

  it('an LLM gguf without its mmproj → E_IO', async () => {
    const lone = join(root, 'lone');
    mkdirSync(lone);
    cpSync(gg.llm, join(lone, 'model.gguf'));
    await expect(loadModelSpec(join(lone, 'model.gguf'))).rejects.toMatchObject({ code: 'E_IO', message: expect.stringMatching(/mmproj/) });
  });
});

describe('medllava fixture', () => {
  it('writes a GGUF pair from the command line', () => {
    const out = join(root, 'cli');
    const stdout = execFileSync(process.execPath, [join(packageRoot(), 'dist/lib/cli/main.js'), 'fixture', '--layout', 'gguf',
      '--out', out, '--gguf-type', 'Q8_0'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(stdout).toMatch(/llm: .*ggml-model-q8_0\.gguf/);
    expect(stdout).toMatch(/mmproj: .*mmproj-model-f16\.gguf/);
  });
});
