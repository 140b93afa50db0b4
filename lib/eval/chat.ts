/**
 * `medllava eval chat`: LLaVA-Med's visual-chat evaluation. The model answers each question of a qa50-layout
 * file ({question_id, image, text, gpt4_answer, fig_caption, fig_label, in_text_mention, domain, type}); then
 *   - with a judge endpoint (any OpenAI-compatible chat API): the judge sees the figure's caption and citing
 *     sentences (not the image), the question, the reference answer as Assistant 1 and the model's as Assistant 2,
 *     and scores both 1–10 on its first line; the relative score is 100 · mean over questions of model / reference
 *     (a mean of ratios, as upstream's summary computes it), by type (conversation / detailed description), by
 *     domain and overall;
 *   - without one, on the synthetic world (whose ground truth is known): each answer is checked against the truth
 *     — the facts the reference answer states (finding or normality, side, place, count, modality) must be stated,
 *     and any finding the case does not have, a wrong side, or an abnormality in a normal case asserted without
 *     negation is a hallucination. Score = 10 × share of facts stated, halved when it hallucinates; the reference
 *     scores 10 by construction, so the relative score is the same mean of ratios. A small model never judges
 *     itself.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

import { medllavaError } from '../errors.js';
import type { GenerateOptions } from '../generate.js';
import type { Model } from '../model/model.js';
import { FINDINGS, MODALITIES, type Truth } from '../synth/truth.js';
import { readWorldTruth } from '../synth/world.js';
import { writeFileAtomic } from '../util/files.js';
import { chatCompletion } from '../util/openai.js';
import { answerOnce } from './answer.js';

export interface ChatQuestion {
  question_id: number | string;
  image: string;
  text: string;
  gpt4_answer: string;
  fig_caption?: string;
  fig_label?: string;
  in_text_mention?: { tokens: string }[] | null;
  domain?: Record<string, boolean>;
  type: string;
  pair_id?: string;
}

export function readChatQuestions(path: string): ChatQuestion[] {
  let text: string;
  try { text = readFileSync(path, 'utf8'); } catch (e) { throw medllavaError('E_IO', `${path}: ${(e as Error).message}`); }
  return text.split('\n').filter((l) => l.trim()).map((l, i) => {
    let r: ChatQuestion;
    try { r = JSON.parse(l) as ChatQuestion; } catch (e) { throw medllavaError('E_FORMAT', `${path}: line ${i + 1}: ${(e as Error).message}`); }
    if (typeof r.text !== 'string' || typeof r.gpt4_answer !== 'string' || typeof r.image !== 'string') {
      throw medllavaError('E_FORMAT', `${path}: line ${i + 1} lacks text, gpt4_answer or image (the qa50 layout)`);
    }
    return r;
  });
}

/** the question's domain as upstream picks it: the first true flag in the order chest_xray, mri, histology, gross, ct_scan */
export function questionDomain(q: ChatQuestion): string {
  for (const d of ['chest_xray', 'mri', 'histology', 'gross', 'ct_scan']) if (q.domain?.[d]) return d;
  return 'unknown';
}

export const JUDGE_SYSTEM = 'You are a careful reviewer who checks how well AI assistants answer questions about biomedical images.';
export const JUDGE_INSTRUCTION = 'We would like your feedback on two AI assistants answering the question above about a biomedical image, ' +
  'which you know only through its caption and the sentences citing it. Rate the helpfulness, relevance, accuracy and level of detail ' +
  'of each answer with one overall score from 1 to 10, higher being better. On the first line write only the two scores, for ' +
  'Assistant 1 and Assistant 2, separated by a space. Then explain your ratings, without letting the order of the answers sway you.';

