/**
 * Self-instruct conversation generation, as LLaVA-Med built its instruction data: for each figure, a text-only
 * LLM is given the caption (and, optionally, the sentences citing the figure) and asked to write a multi-turn
 * conversation about the image as if it could see it. Figures are taken round-robin over the five domains;
 * the completions are post-processed (turns that admit not seeing the image or that talk about "the caption"
 * are dropped, lead-ins that attribute the answer to the text are stripped) and written in LLaVA's conversation
 * JSON with `<image>` before or after the first question.
 *
 * Any OpenAI-compatible chat endpoint works (URL, model, key), with concurrency, retries with exponential
 * backoff, and resume: every finished figure is appended (and fsynced) to `<out>.partial.jsonl`, and a rerun skips
 * the ids found there. Without an endpoint, a deterministic rule-based writer builds the conversations from
 * the synthetic world's ground truth, so the pipeline runs offline.
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';

import { medllavaError } from '../errors.js';
import { Rand } from './canvas.js';
import { ruleConversation, type Turn } from './text.js';
import { MODALITIES, type Truth } from './truth.js';
import { writeFileAtomic } from '../util/files.js';
import { chatCompletion } from '../util/openai.js';

export interface Figure {
  pair_id: string;
  fig_label: string;
  fig_caption: string;
  in_text_mention?: { tokens: string }[];
  image?: string;
  /** the synthetic world's extensions: the ground truth and the split */
  truth?: Truth;
  split?: string;
}

export interface GenerateInstructOptions {
  /** figures.json: {domain: [figure…]} (LLaVA-Med's self-instruct input layout) */
  figures: string;
  /** the conversation JSON to write */
  out: string;
  /** an OpenAI-compatible base URL (…/v1); without it the rule-based writer is used */
  endpoint?: string;
  model?: string;
  apiKey?: string;
  /** include the sentences that cite the figure (LLaVA-Med's "inline mentions"); default true */
  inlineMentions?: boolean;
  /** only figures of this split (the synthetic world's `split`); default: all */
  split?: string;
  /** at most this many conversations */
  maxSize?: number;
  /** requests in flight (default 3, as upstream) */
  concurrency?: number;
  /** attempts per figure (default 4); waits 1 s, 2 s, 4 s… between them (`retryDelayMs` scales) */
  retries?: number;
  retryDelayMs?: number;
  /** per-request timeout (default 120 s) */
  timeoutMs?: number;
  seed?: number;
  signal?: AbortSignal;
  onProgress?: (p: { done: number; total: number; skipped: number; failed: number }) => void;
}

export interface GenerateInstructResult {
  out: string;
  written: number;
  /** figures whose every attempt failed, or whose conversation had no usable turn */
  failed: { id: string; reason: string }[];
  writer: 'endpoint' | 'rules';
}

/** The system message, written here, following the structure the LLaVA-Med paper describes. */
export const INSTRUCT_SYSTEM = [
  'You are an AI assistant specialised in biomedical topics.',
  'You are given the caption of a figure from a biomedical research paper, and sometimes the sentences of the paper that',
  'cite the figure. You cannot see the image. Write a conversation between a person asking about the image and an',
  'assistant answering, written as if both of them could see the image.',
  'Requirements:',
  '1. Only ask and answer about what can be seen in the image. Do not bring in facts, abbreviations, numbers, dates or',
  '   names that only the text could tell.',
  '2. Never mention the caption, the description or the context; speak about the image itself.',
  '3. Ask varied questions: what the image is, what it shows, where, how the findings look.',
  '4. Write at least two and at most four question/answer rounds.',
  '5. Answer responsibly: give no medical advice or definitive diagnosis, and recommend a qualified professional where it matters.',
  'Write each turn on its own paragraph, starting with "User:" or "Assistant:".',
].join('\n');

