/**
 * Report-generation metrics, as LLaVA-Rad scores findings generation:
 *   - BLEU-4: corpus BLEU with sacrebleu's semantics — its 13a tokenizer, n-grams up to 4 clipped against one
 *     reference, brevity penalty on total lengths, 'exp' smoothing for an order without matches — on a 0–100 scale;
 *   - ROUGE-L: rouge-score's semantics without a stemmer — lower-cased, every non-alphanumeric run a separator, the
 *     longest common subsequence's F-measure per pair, averaged (0–1 scale);
 *   - a findings F1: a rule-based labeller in the CheXpert labeller's manner — phrases mentioning each of the 14
 *     CheXpert observations, negation and uncertainty decided by NegEx-style trigger phrases in a window that
 *     ends at a terminator or the sentence's end (the CheXpert labeller decides them on a dependency parse, and
 *     CheXbert is a BERT model trained on those labels: this approximates both, it reproduces neither) — then
 *     CheXpert's aggregation (positive wins over uncertain over negative; No Finding when nothing but support
 *     devices is positive or uncertain) and micro / macro F1 over the 14 and the 5 common observations, uncertain
 *     counted as negative (LLaVA-Rad's default) or positive (`uncertainAsPositive`).
 * The phrase lists are written here.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

import { medllavaError } from '../errors.js';
import type { GenerateOptions } from '../generate.js';
import type { Model } from '../model/model.js';
import { writeFileAtomic } from '../util/files.js';
import { answerOnce, readRecords } from './answer.js';

// ---- BLEU (sacrebleu semantics) -----------------------------------------------------------------------------

/** sacrebleu's 13a tokenizer (mteval-v13a) */
export function tokenize13a(line: string): string {
  let s = line.replaceAll('<skipped>', '').replaceAll('-\n', '').replaceAll('\n', ' ');
  if (s.includes('&')) s = s.replaceAll('&quot;', '"').replaceAll('&amp;', '&').replaceAll('&lt;', '<').replaceAll('&gt;', '>');
  s = ` ${s} `;
  s = s.replace(/([{-~[-` -&(-+:-@/])/g, ' $1 ');
  s = s.replace(/([^0-9])([.,])/g, '$1 $2 ');
  s = s.replace(/([.,])([^0-9])/g, ' $1 $2');
  s = s.replace(/([0-9])(-)/g, '$1 $2 ');
  return s.split(/\s+/).filter((x) => x !== '').join(' ');
}

function ngrams(tokens: string[], n: number): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0; i + n <= tokens.length; i++) {
    const k = tokens.slice(i, i + n).join(' ');
    m.set(k, (m.get(k) ?? 0) + 1);
  }
  return m;
}

export interface BleuResult { score: number; precisions: number[]; bp: number; sysLen: number; refLen: number; counts: number[]; totals: number[] }

/** corpus BLEU on a 0–100 scale (sacrebleu's defaults: 13a, 'exp' smoothing, no lower-casing) */
export function corpusBleu(predictions: string[], references: string[], maxOrder = 4): BleuResult {
  if (predictions.length !== references.length) throw new Error(`${predictions.length} predictions for ${references.length} references`);
  const counts = new Array<number>(maxOrder).fill(0), totals = new Array<number>(maxOrder).fill(0);
  let sysLen = 0, refLen = 0;
  for (let i = 0; i < predictions.length; i++) {
    const h = tokenize13a(predictions[i]!).split(' ').filter(Boolean), r = tokenize13a(references[i]!).split(' ').filter(Boolean);
    sysLen += h.length;
    refLen += r.length;
    for (let n = 1; n <= maxOrder; n++) {
      const hn = ngrams(h, n), rn = ngrams(r, n);
      for (const [g, c] of hn) counts[n - 1]! += Math.min(c, rn.get(g) ?? 0);
      totals[n - 1]! += Math.max(0, h.length - n + 1);
    }
  }
  const precisions = new Array<number>(maxOrder).fill(0);
  let smooth = 1;
  for (let n = 0; n < maxOrder; n++) {
    if (totals[n] === 0) break;
    if (counts[n] === 0) { smooth *= 2; precisions[n] = 100 / (smooth * totals[n]!); } else precisions[n] = (100 * counts[n]!) / totals[n]!;
  }
  const bp = sysLen < refLen ? (sysLen > 0 ? Math.exp(1 - refLen / sysLen) : 0) : 1;
  const logs = precisions.map((p) => (p > 0 ? Math.log(p) : -9999999999));
  const score = bp * Math.exp(logs.reduce((a, b) => a + b, 0) / maxOrder);
  return { score, precisions, bp, sysLen, refLen, counts, totals };
}

// ---- ROUGE-L (rouge-score semantics) --------------------------------------------------------------------------

export function rougeTokens(s: string): string[] {
  return s.toLowerCase().replace(/[^a-z0-9]+/g, ' ').split(' ').filter((t) => /^[a-z0-9]+$/.test(t));
}

function lcs(a: string[], b: string[]): number {
  const prev = new Array<number>(b.length + 1).fill(0), cur = new Array<number>(b.length + 1).fill(0);
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) cur[j] = a[i - 1] === b[j - 1] ? prev[j - 1]! + 1 : Math.max(prev[j]!, cur[j - 1]!);
    for (let j = 0; j <= b.length; j++) prev[j] = cur[j]!;
  }
  return prev[b.length]!;
}

export function rougeL(prediction: string, reference: string): { precision: number; recall: number; fmeasure: number } {
  const p = rougeTokens(prediction), r = rougeTokens(reference);
  if (!p.length || !r.length) return { precision: 0, recall: 0, fmeasure: 0 };
  const l = lcs(r, p);
  const precision = l / p.length, recall = l / r.length;
  return { precision, recall, fmeasure: precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0 };
}

// ---- the findings labeller -----------------------------------------------------------------------------------

export const OBSERVATIONS = ['No Finding', 'Enlarged Cardiomediastinum', 'Cardiomegaly', 'Lung Opacity', 'Lung Lesion', 'Edema',
  'Consolidation', 'Pneumonia', 'Atelectasis', 'Pneumothorax', 'Pleural Effusion', 'Pleural Other', 'Fracture', 'Support Devices'] as const;
export type Observation = (typeof OBSERVATIONS)[number];
export const FIVE: Observation[] = ['Cardiomegaly', 'Edema', 'Consolidation', 'Atelectasis', 'Pleural Effusion'];

/** 1 positive, 0 negative, -1 uncertain, null not mentioned */
export type Label = 1 | 0 | -1 | null;

const MENTIONS: Record<Exclude<Observation, 'No Finding'>, string[]> = {
  // a bare structure ("heart size", "the mediastinum") is a mention too: "normal", "unremarkable"… negate it
  'Enlarged Cardiomediastinum': ['enlarged cardiomediastinum', 'widened mediastinum', 'mediastinal widening', 'enlarged mediastinum',
    'cardiomediastinal silhouette', 'cardiomediastinum', 'mediastinal contour', 'mediastinal contours', 'mediastinal silhouette', 'mediastinum'],
  Cardiomegaly: ['cardiomegaly', 'enlarged heart', 'cardiac enlargement', 'enlargement of the heart', 'heart size', 'cardiac size',
    'cardiac silhouette', 'cardiac contour', 'cardiac shadow', 'the heart'],
  'Lung Opacity': ['opacity', 'opacities', 'opacification', 'opacified', 'infiltrate', 'infiltrates', 'infiltration', 'airspace disease',
    'air-space disease', 'air space disease', 'ground-glass', 'ground glass', 'haziness', 'hazy', 'increased density', 'reticular',
    'interstitial markings', 'interstitial pattern', 'scarring'],
  'Lung Lesion': ['nodule', 'nodules', 'nodular', 'mass', 'masses', 'lesion', 'lesions', 'tumor', 'neoplasm', 'granuloma', 'granulomas'],
  Edema: ['edema', 'heart failure', 'chf', 'vascular congestion', 'pulmonary congestion', 'kerley'],
  Consolidation: ['consolidation', 'consolidations', 'consolidative', 'consolidated'],
  Pneumonia: ['pneumonia', 'pneumonias', 'infectious process', 'infection'],
  Atelectasis: ['atelectasis', 'atelectatic', 'collapse', 'collapsed', 'volume loss'],
  Pneumothorax: ['pneumothorax', 'pneumothoraces'],
  'Pleural Effusion': ['pleural effusion', 'pleural effusions', 'effusion', 'effusions', 'pleural fluid', 'blunting of the costophrenic',
    'costophrenic angle blunting', 'costophrenic angles are blunted'],
  'Pleural Other': ['pleural thickening', 'pleural plaque', 'pleural plaques', 'pleural scarring', 'fibrothorax', 'pleural calcification'],
  Fracture: ['fracture', 'fractures', 'fractured'],
  'Support Devices': ['endotracheal tube', 'et tube', 'nasogastric tube', 'ng tube', 'chest tube', 'tracheostomy', 'central line',
    'central venous catheter', 'picc', 'catheter', 'pacemaker', 'pacer', 'icd', 'sternotomy wires', 'sternal wires', 'stent', 'port',
    'drain', 'leads', 'device', 'devices', 'support devices', 'surgical clips', 'valve replacement'],
};
/** phrases that contain a mention but mean something else */
const UNMENTIONS: Partial<Record<Observation, string[]>> = {
  'Lung Lesion': ['mass effect'],
  'Lung Opacity': ['pleural scarring'],
  'Pleural Effusion': ['pericardial effusion'],
  Atelectasis: ['collapsed vertebra'],
};
const NEG_PRE = ['no evidence of', 'no signs of', 'no sign of', 'negative for', 'free of', 'absence of', 'resolution of', 'resolved',
  'without', 'no', 'not', 'nor', 'neither', 'clear of', 'rather than', 'ruled out', 'normal'];
const NEG_POST = ['is not seen', 'are not seen', 'not identified', 'is not identified', 'are not identified', 'is absent', 'are absent',
  'has resolved', 'have resolved', 'is not present', 'are not present', 'is excluded', 'not seen', 'normal', 'within normal limits',
  'unremarkable', 'is not enlarged', 'are not enlarged', 'not enlarged'];
const UNC_PRE = ['cannot be excluded', 'cannot exclude', 'can not exclude', 'not excluded', 'could be', 'may represent', 'may be',
  'may', 'might', 'possible', 'possibly', 'probable', 'probably', 'questionable', 'suspicious for', 'concerning for', 'suggestive of',
  'suggests', 'suggesting', 'equivocal', 'borderline', 'versus', 'vs', 'differential'];
const UNC_POST = ['cannot be excluded', 'is not excluded', 'can not be ruled out', 'cannot be ruled out', 'is possible', 'is questionable'];
const TERMINATORS = ['but', 'however', 'although', 'though', 'except', 'aside from', 'apart from', 'otherwise', 'which', 'whereas'];
const WINDOW = 8;

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const phraseRe = (ps: string[]) => new RegExp(`\\b(?:${[...ps].sort((a, b) => b.length - a.length).map(escape).join('|')})\\b`, 'g');
const RE = {
  negPre: phraseRe(NEG_PRE), negPost: phraseRe(NEG_POST), uncPre: phraseRe(UNC_PRE), uncPost: phraseRe(UNC_POST), term: phraseRe(TERMINATORS),
};

/** the labeller's cleaning (CheXpert's kind): lower case, "and/or" → "or", "a/b" → "a or b", spaces after , and . */
function clean(report: string): string {
  return report.toLowerCase().replace(/and\/or/g, 'or').replace(/(?<=[a-z])\/(?=[a-z])/g, ' or ').replace(/\.\./g, '.')
    .replace(/([,.])(?=\S)/g, '$1 ').replace(/\s+/g, ' ').trim();
}

/** the text of a clause around a mention: from the last terminator before it to the next after it, within the sentence */
function scope(sentence: string, start: number, end: number): { before: string; after: string } {
  let before = sentence.slice(0, start), after = sentence.slice(end);
  let m: RegExpExecArray | null, last = -1;
  RE.term.lastIndex = 0;
  while ((m = RE.term.exec(before))) last = m.index + m[0].length;
  if (last >= 0) before = before.slice(last);
  RE.term.lastIndex = 0;
  const next = RE.term.exec(after);
  if (next) after = after.slice(0, next.index);
  const words = before.trim().split(' ');
  return { before: words.slice(Math.max(0, words.length - WINDOW)).join(' '), after: after.trim().split(' ').slice(0, WINDOW).join(' ') };
}

const has = (re: RegExp, s: string) => { re.lastIndex = 0; return re.test(s); };

/** the 14 CheXpert labels of one report */
export function labelReport(report: string): Record<Observation, Label> {
  const out = Object.fromEntries(OBSERVATIONS.map((o) => [o, null])) as Record<Observation, Label>;
  const found: Record<string, Label[]> = {};
  const add = (o: Observation, l: Label) => { (found[o] ??= []).push(l); };
  for (const sentence of clean(report).split(/(?<=[.;:!?])\s+|\n+/)) {
    for (const [obs, phrases] of Object.entries(MENTIONS) as [Exclude<Observation, 'No Finding'>, string[]][]) {
      const un = UNMENTIONS[obs] ? phraseRe(UNMENTIONS[obs]!) : null;
      const re = phraseRe(phrases);
      let m: RegExpExecArray | null;
      const taken: [number, number][] = [];
      while ((m = re.exec(sentence))) {
        const s = m.index, e = s + m[0].length;
        if (taken.some(([a, b]) => s < b && e > a)) continue;
        taken.push([s, e]);
        if (un) {
          un.lastIndex = 0;
          let u: RegExpExecArray | null, skip = false;
          while ((u = un.exec(sentence))) if (s < u.index + u[0].length && e > u.index) skip = true;
          if (skip) continue;
        }
        const { before, after } = scope(sentence, s, e);
        const label: Label = has(RE.uncPre, before) || has(RE.uncPost, after) ? -1 : has(RE.negPre, before) || has(RE.negPost, after) ? 0 : 1;
        add(obs, label);
        if (obs === 'Edema' && /heart failure|chf/.test(m[0]) && label !== 0) add('Cardiomegaly', -1);
      }
    }
  }
  for (const [o, ls] of Object.entries(found) as [Observation, Label[]][]) out[o] = ls.includes(1) ? 1 : ls.includes(-1) ? -1 : 0;
  const anyFinding = OBSERVATIONS.some((o) => o !== 'No Finding' && o !== 'Support Devices' && (out[o] === 1 || out[o] === -1));
  out['No Finding'] = anyFinding ? null : 1;
  return out;
}

export interface F1Scores { micro14: number; macro14: number; micro5: number; macro5: number; perClass: Record<string, number> }

/** micro / macro F1 (sklearn's, zero_division = 0) of the predictions' labels against the references' */
export function findingsF1(predLabels: Record<Observation, Label>[], refLabels: Record<Observation, Label>[], uncertainAsPositive = false): F1Scores {
  const bin = (l: Label) => (l === 1 || (uncertainAsPositive && l === -1) ? 1 : 0);
  const perClass: Record<string, number> = {};
  const stats = new Map<Observation, { tp: number; fp: number; fn: number }>();
  for (const o of OBSERVATIONS) {
    let tp = 0, fp = 0, fn = 0;
    for (let i = 0; i < refLabels.length; i++) {
      const y = bin(refLabels[i]![o]), p = bin(predLabels[i]![o]);
      if (y && p) tp++; else if (p) fp++; else if (y) fn++;
    }
    stats.set(o, { tp, fp, fn });
    perClass[o] = tp + fp + fn === 0 ? 0 : (2 * tp) / (2 * tp + fp + fn);
  }
  const micro = (os: readonly Observation[]) => {
    let tp = 0, fp = 0, fn = 0;
    for (const o of os) { const s = stats.get(o)!; tp += s.tp; fp += s.fp; fn += s.fn; }
    return tp + fp + fn === 0 ? 0 : (2 * tp) / (2 * tp + fp + fn);
  };
  const macro = (os: readonly Observation[]) => os.reduce((a, o) => a + perClass[o]!, 0) / os.length;
  return { micro14: micro(OBSERVATIONS), macro14: macro(OBSERVATIONS), micro5: micro(FIVE), macro5: macro(FIVE), perClass };
}

export interface ReportScores { bleu4: number; bleu1: number; rougeL: number; f1: F1Scores; f1Plus: F1Scores; count: number }

/** every report metric over (prediction, reference) pairs */
export function scoreReports(predictions: string[], references: string[]): ReportScores {
  const pl = predictions.map(labelReport), rl = references.map(labelReport);
  return {
    bleu4: corpusBleu(predictions, references, 4).score, bleu1: corpusBleu(predictions, references, 1).score,
    rougeL: predictions.reduce((a, p, i) => a + rougeL(p, references[i]!).fmeasure, 0) / Math.max(1, predictions.length),
    f1: findingsF1(pl, rl, false), f1Plus: findingsF1(pl, rl, true), count: predictions.length,
  };
}

// ---- the runner (`medllava eval report`) ------------------------------------------------------------------------

export interface EvalReportOptions {
  model: Model;
  /** LLaVA conversation JSON / JSON lines: the first human turn is the prompt, the first gpt turn the reference */
  data: string;
  images?: string;
  /** predictions as JSON lines ({id, query, reference, prediction}, LLaVA-Rad's output layout) */
  answers?: string;
  limit?: number;
  generate?: GenerateOptions;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export async function evalReport(o: EvalReportOptions): Promise<ReportScores & { rows: { id: string; query: string; reference: string; prediction: string }[] }> {
  let records = readRecords(o.data, 'records') as { id?: string; image?: string; conversations?: { from: string; value: string }[] }[];
  if (o.limit !== undefined) records = records.slice(0, o.limit);
  const root = o.images ?? dirname(o.data);
  // every image checked before anything is generated
  for (const r of records) if (r.image && !existsSync(join(root, r.image))) throw medllavaError('E_IO', `${join(root, r.image)} does not exist (pass --images)`);
  const rows: { id: string; query: string; reference: string; prediction: string }[] = [];
  for (const [i, r] of records.entries()) {
    if (o.signal?.aborted) throw medllavaError('E_ABORTED', `stopped after ${i} of ${records.length} reports`);
    const q = r.conversations?.find((t) => t.from === 'human')?.value, ref = r.conversations?.find((t) => t.from === 'gpt')?.value;
    if (typeof q !== 'string' || typeof ref !== 'string') throw medllavaError('E_FORMAT', `${o.data}: record ${i} has no human / gpt turn`);
    const query = q.replace(/\n?<image>\n?/g, ' ').trim();
    const prediction = await answerOnce(o.model, { text: query, image: r.image ? join(root, r.image) : undefined },
      { temperature: 0, maxTokens: 256, ...o.generate, signal: o.signal });
    rows.push({ id: String(r.id ?? i), query, reference: ref, prediction });
    o.onProgress?.(i + 1, records.length);
  }
  if (o.answers) writeFileAtomic(o.answers, rows.map((r) => `${JSON.stringify(r)}\n`).join(''));
  return { ...scoreReports(rows.map((r) => r.prediction), rows.map((r) => r.reference)), rows };
}

/** LLaVA-Rad's table: F1-CheXpert-rules micro/macro over 14 and 5, BLEU-1, BLEU-4, ROUGE-L (all in %) */
export function reportTable(rows: { name: string; scores: ReportScores }[]): string {
  const f = (x: number) => x.toFixed(2);
  return ['| model | reports | micro-F1-14 | macro-F1-14 | micro-F1-5 | macro-F1-5 | BLEU-1 | BLEU-4 | ROUGE-L |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map(({ name, scores: s }) => `| ${name} | ${s.count} | ${f(100 * s.f1.micro14)} | ${f(100 * s.f1.macro14)} | ${f(100 * s.f1.micro5)} | ${f(100 * s.f1.macro5)} | ${f(s.bleu1)} | ${f(s.bleu4)} | ${f(100 * s.rougeL)} |`)].join('\n');
}