export function judgeMessages(q: ChatQuestion, answer: string): { role: 'system' | 'user'; content: string }[] {
  const mentions = (q.in_text_mention ?? []).map((m) => `\t- ${m.tokens}`).join('\n');
  const user = `[Context]\n${q.fig_label ?? 'Figure'}: ${q.fig_caption ?? ''}\n\n${mentions}\n\n[Question]\n${q.text.replace(/\n?<image>$/, '')}\n\n` +
    `[Assistant 1]\n${q.gpt4_answer}\n\n[End of Assistant 1]\n\n[Assistant 2]\n${answer}\n\n[End of Assistant 2]\n\n[System]\n${JUDGE_INSTRUCTION}\n\n`;
  return [{ role: 'system', content: JUDGE_SYSTEM }, { role: 'user', content: user }];
}

/** the judge's first line → (reference score, model score); null unless it holds exactly two numbers */
export function parseJudgeScores(text: string): [number, number] | null {
  const first = text.trim().split('\n')[0]!.trim().replace(',', ' ');
  const parts = first.split(/\s+/);
  if (parts.length !== 2) return null;
  const [a, b] = parts.map(Number) as [number, number];
  return Number.isFinite(a) && Number.isFinite(b) ? [a, b] : null;
}

// ---- the ground-truth scorer -------------------------------------------------------------------------------

const MODALITY_TERMS: Record<string, string[]> = {
  chest_xray: ['x-ray', 'radiograph'], ct_scan: ['ct', 'computed tomography'], mri: ['mri', 'magnetic resonance', 'mr image'],
  histology: ['h&e', 'hematoxylin', 'immunohisto', 'ihc', 'histolog', 'section', 'microscop'], gross: ['gross', 'specimen', 'cut surface', 'resected'],
};
const FINDING_TERMS: Record<string, string[]> = {
  nodule: ['nodule'], mass: ['mass'], 'pleural effusion': ['effusion'], cardiomegaly: ['cardiomegaly', 'enlarged cardiac', 'enlarged heart'],
  pneumothorax: ['pneumothorax'], 'liver lesion': ['liver lesion', 'lesion in the liver', 'hypodense lesion', 'hypodense liver lesion'],
  'renal mass': ['mass'], 'white matter lesions': ['white matter lesion'], carcinoma: ['carcinoma'], inflammation: ['inflammat', 'lymphocytic', 'infiltrate'],
  tumor: ['tumor', 'tumour'], cyst: ['cyst'], hemorrhage: ['hemorrhage', 'haemorrhage'],
};
const NORMAL_TERMS = ['normal', 'unremarkable', 'no focal', 'no acute', 'nothing abnormal'];
const NEGATIONS = /\b(no|not|without|absent|negative for|free of)\b[^.;]*$/;

/** whether `term` occurs in `text` outside a negated clause ("no effusion", "without a mass") */
function asserts(text: string, term: string): boolean {
  let at = text.indexOf(term);
  while (at >= 0) {
    const before = text.slice(Math.max(0, at - 40), at);
    if (!NEGATIONS.test(before)) return true;
    at = text.indexOf(term, at + term.length);
  }
  return false;
}
const mentions = (text: string, terms: string[]) => terms.some((t) => text.includes(t));