const FEW_SHOT: { caption: string; mentions: string[]; conversation: [string, string][] }[] = [
  {
    caption: 'Frontal chest radiograph showing a rounded opacity in the left lower zone.',
    mentions: ['The chest radiograph revealed a rounded opacity in the left lower zone (Figure 2).'],
    conversation: [
      ['What kind of image is this?', 'This is a frontal chest X-ray.'],
      ['Is anything abnormal in the lungs?', 'Yes. There is a rounded opacity in the lower part of the left lung.'],
      ['What could cause an opacity like that?', 'Rounded opacities have many causes, from infection to a nodule or mass. A radiologist would compare it with earlier images and may suggest a CT.'],
    ],
  },
  {
    caption: 'H&E-stained section of colonic mucosa (x10) with regular crypts and no dysplasia.',
    mentions: [],
    conversation: [
      ['What stain was used for this slide?', 'The slide is stained with hematoxylin and eosin: nuclei are purple and the stroma pink.'],
      ['How does the tissue architecture look?', 'The glands are evenly spaced and regular, lined by orderly cells, which is what normal colonic mucosa looks like.'],
    ],
  },
  {
    caption: 'Axial T2-weighted MRI of the brain demonstrating a hyperintense mass in the right temporal lobe with surrounding edema.',
    mentions: ['MRI showed a right temporal mass (Fig. 1).', 'The patient underwent resection.'],
    conversation: [
      ['What type of scan is this?', 'It is an axial T2-weighted MRI of the brain.'],
      ['Do you see a lesion?', 'Yes, there is a bright mass in the right temporal lobe, with a brighter rim of swelling around it.'],
      ['Where exactly is it?', 'It sits in the right temporal lobe, towards the side of the head.'],
    ],
  },
];

function queryText(f: { fig_label: string; fig_caption: string; in_text_mention?: { tokens: string }[] }, mentions: boolean): string {
  let s = `Figure caption:\n${f.fig_label}: ${f.fig_caption}`;
  const m = (f.in_text_mention ?? []).map((x) => x.tokens).filter(Boolean);
  if (mentions && m.length) s += `\n\nSentences citing the figure:\n${m.map((x) => `\t- ${x}`).join('\n')}`;
  return s;
}

/** system + few-shot + the query, as chat messages */
export function instructMessages(f: Figure, mentions = true): { role: 'system' | 'user' | 'assistant'; content: string }[] {
  const msgs: { role: 'system' | 'user' | 'assistant'; content: string }[] = [{ role: 'system', content: INSTRUCT_SYSTEM }];
  FEW_SHOT.forEach((ex, i) => {
    msgs.push({ role: 'user', content: queryText({ fig_label: `Figure ${i + 1}`, fig_caption: ex.caption, in_text_mention: ex.mentions.map((tokens) => ({ tokens })) }, mentions) });
    msgs.push({ role: 'assistant', content: ex.conversation.map(([q, a]) => `User: ${q}\n\nAssistant: ${a}`).join('\n\n') });
  });
  msgs.push({ role: 'user', content: queryText(f, mentions) });
  return msgs;
}

/** a completion → (question, answer) rounds: split on the "User:" label, each chunk on "Assistant:" */
export function parseConversation(text: string): [string, string][] {
  const chunks = text.split(/(?:^|\n)\s*User:/).slice(1);
  const out: [string, string][] = [];
  for (const c of chunks) {
    const parts = c.split(/\n?\s*Assistant:/);
    if (parts.length !== 2) continue;
    const q = parts[0]!.trim(), a = parts[1]!.trim();
    if (q && a) out.push([q, a]);
  }
  return out;
}

/** answers that admit not seeing the image or talk about the text sources */
const REFUSALS = ['cannot see', "can't see", 'unable to see', 'not able to see', 'no access to the image', "don't have access",
  'do not have access', 'as an ai', 'i apologize', 'i am sorry', "i'm sorry", 'not mentioned in the', 'not specified in the',
  'not provided in the', 'the caption does not', 'the description does not', 'without seeing the image', 'not visible to me'];
