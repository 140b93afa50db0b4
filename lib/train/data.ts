/**
 * Training data in LLaVA's layouts, read without surprises:
 *   - LLaVA's conversation JSON (`[{ id, image?, conversations: [{ from: 'human' | 'gpt', value }] }]`) or the
 *     same records as JSON lines; LLaVA-Med's VQA train.json / test.json are this layout with `answer_type`
 *     (and sometimes the key misspelt `conversatons`, which upstream also accepts);
 *   - `<image>` anywhere in a turn moves to the front of it (`<image>\n` + the rest, trimmed), as LLaVA's
 *     preprocess_multimodal does;
 *   - every record that cannot be used — malformed, turns out of order, an image that is not there — is
 *     reported by id with the reason, never dropped silently or swapped for another sample; `onProblem`
 *     decides whether the load goes on without it ('skip', the default) or stops ('stop': E_FORMAT);
 *   - batches grouped as LLaVA's `group_by_modality_length` does: each modality shuffled and cut into
 *     megabatches sorted by length, the megabatches of both shuffled together, the two leftovers last —
 *     so every optimizer step is image-only or text-only — from a seeded generator (the order is data a
 *     checkpoint keeps).
 */
import { existsSync, readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';

import { medllavaError } from '../errors.js';
import { SeededRandom } from '../sampling.js';
import { IMAGE_TOKEN_INDEX, type Tokenizer } from '../tokenizer/tokenizer.js';
import { getTemplate, trainingExample, type Message, type TemplateDefinition } from '../tokenizer/templates.js';

export interface ConversationTurn {
  from: 'human' | 'gpt';
  value: string;
}

export interface ConversationSample {
  id: string;
  /** the image's path as the record names it, and where it resolved (absolute) */
  image?: string;
  imagePath?: string;
  conversations: ConversationTurn[];
  /** LLaVA-Med VQA: 'OPEN' | 'CLOSED' (PathVQA also 'other', 'number', 'yes/no') */
  answerType?: string;
}

export interface DataProblem {
  /** the record's id (or `#<index>` when it has none) and its position in the file */
  id: string;
  index: number;
  reason: string;
}

export interface LoadedData {
  samples: ConversationSample[];
  problems: DataProblem[];
}

export interface LoadDataOptions {
  /** folder the records' `image` paths are relative to (default: the data file's folder) */
  imageFolder?: string;
  /** a record that cannot be used: 'skip' it (reported in `problems`, the default) or 'stop' with E_FORMAT */
  onProblem?: 'skip' | 'stop';
}

/** Reads a LLaVA conversation file (JSON array, or JSON lines when the file is not one array). */
export function loadConversations(path: string, options: LoadDataOptions = {}): LoadedData {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw medllavaError('E_IO', `cannot read the data file ${path}: ${(e as Error).message}`);
  }
  const folder = options.imageFolder ?? resolve(path, '..');
  const records: { value: unknown; index: number; parseError?: string }[] = [];
  const trimmed = text.trimStart();
  if (trimmed.startsWith('[')) {
    let all: unknown;
    try {
      all = JSON.parse(text);
    } catch (e) {
      throw medllavaError('E_FORMAT', `${path} is not valid JSON: ${(e as Error).message}`);
    }
    (all as unknown[]).forEach((value, index) => records.push({ value, index }));
  } else {
    text.split('\n').forEach((line, lineNo) => {
      if (line.trim() === '') return;
      try {
        records.push({ value: JSON.parse(line), index: records.length });
      } catch (e) {
        records.push({ value: undefined, index: records.length, parseError: `line ${lineNo + 1} is not valid JSON: ${(e as Error).message}` });
      }
    });
  }
  const out: LoadedData = { samples: [], problems: [] };
  const seen = new Set<string>();
  for (const r of records) {
    const rec = r.value as Record<string, unknown> | undefined;
    const id = rec && typeof rec === 'object' && (typeof rec['id'] === 'string' || typeof rec['id'] === 'number') ? String(rec['id']) : `#${r.index}`;
    const reason = r.parseError ?? check(rec, folder);
    let problem = reason;
    if (!problem && seen.has(id)) problem = `the id '${id}' is used twice`;
    if (problem) {
      if (options.onProblem === 'stop') throw medllavaError('E_FORMAT', `${path}: record ${id} (#${r.index}): ${problem}`);
      out.problems.push({ id, index: r.index, reason: problem });
      continue;
    }
    seen.add(id);
    const turns = (rec!['conversations'] ?? rec!['conversatons']) as ConversationTurn[];
    const sample: ConversationSample = { id, conversations: turns.map((t) => ({ from: t.from, value: t.value })) };
    if (typeof rec!['image'] === 'string') {
      sample.image = rec!['image'] as string;
      sample.imagePath = imagePathOf(sample.image, folder);
    }
    if (typeof rec!['answer_type'] === 'string') sample.answerType = rec!['answer_type'] as string;
    out.samples.push(sample);
  }
  return out;
}