/** the facts of `t` that `text` states (each a key), and the false things it asserts */
export function truthFacts(text: string, t: Truth): { stated: Set<string>; hallucinations: string[] } {
  const s = text.toLowerCase();
  const stated = new Set<string>();
  if (mentions(s, MODALITY_TERMS[t.modality] ?? [])) stated.add('modality');
  if (t.finding === 'none') { if (mentions(s, NORMAL_TERMS)) stated.add('finding'); } else if ((FINDING_TERMS[t.finding] ?? [t.finding]).some((x) => asserts(s, x))) stated.add('finding');
  if (t.side && new RegExp(`\\b${t.side}\\b`).test(s)) stated.add('side');
  if (t.location && t.location !== t.organ && s.includes(t.location.split(' ')[0]!)) stated.add('location');
  if (t.count && t.count > 1 && (s.includes(String(t.count)) || s.includes(['zero', 'one', 'two', 'three', 'four', 'five'][t.count] ?? '#'))) stated.add('count');
  const hallucinations: string[] = [];
  const all = new Set(MODALITIES.flatMap((m) => FINDINGS[m].slice(1)));
  const claimed = new Set<string>(); // terms already counted ('mass' is both a mass and a renal mass)
  for (const f of all) {
    const terms = FINDING_TERMS[f] ?? [f];
    if (f === t.finding || terms.some((x) => (FINDING_TERMS[t.finding] ?? []).includes(x) || claimed.has(x))) continue;
    const hit = terms.filter((x) => asserts(s, x));
    if (hit.length) { hallucinations.push(f); for (const x of terms) claimed.add(x); }
  }
  if (t.side) {
    const other = t.side === 'left' ? 'right' : 'left';
    if (new RegExp(`\\b${other}\\b`).test(s) && !new RegExp(`\\b${t.side}\\b`).test(s)) hallucinations.push(`${other} side`);
  }
  return { stated, hallucinations };
}

/** 1–10 like a judge's score: the share of the reference's facts the answer states, halved by a hallucination */
export function truthScore(answer: string, reference: string, t: Truth): { score: number; reference: number; hallucinations: string[] } {
  const want = truthFacts(reference, t).stated;
  const got = truthFacts(answer, t);
  const share = want.size ? [...want].filter((k) => got.stated.has(k)).length / want.size : 1;
  const score = Math.max(1, 10 * share * (got.hallucinations.length ? 0.5 : 1));
  return { score, reference: 10, hallucinations: got.hallucinations };
}

// ---- the evaluation ---------------------------------------------------------------------------------------