/** lead-ins that attribute the answer to the caption / description (removed) */
const LEAD_INS = ['according to the caption,', 'according to the description,', 'according to the figure caption,',
  'based on the caption,', 'based on the description,', 'based on the given caption,', 'based on the provided description,',
  'as described in the caption,', 'as mentioned in the caption,', 'as the caption states,', 'the caption says that',
  'the caption mentions that', 'the description mentions that', 'from the caption,', 'in the caption,',
  'yes, according to the caption,', 'yes, based on the caption,', 'yes, as mentioned in the caption,'];
const REFERENCES = ['as described in the caption', 'as mentioned in the caption', 'according to the caption', 'in the caption',
  'as per the description', 'based on the caption', ' mentioned in the context'];

/** LLaVA-Med's clean-up of one answer: null drops the round */
export function cleanAnswer(answer: string): string | null {
  const low = answer.toLowerCase();
  if (REFUSALS.some((r) => low.includes(r))) return null;
  const lead = LEAD_INS.find((l) => low.startsWith(l));
  if (lead) {
    const rest = answer.slice(lead.length).trim();
    const fixed = rest.charAt(0).toUpperCase() + rest.slice(1);
    return /caption|description/.test(fixed) ? null : fixed;
  }
  let out = answer;
  for (const r of REFERENCES) out = out.split(r).join('');
  if (out !== answer) out = out.replace(/\s+,/g, ',').replace(/,+/g, ',').replace(/\s{2,}/g, ' ').trim();
  return /caption|description/.test(out) ? null : out;
}

/** rounds → LLaVA turns, `<image>` before or after the first question; null when nothing survives */
export function toLlavaConversation(rounds: [string, string][], imageFirst: boolean): Turn[] | null {
  const kept: Turn[] = [];
  for (const [q, a] of rounds) {
    const c = cleanAnswer(a);
    if (c === null) continue;
    kept.push({ from: 'human', value: q }, { from: 'gpt', value: c });
  }
  if (!kept.length) return null;
  kept[0] = { from: 'human', value: imageFirst ? `<image>\n${kept[0]!.value}` : `${kept[0]!.value}\n<image>` };
  return kept;
}

/** round-robin over the domains (LLaVA-Med's zip_longest), then the split filter */
function ordered(figures: Record<string, Figure[]>, split?: string): { domain: string; f: Figure }[] {
  const lists = Object.entries(figures).map(([d, xs]) => ({ d, xs: split ? xs.filter((x) => x.split === split) : xs }));
  const out: { domain: string; f: Figure }[] = [];
  const longest = Math.max(0, ...lists.map((l) => l.xs.length));
  for (let i = 0; i < longest; i++) for (const l of lists) if (i < l.xs.length) out.push({ domain: l.d, f: l.xs[i]! });
  return out;
}

const sleep = (ms: number, signal?: AbortSignal) => new Promise<void>((res) => {
  const t = setTimeout(res, ms);
  signal?.addEventListener('abort', () => { clearTimeout(t); res(); }, { once: true });
});