function imagePathOf(image: string, folder: string): string {
  return isAbsolute(image) ? image : resolve(folder, image);
}

/** Why a record cannot be used, or undefined when it can. */
function check(rec: Record<string, unknown> | undefined, folder: string): string | undefined {
  if (!rec || typeof rec !== 'object' || Array.isArray(rec)) return 'it is not an object';
  const turns = rec['conversations'] ?? rec['conversatons'];
  if (!Array.isArray(turns) || turns.length === 0) return 'it has no conversations';
  for (const [i, t] of turns.entries()) {
    const turn = t as Record<string, unknown>;
    if (!turn || typeof turn.value !== 'string') return `turn ${i} has no text value`;
    const want = i % 2 === 0 ? 'human' : 'gpt';
    if (turn.from !== want) return `turn ${i} is from '${String(turn.from)}', expected '${want}' (turns alternate, human first)`;
  }
  if (turns.length % 2 !== 0) return 'the last turn is a question without its answer';
  const image = rec['image'];
  if (image !== undefined) {
    if (typeof image !== 'string' || image === '') return 'its image is not a path';
    const p = imagePathOf(image, folder);
    if (!existsSync(p)) return `its image ${p} does not exist`;
  }
  const tags = (turns as ConversationTurn[]).reduce((n, t) => n + t.value.split('<image>').length - 1, 0);
  if (image === undefined && tags > 0) return 'it has an <image> tag but no image';
  if (tags > 1) return `it has ${tags} <image> tags (one image per sample)`;
  return undefined;
}

/**
 * The sample as chat messages for trainingExample(): the turn that holds `<image>` carries the image
 * (its tag removed and the text trimmed — trainingExample puts `<image>\n` first, as preprocess_multimodal
 * does); a sample with an image but no tag gets it on its first question, as LLaVA-Med's data has it.
 * `imageInPlace`: the tag stays where it is (LLaVA-Med v1.0's trainer replaces it in place).
 */
export function sampleMessages(sample: ConversationSample, options: { imageInPlace?: boolean } = {}): Message[] {
  const tagged = sample.conversations.findIndex((t) => t.value.includes('<image>'));
  const at = sample.image === undefined ? -1 : tagged >= 0 ? tagged : 0;
  return sample.conversations.map((t, i) => {
    const text = i !== at ? t.value : options.imageInPlace ? t.value : t.value.replaceAll('<image>', '').trim();
    const m: Message = { role: t.from === 'human' ? 'user' : 'assistant', text };
    if (i === at) m.image = true;
    return m;
  });
}

/** LLaVA's modality length: the words of all turns, positive for a sample with an image, negative without. */
export function modalityLength(sample: ConversationSample): number {
  const words = sample.conversations.reduce((n, t) => n + t.value.split(/\s+/).filter((w) => w !== '').length, 0);
  const len = Math.max(1, words);
  return sample.image !== undefined ? len : -len;
}

/** A uniform random permutation of 0 … n−1 (Fisher–Yates on `rng`): an epoch's order without length grouping. */
export function shuffledOrder(n: number, rng: SeededRandom): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [p[i], p[j]] = [p[j]!, p[i]!];
  }
  return p;
}

/** Splits a megabatch (sorted longest first) into `parts` batches of balanced total length. */
function balancedSplit(indices: number[], lengths: number[], parts: number): number[][] {
  if (indices.length % parts !== 0) return Array.from({ length: parts }, (_, k) => indices.filter((_, i) => i % parts === k));
  const per = indices.length / parts;
  const chunks: number[][] = Array.from({ length: parts }, () => []);
  const totals = new Array<number>(parts).fill(0);
  for (const i of indices) {
    let k = 0;
    for (let c = 1; c < parts; c++) if (totals[c]! < totals[k]!) k = c;
    chunks[k]!.push(i);
    totals[k] = totals[k]! + lengths[i]!;
    if (chunks[k]!.length === per) totals[k] = Infinity;
  }
  return chunks;
}

