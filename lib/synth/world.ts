/**
 * The synthetic biomedical world: `count` seeded cases dealt round-robin over the five modalities, each with
 * its image, ground truth, figure caption and citing sentences, written to a folder in the layouts the LLaVA-Med
 * pipeline reads:
 *
 *   images/<id>.png          the figures (size × size RGB)
 *   truth.jsonl              one case per line: the ground truth, its split, image, caption and mentions
 *   figures.json             the self-instruct input, LLaVA-Med's {domain: [figure…]} layout (+ `truth`)
 *   alignment.json           stage-1 pairs: a describe-the-image instruction → the caption (train split)
 *   pretrain.json            stage-0 captioning pairs (train split; the caption and its mentions)
 *   vqa/train.json, vqa/test.json, vqa/val.json
 *                            VQA-RAD-style questions (CLOSED / OPEN, `answer_type`) per split
 *   chat/test.jsonl          held-out visual-chat questions in LLaVA-Med's qa50 layout: per test image one detailed
 *                            description and up to two conversation questions, with reference answers written from
 *                            the ground truth (`gpt4_answer`, as upstream names the reference)
 *   reports/test.json        findings reports of the test split's chest x-rays (LLaVA-Rad's task; `eval report`)
 *   splits.json              the ids of each split (train 80 %, val 5 %, test 15 %, drawn per case)
 *
 * Nothing of the val and test splits reaches the training files.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

import sharp from 'sharp';

import { medllavaError } from '../errors.js';
import { writeFileAtomic } from '../util/files.js';
import { Rand } from './canvas.js';
import { renderTruth } from './render.js';
import { BRIEF_INSTRUCTIONS, caption, cxrReport, describeCase, DETAILED_INSTRUCTIONS, inlineMentions, ruleConversation, vqaQuestions } from './text.js';
import { MODALITIES, sampleTruth, type Modality, type Truth } from './truth.js';

export type Split = 'train' | 'val' | 'test';

export interface WorldCase {
  truth: Truth;
  split: Split;
  /** relative to the world folder */
  image: string;
  figLabel: string;
  caption: string;
  mentions: string[];
}