export async function generateInstruct(o: GenerateInstructOptions): Promise<GenerateInstructResult> {
  let figures: Record<string, Figure[]>;
  try {
    figures = JSON.parse(readFileSync(o.figures, 'utf8')) as Record<string, Figure[]>;
  } catch (e) {
    throw medllavaError((e as NodeJS.ErrnoException).code === 'ENOENT' ? 'E_IO' : 'E_FORMAT', `${o.figures}: ${(e as Error).message}`);
  }
  if (typeof figures !== 'object' || figures === null || Array.isArray(figures)) {
    throw medllavaError('E_FORMAT', `${o.figures}: expected {domain: [figure…]} (LLaVA-Med's self-instruct input layout)`);
  }
  const writer = o.endpoint ? 'endpoint' as const : 'rules' as const;
  let todo = ordered(figures, o.split);
  if (o.maxSize !== undefined) todo = todo.slice(0, o.maxSize);
  if (writer === 'rules') {
    const missing = todo.find((x) => !x.f.truth);
    if (missing) throw medllavaError('E_ARGUMENT', `${missing.f.pair_id} has no ground truth; without an endpoint only figures of a synthetic world (\`medllava synth\`) can be written — pass an endpoint`);
  }
  const partial = `${o.out}.partial.jsonl`;
  const done = new Map<string, unknown>();
  if (existsSync(partial)) {
    for (const line of readFileSync(partial, 'utf8').split('\n')) {
      if (!line.trim()) continue;
      try { const r = JSON.parse(line) as { id: string }; done.set(r.id, r); } catch { /* a torn last line: redone */ }
    }
  }
  const fd = openSync(partial, 'a');
  const failed: { id: string; reason: string }[] = [];
  const total = todo.length;
  let finished = 0;
  const skipped = todo.filter((x) => done.has(x.f.pair_id)).length;
  const progress = () => o.onProgress?.({ done: finished + skipped, total, skipped, failed: failed.length });
  const seed = o.seed ?? 0;
  const record = (domain: string, f: Figure, turns: Turn[]) => {
    const r = { id: f.pair_id, image: f.image ?? `${f.pair_id}.jpg`, domain, conversations: turns };
    writeSync(fd, `${JSON.stringify(r)}\n`);
    fsyncSync(fd);
    done.set(f.pair_id, r);
  };
  const work = todo.filter((x) => !done.has(x.f.pair_id));
  progress();
  try {
    if (writer === 'rules') {
      for (const { domain, f } of work) {
        if (o.signal?.aborted) break;
        const rng = new Rand((seed * 0x9e3779b1) ^ hash(f.pair_id));
        const rounds = pairs(ruleConversation(f.truth!, rng));
        const turns = toLlavaConversation(rounds, rng.chance(0.5));
        if (turns) record(domain, f, turns); else failed.push({ id: f.pair_id, reason: 'no usable turn' });
        finished++;
        if (finished % 50 === 0) progress();
      }
    } else {
      const attempts = Math.max(1, o.retries ?? 4), delay = o.retryDelayMs ?? 1000;
      let next = 0;
      const worker = async () => {
        while (next < work.length && !o.signal?.aborted) {
          const { domain, f } = work[next++]!;
          let last = '';
          let turns: Turn[] | null = null;
          for (let a = 0; a < attempts && !o.signal?.aborted; a++) {
            if (a > 0) await sleep(delay * 2 ** (a - 1), o.signal);
            try {
              const text = await chatCompletion({ endpoint: o.endpoint!, model: o.model, apiKey: o.apiKey, signal: o.signal, timeoutMs: o.timeoutMs,
                messages: instructMessages(f, o.inlineMentions ?? true) });
              const rng = new Rand((seed * 0x9e3779b1) ^ hash(f.pair_id));
              turns = toLlavaConversation(parseConversation(text), rng.chance(0.5));
              last = turns ? '' : 'no usable turn';
              break;
            } catch (e) {
              last = (e as Error).message;
            }
          }
          if (turns) record(domain, f, turns); else if (!o.signal?.aborted) failed.push({ id: f.pair_id, reason: last });
          finished++;
          progress();
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, o.concurrency ?? 3) }, worker));
    }
  } finally {
    closeSync(fd);
  }
  progress();
  if (o.signal?.aborted) throw medllavaError('E_ABORTED', `generation stopped; ${done.size} conversations are kept in ${partial} and a rerun resumes`);
  // the final file, in the round-robin order; written whole, then renamed over the target
  const out = todo.map((x) => done.get(x.f.pair_id)).filter((r) => r !== undefined);
  writeFileAtomic(o.out, `${JSON.stringify(out, null, 1)}\n`);
  if (!failed.length) unlinkSync(partial);
  return { out: o.out, written: out.length, failed, writer };
}

function pairs(turns: Turn[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < turns.length; i += 2) out.push([turns[i]!.value, turns[i + 1]!.value]);
  return out;
}

function hash(s: string): number {
  let h = 0x811c9dc5;
  for (const c of s) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
  return h;
}

export { MODALITIES };