/** One modality: shuffled, cut into megabatches of `mega`, each sorted longest first and balanced over `world`. */
function lengthGrouped(lengths: number[], batch: number, world: number, rng: SeededRandom): number[] {
  const order = shuffledOrder(lengths.length, rng);
  const mega = world * batch, out: number[] = [];
  for (let s = 0; s < order.length; s += mega) {
    const mb = order.slice(s, s + mega).sort((a, b) => lengths[b]! - lengths[a]!);
    for (const chunk of balancedSplit(mb, lengths, world)) out.push(...chunk);
  }
  return out;
}

/**
 * The sample order of one epoch, as LLaVA's group_by_modality_length builds it from `lengths`
 * (modalityLength: > 0 with an image, < 0 text-only), `batch` samples per device step and `world`
 * = devices × accumulation steps: each modality in megabatches of world × batch sorted by length,
 * the full megabatches of both modalities shuffled together, the two leftovers last (sorted by index).
 * A dataset of one modality is length-grouped alone. Deterministic for a given `rng` state.
 */
export function groupByModalityLength(lengths: number[], batch: number, world: number, rng: SeededRandom): number[] {
  if (lengths.some((l) => l === 0)) throw medllavaError('E_ARGUMENT', 'a modality length is 0');
  if (!(batch >= 1 && world >= 1)) throw medllavaError('E_ARGUMENT', 'batch and world must be ≥ 1');
  const abs = lengths.map(Math.abs);
  if (lengths.every((l) => l > 0) || lengths.every((l) => l < 0)) return lengthGrouped(abs, batch, world, rng);
  const mm = lengths.flatMap((l, i) => (l > 0 ? [i] : [])), text = lengths.flatMap((l, i) => (l < 0 ? [i] : []));
  const mmOrder = lengthGrouped(mm.map((i) => abs[i]!), batch, world, rng).map((k) => mm[k]!);
  const textOrder = lengthGrouped(text.map((i) => abs[i]!), batch, world, rng).map((k) => text[k]!);
  const mega = world * batch;
  const cut = (o: number[]) => Array.from({ length: Math.ceil(o.length / mega) }, (_, k) => o.slice(k * mega, (k + 1) * mega));
  const a = cut(mmOrder), b = cut(textOrder);
  const leftover = [...a.pop()!, ...b.pop()!].sort((x, y) => x - y);
  const full = [...a, ...b];
  const order = shuffledOrder(full.length, rng).map((k) => full[k]!);
  if (leftover.length) order.push(leftover);
  return order.flat();
}

/**
 * One sample as a training example (trainingExample's ids and labels, −200 for the image), truncated as
 * LLaVA truncates: the text ids to `maxLength` (its collator), then — with `imageRows`, the rows an image
 * expands to — so that the expanded sequence fits `maxLength` (its model's truncation after the splice).
 * A sample that cannot train is a `problem` (reported by the caller with the sample's id): a tokenization
 * mismatch (upstream would silently zero its loss), an image the truncation would cut, nothing left to learn.
 */
export function sampleExample(tokenizer: Tokenizer, template: string | TemplateDefinition, sample: ConversationSample,
  options: { maxLength?: number; imageRows?: number } = {}): { inputIds: number[]; labels: number[] } | { problem: string } {
  const t = typeof template === 'string' ? getTemplate(template) : template;
  const ex = trainingExample(tokenizer, t, sampleMessages(sample, { imageInPlace: t.style === 'single' }));
  if (ex.mismatch) return { problem: 'tokenization mismatch: the rounds\' tokens do not add up to the conversation\'s' };
  let { inputIds, labels } = ex;
  const max = options.maxLength;
  if (max !== undefined) {
    if (inputIds.length > max) inputIds = inputIds.slice(0, max), labels = labels.slice(0, max);
    const images = inputIds.filter((t) => t === IMAGE_TOKEN_INDEX).length;
    const expanded = inputIds.length + images * ((options.imageRows ?? 1) - 1);
    if (expanded > max) {
      const keep = inputIds.length - (expanded - max);
      if (inputIds.slice(keep).includes(IMAGE_TOKEN_INDEX) || keep < 1) return { problem: `its image does not fit maxLength ${max}` };
      inputIds = inputIds.slice(0, keep), labels = labels.slice(0, keep);
    }
    if (sample.image !== undefined && !inputIds.includes(IMAGE_TOKEN_INDEX)) return { problem: `its image is cut off by maxLength ${max}` };
  }
  if (!labels.some((l) => l >= 0)) return { problem: 'no label is left to learn from' };
  return { inputIds, labels };
}