export interface WorldOptions {
  out: string;
  /** cases (default 1000) */
  count?: number;
  seed?: number;
  /** image side in pixels (default 224) */
  size?: number;
  /** VQA questions per image (default 5) */
  questionsPerImage?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface World {
  dir: string;
  cases: WorldCase[];
  files: { truth: string; figures: string; alignment: string; pretrain: string; vqaTrain: string; vqaVal: string; vqaTest: string; splits: string; chatTest: string; reportTest: string };
}

/** the case `i` of a world with this seed: same truth, caption and split whatever the count */
export function worldCase(i: number, seed: number): WorldCase {
  const rng = new Rand((seed * 0x9e3779b1 + i * 0x85ebca6b) >>> 0);
  const modality: Modality = MODALITIES[i % MODALITIES.length]!;
  const id = `syn${String(i).padStart(5, '0')}`;
  const truth = sampleTruth(id, modality, rng);
  const r = rng.next();
  const split: Split = r < 0.15 ? 'test' : r < 0.2 ? 'val' : 'train';
  const figLabel = `Figure ${1 + (i % 4)}`;
  return { truth, split, image: `images/${id}.png`, figLabel, caption: caption(truth, rng), mentions: inlineMentions(truth, rng, figLabel) };
}

const json = (x: unknown) => `${JSON.stringify(x, null, 1)}\n`;


export async function writeSyntheticWorld(o: WorldOptions): Promise<World> {
  const count = o.count ?? 1000, seed = o.seed ?? 1, size = o.size ?? 224, perImage = o.questionsPerImage ?? 5;
  if (!Number.isInteger(count) || count < 1) throw medllavaError('E_ARGUMENT', `count must be a positive integer, got ${count}`);
  if (!Number.isInteger(size) || size < 32 || size > 2048) throw medllavaError('E_ARGUMENT', `size must be an integer in [32, 2048], got ${size}`);
  await mkdir(join(o.out, 'images'), { recursive: true });
  await mkdir(join(o.out, 'vqa'), { recursive: true });
  await mkdir(join(o.out, 'chat'), { recursive: true });
  await mkdir(join(o.out, 'reports'), { recursive: true });
  const cases: WorldCase[] = [];
  const pending: Promise<unknown>[] = [];
  for (let i = 0; i < count; i++) {
    const c = worldCase(i, seed);
    cases.push(c);
    const px = renderTruth(c.truth, (seed * 7919 + i) >>> 0, size);
    pending.push(sharp(px, { raw: { width: size, height: size, channels: 3 } }).png({ compressionLevel: 6 }).toFile(join(o.out, c.image)));
    if (pending.length >= 8) await Promise.all(pending.splice(0));
    o.onProgress?.(i + 1, count);
  }
  await Promise.all(pending);

  const textRng = new Rand(seed ^ 0x7e47);
  const truthLines = cases.map((c) => JSON.stringify({ ...c.truth, split: c.split, image: c.image, fig_label: c.figLabel, caption: c.caption, mentions: c.mentions }));
  const figures: Record<string, unknown[]> = Object.fromEntries(MODALITIES.map((m) => [m, []]));
  const alignment: unknown[] = [], pretrain: unknown[] = [];
  const vqa: Record<Split, unknown[]> = { train: [], val: [], test: [] };
  const chat: string[] = [];
  const reports: unknown[] = [];
  const reportRng = new Rand(seed ^ 0x4e9047);
  for (const c of cases) {
    const t = c.truth;
    figures[t.modality]!.push({
      pair_id: t.id, pmid: t.id, fig_id: c.figLabel.replace('Figure ', 'F'), fig_label: c.figLabel, fig_caption: c.caption,
      in_text_mention: c.mentions.map((m) => ({ tokens: m })), domain: Object.fromEntries(MODALITIES.map((m) => [m, m === t.modality])),
      image: c.image, split: c.split, truth: t,
    });
    const qs = vqaQuestions(t, textRng, perImage);
    qs.forEach((q, k) => vqa[c.split].push({
      id: `${t.id}-q${k}`, image: c.image, answer_type: q.answerType, question_type: q.questionType, image_organ: t.organ, modality: t.modality,
      conversations: [{ from: 'human', value: `${q.question}\n<image>` }, { from: 'gpt', value: q.answer }],
    }));
    if (c.split === 'test') {
      const base = { pair_id: t.id, image: c.image, fig_caption: c.caption, fig_label: c.figLabel, in_text_mention: c.mentions.map((m) => ({ tokens: m })),
        domain: Object.fromEntries(MODALITIES.map((m) => [m, m === t.modality])) };
      chat.push(JSON.stringify({ question_id: chat.length, ...base, type: 'detailed_description',
        text: `${textRng.pick(DETAILED_INSTRUCTIONS).replace(/\.$/, '')}\n<image>`, gpt4_answer: describeCase(t, textRng) }));
      const conv = ruleConversation(t, textRng);
      for (let k = 2; k < Math.min(conv.length, 6); k += 2) {
        chat.push(JSON.stringify({ question_id: chat.length, ...base, type: 'conversation', text: `${conv[k]!.value}\n<image>`, gpt4_answer: conv[k + 1]!.value }));
      }
    }
    if (c.split === 'test' && t.modality === 'chest_xray') {
      reports.push({ id: t.id, image: c.image, conversations: [{ from: 'human', value: '<image>\nDescribe the findings of the chest x-ray.' },
        { from: 'gpt', value: cxrReport(t, reportRng) }] });
    }
    if (c.split !== 'train') continue;
    const words = c.caption.split(/\s+/).length;
    const instruction = textRng.pick(words < 12 ? BRIEF_INSTRUCTIONS : DETAILED_INSTRUCTIONS);
    alignment.push({ id: t.id, image: c.image, conversations: [{ from: 'human', value: `${instruction}\n<image>` }, { from: 'gpt', value: c.caption }] });
    pretrain.push({ id: t.id, image: c.image, conversations: [{ from: 'human', value: '<image>\nCaption this figure.' },
      { from: 'gpt', value: [c.caption, ...c.mentions.map((m) => m.replace(/\s*\((Figure|Fig\.) \d\)/, ''))].join(' ') }] });
  }
  const files = {
    truth: join(o.out, 'truth.jsonl'), figures: join(o.out, 'figures.json'), alignment: join(o.out, 'alignment.json'),
    pretrain: join(o.out, 'pretrain.json'), vqaTrain: join(o.out, 'vqa', 'train.json'), vqaVal: join(o.out, 'vqa', 'val.json'),
    vqaTest: join(o.out, 'vqa', 'test.json'), splits: join(o.out, 'splits.json'), chatTest: join(o.out, 'chat', 'test.jsonl'),
    reportTest: join(o.out, 'reports', 'test.json'),
  };
  writeFileAtomic(files.reportTest, json(reports));
  writeFileAtomic(files.chatTest, `${chat.join('\n')}\n`);
  writeFileAtomic(files.truth, `${truthLines.join('\n')}\n`);
  writeFileAtomic(files.figures, json(figures));
  writeFileAtomic(files.alignment, json(alignment));
  writeFileAtomic(files.pretrain, json(pretrain));
  writeFileAtomic(files.vqaTrain, json(vqa.train));
  writeFileAtomic(files.vqaVal, json(vqa.val));
  writeFileAtomic(files.vqaTest, json(vqa.test));
  const splits = { train: [] as string[], val: [] as string[], test: [] as string[] };
  for (const c of cases) splits[c.split].push(c.truth.id);
  writeFileAtomic(files.splits, json({ seed, count, size, ...splits }));
  return { dir: o.out, cases, files };
}

/** reads truth.jsonl back */
export async function readWorldTruth(dir: string): Promise<Map<string, WorldCase>> {
  const { readFile } = await import('node:fs/promises');
  let text: string;
  try { text = await readFile(join(dir, 'truth.jsonl'), 'utf8'); } catch (e) {
    throw medllavaError('E_IO', `${dir} has no truth.jsonl (is it a world written by \`medllava synth\`?): ${(e as Error).message}`);
  }
  const out = new Map<string, WorldCase>();
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const r = JSON.parse(line) as Truth & { split: Split; image: string; fig_label: string; caption: string; mentions: string[] };
    const { split, image, fig_label: figLabel, caption: cap, mentions, ...truth } = r;
    out.set(truth.id, { truth: truth as Truth, split, image, figLabel, caption: cap, mentions });
  }
  return out;
}
