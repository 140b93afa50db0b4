/**
 * `medllava eval vqa`: a model answers every question of a LLaVA-Med VQA test file (VQA-RAD / SLAKE / PathVQA
 * layout: {id, image, answer_type, conversations: [question, answer]}), one fresh chat per question with the
 * image before the question (LLaVA-Med v1.5's model_vqa), greedy by default; the answers are written as JSON
 * lines in upstream's answer-file layout ({question_id, prompt, text, answer_id, model_id, metadata}) and scored
 * with LLaVA-Med's metrics (vqa-metrics.ts): open recall and closed accuracy, in percent.
 */
import { existsSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

import { medllavaError } from '../errors.js';
import type { GenerateOptions } from '../generate.js';
import type { Model } from '../model/model.js';
import { writeFileAtomic } from '../util/files.js';
import { answerOnce, readRecords } from './answer.js';
import { scoreVqa, type VqaItem, type VqaScore } from './vqa-metrics.js';

export interface VqaQuestion { id: string; image?: string; answerType: string; question: string; answer: string; questionType?: string; modality?: string }

/** a VQA test file → its questions (the `conversatons` misspelling read too) */
export function readVqaFile(path: string): VqaQuestion[] {
  const rows = readRecords(path, 'questions');
  return rows.map((r, i) => {
    const conv = (r['conversations'] ?? r['conversatons']) as { from: string; value: string }[] | undefined;
    const q = conv?.[0]?.value, a = conv?.[1]?.value;
    if (typeof q !== 'string' || typeof a !== 'string') {
      throw medllavaError('E_FORMAT', `${path}: record ${i} (${String(r['id'] ?? '?')}) has no question/answer pair in conversations`);
    }
    return {
      id: String(r['id'] ?? r['question_id'] ?? i), image: typeof r['image'] === 'string' ? r['image'] : undefined,
      answerType: String(r['answer_type'] ?? 'OPEN'), question: q.replace(/\n?<image>\n?/g, ' ').trim(), answer: a,
      questionType: typeof r['question_type'] === 'string' ? r['question_type'] : undefined,
      modality: typeof r['modality'] === 'string' ? r['modality'] : undefined,
    };
  });
}

export interface EvalVqaOptions {
  model: Model;
  /** a name for the answers' model_id */
  modelId?: string;
  data: string;
  /** the folder image paths are relative to (default: the data file's folder, or its parent when the images are there) */
  images?: string;
  /** answers JSONL to write (default: none) */
  answers?: string;
  /** the stricter variants: closed = exact match, open = clipped recall */
  strict?: boolean;
  /** at most this many questions (the first ones) */
  limit?: number;
  generate?: GenerateOptions;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export interface EvalVqaResult extends VqaScore {
  dataset: string;
  /** per answer_type / question_type / modality breakdowns, in percent */
  byModality: Record<string, VqaScore>;
  items: (VqaItem & { id: string; modality?: string })[];
}

/** the dataset's name as upstream's scorer derives it: the data file's folder */
export function datasetName(path: string): string {
  return basename(dirname(resolve(path)));
}

export async function evalVqa(o: EvalVqaOptions): Promise<EvalVqaResult> {
  let questions = readVqaFile(o.data);
  if (o.limit !== undefined) questions = questions.slice(0, o.limit);
  // default: the data file's folder — or its parent, when the images are there (a world's vqa/ beside images/)
  const first = questions.find((q) => q.image)?.image;
  const root = o.images ?? (first && !existsSync(join(dirname(o.data), first)) && existsSync(join(dirname(dirname(o.data)), first))
    ? dirname(dirname(o.data)) : dirname(o.data));
  for (const q of questions) {
    if (q.image && !existsSync(join(root, q.image))) {
      throw medllavaError('E_IO', `${q.id}: image ${join(root, q.image)} does not exist (pass --images, the folder the image paths are relative to)`);
    }
  }
  const gen: GenerateOptions = { temperature: 0, maxTokens: 64, ...o.generate, signal: o.signal };
  const items: EvalVqaResult['items'] = [];
  const lines: string[] = [];
  for (const [i, q] of questions.entries()) {
    if (o.signal?.aborted) throw medllavaError('E_ABORTED', `stopped after ${i} of ${questions.length} questions`);
    const text = await answerOnce(o.model, { text: q.question, image: q.image ? join(root, q.image) : undefined }, gen);
    items.push({ id: q.id, answerType: q.answerType, reference: q.answer, prediction: text, modality: q.modality });
    lines.push(JSON.stringify({ question_id: q.id, prompt: q.question, text, answer_id: `${q.id}-a`, model_id: o.modelId ?? 'medllava',
      metadata: { answer_type: q.answerType, gt: q.answer, ...(q.modality ? { modality: q.modality } : {}) } }));
    o.onProgress?.(i + 1, questions.length);
  }
  if (o.answers) writeFileAtomic(o.answers, lines.length ? `${lines.join('\n')}\n` : '');
  const score = scoreVqa(items, { strict: o.strict });
  const byModality: Record<string, VqaScore> = {};
  for (const m of new Set(items.map((x) => x.modality).filter((x): x is string => !!x))) {
    byModality[m] = scoreVqa(items.filter((x) => x.modality === m), { strict: o.strict });
  }
  return { ...score, dataset: datasetName(o.data), byModality, items };
}

/** the paper's table: a row per (model, dataset), Open (recall) and Closed (accuracy) */
export function vqaTable(rows: { name: string; dataset: string; score: VqaScore }[]): string {
  const datasets = [...new Set(rows.map((r) => r.dataset))];
  const models = [...new Set(rows.map((r) => r.name))];
  const head = `| model | ${datasets.map((d) => `${d} open | ${d} closed`).join(' | ')} |`;
  const sep = `|---|${datasets.map(() => '---:|---:').join('|')}|`;
  const fmt = (x: number) => Number.isNaN(x) ? '–' : x.toFixed(2);
  const body = models.map((m) => `| ${m} | ${datasets.map((d) => {
    const r = rows.find((x) => x.name === m && x.dataset === d);
    return r ? `${fmt(r.score.open)} | ${fmt(r.score.closed)}` : '– | –';
  }).join(' | ')} |`);
  return [head, sep, ...body].join('\n');
}
