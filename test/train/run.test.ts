/**
 * The curriculum trainer (lib/train/run.ts) end to end on the tiny fixtures, from LLaVA-format JSON with PNG images:
 *   - align → instruct → finetune as a curriculum, and the LoRA stage: each stage's output is in the layout the
 *     ecosystem reads (mm_projector.safetensors + config; an HF LLaVA directory; a PEFT adapter with
 *     non_lora_trainables.bin, which torch.load reads), loads with loadModel and chats; the loss falls;
 *     metrics.jsonl / metrics.csv / loss.png are written;
 *   - resume is bit-identical: a run stopped by its signal after step k (the step in flight abandoned, a checkpoint of
 *     step k written) and resumed gives exactly the losses of an uninterrupted run for k+1 … n (align, instruct with
 *     length grouping and accumulation, lora with dropout);
 *   - save_total_limit keeps the newest checkpoints only;
 *   - bad data is reported by id (a missing image, an unreadable one), never swapped; 'stop' stops with E_FORMAT.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { generateFixture } from '../../lib/fixtures/generate.js';
import { convertModel } from '../../lib/convert/convert.js';
import { modelInternals } from '../../lib/model/model.js';
import { createTrainer, curriculum, loadModel, train, type TrainEvent, type TrainMetrics, type TrainOptions } from '../../lib/index.js';
import { python, pythonHas } from '../support/python.js';
import { trainFixture, type TinyDataset } from '../support/train-data.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-run-'));
let v15: string;
let data: TinyDataset;

beforeAll(async () => {
  ({ v15, data } = await trainFixture(root));
}, 300_000);

async function losses(run: AsyncIterable<TrainEvent>): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for await (const e of run) if (e.type === 'step') out.set(e.step, e.loss);
  return out;
}

async function chatOnce(dir: string): Promise<string> {
  const model = await loadModel(dir, { device: 'cpu' });
  try {
    const chat = model.createChat();
    const r = await chat.send({ text: 'What is seen?', image: join(data.images, 'images', 'img0.png') }, { maxTokens: 4, temperature: 0 });
    return r.text;
  } finally {
    await model.dispose();
  }
}

describe('stages and their outputs', () => {
  it('align → instruct → finetune: each output in its layout, loadable, chatting; the loss falls', async () => {
    const out = join(root, 'curriculum');
    const common = { images: data.images, batchSize: 4, microBatchSize: 2, saveSteps: 0, learningRate: 3e-3, warmupRatio: 0 };
    const run = curriculum({
      model: v15, output: out, stages: [
        { stage: 'align', data: data.captions, epochs: 2, ...common },
        { stage: 'instruct', data: data.conversations, epochs: 2, ...common },
        { stage: 'finetune', data: data.conversations, epochs: 1, ...common, learningRate: 1e-3 },
      ],
    });
    const steps: TrainMetrics[] = [];
    for await (const e of run) if (e.type === 'step') steps.push(e);
    const result = await run;
    expect(result.stopped).toBe(false);
    // align: 12 samples / 4 = 3 steps per epoch, 2 epochs
    expect(steps.length).toBe(6 + 6 + 3);
    const align = join(out, '1-align');
    expect(existsSync(join(align, 'mm_projector.safetensors'))).toBe(true);
    expect(existsSync(join(align, 'model.safetensors'))).toBe(false);
    const cfg = JSON.parse(readFileSync(join(align, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(cfg['_name_or_path']).toBe(v15);
    for (const s of ['2-instruct', '3-finetune']) {
      expect(existsSync(join(out, s, 'model.safetensors'))).toBe(true);
      expect(existsSync(join(out, s, 'tokenizer.model'))).toBe(true);
      expect(readdirSync(join(out, s)).filter((f) => f.startsWith('checkpoint-'))).toHaveLength(1);
      expect(readFileSync(join(out, s, 'loss.png')).subarray(1, 4).toString()).toBe('PNG');
      expect(readFileSync(join(out, s, 'metrics.csv'), 'utf8').split('\n')[0]).toBe('step,epoch,loss,gradNorm,lr,tokensPerSecond,samplesPerSecond,elapsed');
    }
    // the instruct stage learns its conversations (lr 3e-3, 6 steps)
    const instruct = steps.slice(6, 12);
    expect(instruct[5]!.loss).toBeLessThan(instruct[0]!.loss * 0.8);
    for (const m of steps) {
      expect(Number.isFinite(m.gradNorm)).toBe(true);
      expect(m.tokensPerSecond).toBeGreaterThan(0);
    }
    // every stage's output loads and chats; the projector-only align output reads its base's LLM
    for (const s of ['1-align', '2-instruct', '3-finetune']) expect(typeof (await chatOnce(join(out, s)))).toBe('string');
    // what trained is in the outputs: align changed the projector only, instruct the LLM too
    const read = async (dir: string, vision: boolean, name: string) => {
      const m = await loadModel(dir, { device: 'cpu' });
      try {
        const parts = modelInternals(m).trainingParts();
        return await (vision ? parts.vision! : parts.llm).readParameter(name);
      } finally {
        await m.dispose();
      }
    };
    const proj = 'model.mm_projector.0.weight', q = 'model.layers.0.self_attn.q_proj.weight';
    expect(await read(join(out, '1-align'), true, proj)).not.toEqual(await read(v15, true, proj));
    expect(await read(join(out, '1-align'), false, q)).toEqual(await read(v15, false, q));
    expect(await read(join(out, '2-instruct'), false, q)).not.toEqual(await read(v15, false, q));
    expect(await read(join(out, '3-finetune'), false, q)).not.toEqual(await read(join(out, '2-instruct'), false, q));
    // medllava convert reads the full output too (to a llama.cpp GGUF pair)
    const gguf = await convertModel({ model: join(out, '3-finetune'), to: 'gguf', out: join(root, 'finetune-gguf') });
    expect(existsSync(gguf['llm']!) && existsSync(gguf['mmproj']!)).toBe(true);
    expect(typeof (await chatOnce(join(root, 'finetune-gguf')))).toBe('string');
  }, 600_000);

  it('lora: a PEFT adapter + non_lora_trainables.bin over the LLaVA checkpoint; loads, chats, torch reads it', async () => {
    const out = join(root, 'lora');
    const r = await train({
      stage: 'lora', model: v15, data: data.conversations, images: data.images, output: out, batchSize: 4, microBatchSize: 2,
      epochs: 1, lora: { r: 4, alpha: 8 }, learningRate: 1e-3, saveSteps: 0,
    });
    expect(r.steps).toBe(3);
    const adapter = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(adapter).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 8, base_model_name_or_path: v15 });
    expect((adapter['target_modules'] as string[]).sort()).toEqual(['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
    expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(true);
    expect(typeof (await chatOnce(out))).toBe('string');
    const model = await loadModel(out, { device: 'cpu' });
    try {
      expect(model.spec.lora?.r).toBe(4);
      // B starts at zero: trained, it is not
      const b = await modelInternals(model).trainingParts().llm.readParameter('base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight');
      expect(b.some((x) => x !== 0)).toBe(true);
    } finally {
      await model.dispose();
    }
    if (pythonHas('torch')) {
      const keys = python('import sys, torch; sd = torch.load(sys.argv[1], map_location="cpu"); ' +
        'print(",".join(sorted(k + ":" + str(tuple(v.shape)) for k, v in sd.items())))', [join(out, 'non_lora_trainables.bin')]).trim();
      expect(keys).toBe('base_model.model.model.mm_projector.0.bias:(64,),base_model.model.model.mm_projector.0.weight:(64, 32),' +
        'base_model.model.model.mm_projector.2.bias:(64,),base_model.model.model.mm_projector.2.weight:(64, 64)');
    }
  }, 600_000);
});

describe('LLaVA-Rad (an adapter over a plain LLM, a timm tower)', () => {
  it('align and lora write the adapter layout over the base LLM; both load and chat', async () => {
    const rad = (await generateFixture({ layout: 'llava-rad', out: join(root, 'rad') })) as { dir: string; base: string; tower: string };
    for (const stage of ['align', 'lora'] as const) {
      const out = join(root, `rad-${stage}`);
      const r = await train({ stage, model: rad.dir, data: data.captions, images: data.images, output: out, batchSize: 4, microBatchSize: 2,
        epochs: 1, saveSteps: 0, learningRate: 1e-3 });
      expect(r.steps).toBe(3);
      const adapter = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
      expect(adapter['base_model_name_or_path']).toBe(rad.base);
      expect(existsSync(join(out, 'non_lora_trainables.bin'))).toBe(true);
      const model = await loadModel(out, { device: 'cpu' });
      try {
        expect(model.spec.family).toBe('llava-rad');
      } finally {
        await model.dispose();
      }
      expect(typeof (await chatOnce(out))).toBe('string');
    }
  }, 600_000);
});

describe('LLaVA-Med v1.0 (legacy ### Human: labels, <im_start>/<im_end> framing, a linear projector)', () => {
  it('instruct trains and writes an HF directory that loads and chats', async () => {
    const v1 = ((await generateFixture({ layout: 'llava-med-v1', out: join(root, 'v1') })) as { dir: string }).dir;
    const out = join(root, 'v1-instruct');
    const steps: number[] = [];
    const run = train({ stage: 'instruct', model: v1, data: data.conversations, images: data.images, output: out, batchSize: 4,
      microBatchSize: 2, epochs: 2, saveSteps: 0, learningRate: 3e-3, warmupRatio: 0 });
    for await (const e of run) if (e.type === 'step') steps.push(e.loss);
    expect((await run).problems).toEqual([]);
    expect(steps[steps.length - 1]!).toBeLessThan(steps[0]! * 0.8);
    expect(typeof (await chatOnce(out))).toBe('string');
  }, 600_000);
});

describe('resume is bit-identical', () => {
  const cases: { name: string; o: Partial<TrainOptions> & Pick<TrainOptions, 'stage' | 'data'> }[] = [];
  beforeAll(() => {
    cases.push(
      { name: 'align', o: { stage: 'align', data: data.captions, epochs: 2 } },
      { name: 'instruct (grouped by modality, accumulation 2)', o: { stage: 'instruct', data: data.conversations, epochs: 2 } },
      { name: 'lora (dropout)', o: { stage: 'lora', data: data.conversations, epochs: 2, lora: { r: 4, alpha: 8, dropout: 0.3 } } },
    );
  });
  for (const k of [0, 1, 2]) {
    it(`case ${k}: stop after step 3 by signal, resume: steps 4… equal an uninterrupted run's`, async () => {
      const c = cases[k]!;
      const base: TrainOptions = {
        model: v15, images: data.images, output: '', batchSize: 4, microBatchSize: 2, learningRate: 2e-3, saveSteps: 2, saveTotalLimit: 2,
        ...c.o,
      };
      const full = await losses(train({ ...base, output: join(root, `resume-${k}-full`) }));
      expect(full.size).toBe(6);
      const out = join(root, `resume-${k}`);
      const stop = new AbortController();
      const first = train({ ...base, output: out, signal: stop.signal });
      const seen = new Map<number, number>();
      for await (const e of first) {
        if (e.type === 'step') {
          seen.set(e.step, e.loss);
          if (e.step === 3) stop.abort();  // step 4 is in flight or about to be: abandoned, checkpoint-3 written
        }
      }
      const r1 = await first;
      expect(r1.stopped).toBe(true);
      expect(r1.steps).toBe(3);
      expect(existsSync(join(out, 'checkpoint-3', 'run_state.json'))).toBe(true);
      const second = train({ ...base, output: out, resume: true });
      const rest = await losses(second);
      expect((await second).resumedFrom).toBe(join(out, 'checkpoint-3'));
      expect([...rest.keys()]).toEqual([4, 5, 6]);
      for (const s of [1, 2, 3]) expect(seen.get(s)).toBe(full.get(s));
      for (const s of [4, 5, 6]) expect(rest.get(s)).toBe(full.get(s));  // exactly
      // saveTotalLimit 2: the two newest remain
      expect(readdirSync(out).filter((f) => f.startsWith('checkpoint-')).sort()).toEqual(['checkpoint-4', 'checkpoint-6']);
      // metrics.jsonl holds each step once, the resumed steps replacing nothing twice
      const jsonl = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as TrainMetrics).step);
      expect(jsonl).toEqual([1, 2, 3, 4, 5, 6]);
    }, 600_000);
  }
});

describe('bad input around checkpoints', () => {
  it('resume over other data, a trainer of another stage, a missing trainer state, an align output without its base: '
    + 'clear codes, and the checkpoint stays as it was', async () => {
    const out = join(root, 'guard');
    const base = { stage: 'instruct' as const, model: v15, images: data.images, output: out, batchSize: 4, microBatchSize: 2, epochs: 1, saveSteps: 0 };
    await train({ ...base, data: data.conversations }).result;
    const ckpt = join(out, 'checkpoint-3');
    const before = readFileSync(join(ckpt, 'trainer', 'optimizer.safetensors'));
    await expect(train({ ...base, data: data.captions, resume: true }).result)
      .rejects.toMatchObject({ code: 'E_ARGUMENT', message: expect.stringMatching(/other data or another seed/) });
    await expect(train({ ...base, data: data.conversations, seed: 7, resume: true }).result).rejects.toMatchObject({ code: 'E_ARGUMENT' });
    expect(readFileSync(join(ckpt, 'trainer', 'optimizer.safetensors')).equals(before)).toBe(true);
    // the low-level load: another trainable set, and a folder without a trainer state
    const model = await loadModel(v15, { device: 'cpu' });
    try {
      const t = await createTrainer(model, { stage: 'align' });
      await expect(t.load(join(ckpt, 'trainer'))).rejects.toMatchObject({ code: 'E_ARGUMENT', message: expect.stringMatching(/other trainable parameters/) });
      await expect(t.load(join(root, 'no-such-dir'))).rejects.toMatchObject({ code: 'E_IO' });
      expect((await t.step([{ inputIds: [1, 5, 6], labels: [-100, 5, 6] }])).updated).toBe(true);  // still usable
      await t.dispose();
    } finally {
      await model.dispose();
    }
    // an align output whose base checkpoint is not where its config says: E_IO naming what to pass
    const align = join(root, 'guard-align');
    await train({ ...base, stage: 'align', data: data.captions, output: align }).result;
    const cfg = JSON.parse(readFileSync(join(align, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(align, 'config.json'), JSON.stringify({ ...cfg, _name_or_path: join(root, 'gone') }));
    await expect(loadModel(align, { device: 'cpu' })).rejects.toMatchObject({ code: 'E_IO', message: expect.stringMatching(/baseModel/) });
    await (await loadModel(align, { device: 'cpu', baseModel: v15 })).dispose();
  }, 600_000);
});

describe('bad data', () => {
  it('a missing image and an unreadable one are reported by id, never swapped; stop → E_FORMAT', async () => {
    const recs = JSON.parse(readFileSync(data.conversations, 'utf8')) as { id: string; image?: string }[];
    recs[1]!.image = 'images/nope.png';
    writeFileSync(join(data.images, 'images', 'broken.png'), 'not a png');
    recs[4]!.image = 'images/broken.png';
    const file = join(root, 'bad.json');
    writeFileSync(file, JSON.stringify(recs));
    const out = join(root, 'bad');
    const problems: string[] = [];
    const run = train({ stage: 'instruct', model: v15, data: file, images: data.images, output: out, batchSize: 4, microBatchSize: 2, epochs: 1, saveSteps: 0 });
    for await (const e of run) if (e.type === 'problem') problems.push(e.id);
    const r = await run;
    expect(problems.sort()).toEqual(['conv-1', 'conv-4']);
    expect(r.problems.map((p) => p.id).sort()).toEqual(['conv-1', 'conv-4']);
    const logged = readFileSync(join(out, 'problems.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { id: string }).id);
    expect(logged.sort()).toEqual(['conv-1', 'conv-4']);
    await expect(train({ stage: 'instruct', model: v15, data: file, images: data.images, output: join(root, 'bad-stop'), batchSize: 4,
      microBatchSize: 2, epochs: 1, onProblem: 'stop' }).result).rejects.toMatchObject({ code: 'E_FORMAT' });
  }, 600_000);
});