export interface EvalChatOptions {
  model: Model;
  questions: string;
  /** the folder image paths are relative to (default: the questions file's folder, then its parent) */
  images?: string;
  /** an OpenAI-compatible judge; without it, the synthetic world's ground truth (`world`) scores the answers */
  judge?: { endpoint: string; model?: string; apiKey?: string; retries?: number };
  /** the synthetic world's folder (truth.jsonl); default: the questions file's parent folder */
  world?: string;
  /** answers (and scores) as JSON lines */
  answers?: string;
  limit?: number;
  generate?: GenerateOptions;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export interface ChatGroupScore { relative: number; modelScore: number; referenceScore: number; count: number; hallucinationRate?: number }
export interface EvalChatResult {
  judge: 'endpoint' | 'truth';
  overall: ChatGroupScore;
  byType: Record<string, ChatGroupScore>;
  byDomain: Record<string, ChatGroupScore>;
  rows: { question_id: number | string; type: string; domain: string; answer: string; modelScore: number; referenceScore: number; hallucinations?: string[] }[];
}

function group(rows: EvalChatResult['rows']): ChatGroupScore {
  const n = rows.length;
  const mean = (f: (r: EvalChatResult['rows'][number]) => number) => n ? rows.reduce((a, r) => a + f(r), 0) / n : NaN;
  const withH = rows.filter((r) => r.hallucinations);
  return {
    relative: 100 * mean((r) => r.modelScore / r.referenceScore), modelScore: mean((r) => r.modelScore), referenceScore: mean((r) => r.referenceScore), count: n,
    ...(withH.length ? { hallucinationRate: withH.filter((r) => r.hallucinations!.length).length / withH.length } : {}),
  };
}

async function askJudge(j: NonNullable<EvalChatOptions['judge']>, messages: ReturnType<typeof judgeMessages>, signal?: AbortSignal): Promise<[number, number]> {
  let last = '';
  for (let a = 0; a < Math.max(1, j.retries ?? 3); a++) {
    if (a) await new Promise((r) => setTimeout(r, 500 * 2 ** (a - 1)));
    try {
      const content = await chatCompletion({ endpoint: j.endpoint, model: j.model, apiKey: j.apiKey, messages, signal });
      const s = parseJudgeScores(content);
      if (s) return s;
      last = `the judge's first line is not two scores: ${JSON.stringify(content.split('\n')[0])}`;
    } catch (e) {
      if (signal?.aborted) throw medllavaError('E_ABORTED', 'evaluation stopped');
      last = (e as Error).message;
    }
  }
  throw medllavaError('E_IO', `the judge at ${j.endpoint} gave no usable score: ${last}`);
}

export async function evalChat(o: EvalChatOptions): Promise<EvalChatResult> {
  let qs = readChatQuestions(o.questions);
  if (o.limit !== undefined) qs = qs.slice(0, o.limit);
  const root = o.images ?? dirname(dirname(o.questions));
  let truth: Map<string, Truth> | undefined;
  if (!o.judge) {
    const world = await readWorldTruth(o.world ?? dirname(dirname(o.questions))).catch((e: Error) => {
      throw medllavaError('E_ARGUMENT', `without a judge endpoint the answers are scored against a synthetic world's ground truth, and ${e.message}; pass --judge <url> or --world <dir>`);
    });
    truth = new Map([...world.values()].map((c) => [c.image, c.truth]));
  }
  const gen: GenerateOptions = { temperature: 0, maxTokens: 256, ...o.generate, signal: o.signal };
  const rows: EvalChatResult['rows'] = [];
  for (const [i, q] of qs.entries()) {
    if (o.signal?.aborted) throw medllavaError('E_ABORTED', `stopped after ${i} of ${qs.length} questions`);
    const answer = await answerOnce(o.model, { text: q.text.replace(/\n?<image>\n?/g, ' ').trim(), image: join(root, q.image) }, gen);
    const domain = questionDomain(q);
    if (o.judge) {
      const [ref, mine] = await askJudge(o.judge, judgeMessages(q, answer), o.signal);
      rows.push({ question_id: q.question_id, type: q.type, domain, answer, modelScore: mine, referenceScore: ref || 1 });
    } else {
      const t = truth!.get(q.image);
      if (!t) throw medllavaError('E_ARGUMENT', `${q.image} is not a case of the synthetic world; pass --judge <url> for other data`);
      const s = truthScore(answer, q.gpt4_answer, t);
      rows.push({ question_id: q.question_id, type: q.type, domain, answer, modelScore: s.score, referenceScore: s.reference, hallucinations: s.hallucinations });
    }
    o.onProgress?.(i + 1, qs.length);
  }
  if (o.answers) writeFileAtomic(o.answers, rows.map((r) => `${JSON.stringify(r)}\n`).join(''));
  const by = (key: 'type' | 'domain') => Object.fromEntries([...new Set(rows.map((r) => r[key]))].map((k) => [k, group(rows.filter((r) => r[key] === k))]));
  return { judge: o.judge ? 'endpoint' : 'truth', overall: group(rows), byType: by('type'), byDomain: by('domain'), rows };
}

/** upstream's chat table: conversation, description, the five domains, overall (relative scores) */
export function chatTable(rows: { name: string; result: EvalChatResult }[]): string {
  const cols: [string, (r: EvalChatResult) => ChatGroupScore | undefined][] = [
    ['Conversation', (r) => r.byType['conversation']], ['Description', (r) => r.byType['detailed_description']],
    ['CXR', (r) => r.byDomain['chest_xray']], ['MRI', (r) => r.byDomain['mri']], ['Histology', (r) => r.byDomain['histology']],
    ['Gross', (r) => r.byDomain['gross']], ['CT', (r) => r.byDomain['ct_scan']], ['Overall', (r) => r.overall],
  ];
  const fmt = (g?: ChatGroupScore) => g && Number.isFinite(g.relative) ? g.relative.toFixed(1) : '–';
  return [`| model | ${cols.map((c) => c[0]).join(' | ')} |`, `|---|${cols.map(() => '---:').join('|')}|`,
    ...rows.map((r) => `| ${r.name} | ${cols.map((c) => fmt(c[1](r.result))).join(' | ')} |`)].join('\n');
}
