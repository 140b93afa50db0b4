/**
 * Conversation templates, rendered exactly as LLaVA's conversation.py renders them (LLaVA-Med
 * v1.5 and LLaVA-Rad build on that file), and the training label mask computed the way LLaVA's
 * train.py does it (preprocess_v1 / preprocess_llama_2 / preprocess_plain, and LLaVA-Med v1.0's
 * legacy `### Human:` preprocess with its _mask_targets rule), so that only the assistant's answers
 * are trained on.
 */
import { medllavaError } from '../errors.js';
import type { Tokenizer } from './tokenizer.js';

export const IGNORE_INDEX = -100;

export interface Message {
  role: 'user' | 'assistant';
  text: string;
  /** this message carries the image (LLaVA puts '<image>\n' before the first user message's text) */
  image?: boolean;
}

type SeparatorStyle = 'single' | 'two' | 'llama_2' | 'plain';

export interface TemplateDefinition {
  name: string;
  system: string;
  roles: [string, string];
  style: SeparatorStyle;
  sep: string;
  sep2?: string;
  /** fixed example turns rendered before the conversation (LLaVA-Med v1.0's template has one) */
  preamble?: [string, string][];
}

export const TEMPLATES: Record<string, TemplateDefinition> = {
  // LLaVA-Med v1.5 (Mistral-7B-Instruct): conv_mistral_instruct
  mistral_instruct: { name: 'mistral_instruct', system: '', roles: ['USER', 'ASSISTANT'], style: 'llama_2', sep: '', sep2: '</s>' },
  // Vicuna v1.1 / v1.5: conv_vicuna_v1
  vicuna_v1: {
    name: 'vicuna_v1',
    system: "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.",
    roles: ['USER', 'ASSISTANT'], style: 'two', sep: ' ', sep2: '</s>',
  },
  // LLaVA-1.5 and LLaVA-Rad: conv_llava_v1
  llava_v1: {
    name: 'llava_v1',
    system: "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.",
    roles: ['USER', 'ASSISTANT'], style: 'two', sep: ' ', sep2: '</s>',
  },
  // LLaVA-Med v1.0: its conv_multimodal (the sentences are joined without spaces, as upstream has them)
  llava_med_v1: {
    name: 'llava_med_v1',
    system: 'You are LLaVA-Med, a large language and vision assistant trained by a group of researchers at Microsoft, based on the general domain LLaVA architecture.' +
      'You are able to understand the visual content that the user provides, and assist the user with a variety of medical and clinical research tasks using natural language.' +
      'Follow the instructions carefully and explain your answers in detail.',
    roles: ['Human', 'Assistant'], style: 'single', sep: '###',
    preamble: [['Human', 'Hi!'], ['Assistant', 'Hi there!  How can I help you today?\n']],
  },
  // stage-1 alignment: image + caption + '\n'
  plain: { name: 'plain', system: '', roles: ['', ''], style: 'plain', sep: '\n' },
};

export function getTemplate(name: string): TemplateDefinition {
  const t = TEMPLATES[name];
  if (!t) throw medllavaError('E_ARGUMENT', `unknown template '${name}'; known: ${Object.keys(TEMPLATES).join(', ')}`);
  return t;
}

/** (role, message | null) pairs as conversation.py keeps them; null = the turn to be generated. */
function turns(t: TemplateDefinition, messages: Message[], addGenerationPrompt: boolean): [string, string | null][] {
  const out: [string, string | null][] = [...(t.preamble ?? [])];
  messages.forEach((m, i) => {
    const expected = i % 2 === 0 ? 'user' : 'assistant';
    if (m.role !== expected) throw medllavaError('E_ARGUMENT', `message ${i} must be from the ${expected}, got ${m.role}`);
    let text = m.text;
    // conversation.py: the image message becomes '<image>\n' + its text with any '<image>' removed, stripped
    if (m.image) text = `<image>\n${text.replaceAll('<image>', '').trim()}`;
    out.push([t.roles[i % 2]!, text]);
  });
  if (addGenerationPrompt) {
    if (messages.length % 2 === 0) throw medllavaError('E_ARGUMENT', 'the last message must be the user\'s to generate a reply');
    out.push([t.roles[1], null]);
  }
  return out;
}

/** conversation.py's get_prompt(). */
export function renderPrompt(template: string | TemplateDefinition, messages: Message[],
  options: { systemPrompt?: string; addGenerationPrompt?: boolean } = {}): string {
  const t = typeof template === 'string' ? getTemplate(template) : template;
  const system = options.systemPrompt ?? t.system;
  const all = turns(t, messages, options.addGenerationPrompt ?? true);
  switch (t.style) {
    case 'single': {
      let ret = system + t.sep;
      for (const [role, msg] of all) ret += msg !== null ? `${role}: ${msg}${t.sep}` : `${role}:`;
      return ret;
    }
    case 'two': {
      const seps = [t.sep, t.sep2!];
      let ret = system + seps[0];
      all.forEach(([role, msg], i) => { ret += msg !== null ? `${role}: ${msg}${seps[i % 2]}` : `${role}:`; });
      return ret;
    }
    case 'llama_2': {
      const wrapSys = (s: string) => (s.length > 0 ? `<<SYS>>\n${s}\n<</SYS>>\n\n` : s);
      let ret = '';
      all.forEach(([, msg], i) => {
        if (msg === null) return;
        let m = msg;
        if (i === 0) m = wrapSys(system) + m;
        if (i % 2 === 0) ret += `${t.sep}[INST] ${m} [/INST]`;
        else ret += ` ${m} ${t.sep2}`;
      });
      return t.sep ? ret.replace(new RegExp(`^(${t.sep.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')})+`), '') : ret;
    }
    case 'plain': {
      // stage-1 alignment data is '<image>' + caption + '\n' (train.py's preprocess_plain; conversation.py's
      // own PLAIN rendering would append sep2 = None), so a prompt is '<image>' followed by captions so far
      let ret = system;
      messages.forEach((m) => { ret += m.role === 'user' ? '<image>' : m.text + t.sep; });
      return ret;
    }
  }
}

/**
 * Token ids and training labels for a whole conversation, as LLaVA's train.py builds them:
 * every position except the assistant's answers (and their closing separator) is IGNORE_INDEX.
 * When the rounds' token counts do not add up to the whole (upstream's "tokenization mismatch"),
 * every label is masked, as upstream does, and `mismatch: true` is set.
 */
export function trainingExample(tokenizer: Tokenizer, template: string | TemplateDefinition, messages: Message[],
  options: { systemPrompt?: string } = {}): { inputIds: number[]; labels: number[]; mismatch?: true } {
  const t = typeof template === 'string' ? getTemplate(template) : template;
  const len = (s: string) => tokenizer.encodePrompt(s).length;
  if (t.style === 'plain') {
    // preprocess_plain: '<image>' + caption + '\n', the image part masked
    const caption = messages.find((m) => m.role === 'assistant')?.text ?? '';
    const inputIds = tokenizer.encodePrompt(`<image>${caption}${t.sep}`);
    const labels = [...inputIds];
    const masked = len('<image>');
    for (let i = 0; i < masked; i++) labels[i] = IGNORE_INDEX;
    return { inputIds, labels };
  }
  if (messages.length % 2 !== 0) throw medllavaError('E_ARGUMENT', 'a training conversation ends with an assistant answer');
  if (t.style === 'single') return legacyExample(tokenizer, t, messages, len, options);
  const prompt = renderPrompt(t, messages, { ...options, addGenerationPrompt: false });
  const inputIds = tokenizer.encodePrompt(prompt);
  const labels = [...inputIds];
  // split into rounds at sep2 and mask each round's instruction part (preprocess_v1 / _llama_2)
  const sep = t.style === 'llama_2' ? '[/INST] ' : t.sep + t.roles[1] + ': ';  // preprocess_llama_2 splits on "[/INST] "
  const rounds = prompt.split(t.sep2!);
  let cur = 1; // BOS
  labels[0] = IGNORE_INDEX;
  for (const rou of rounds) {
    if (rou === '') break;
    const parts = rou.split(sep);
    if (parts.length !== 2) break;
    const instruction = parts[0]! + sep;
    // len() counts a BOS: it stands for the '</s>' the split removed; "- 2" drops BOS and the
    // token that ends the instruction, exactly as upstream does
    const roundLen = len(rou);
    const instructionLen = len(instruction) - 2;
    for (let i = cur; i < Math.min(labels.length, cur + instructionLen); i++) labels[i] = IGNORE_INDEX;
    cur += roundLen;
  }
  for (let i = cur; i < labels.length; i++) labels[i] = IGNORE_INDEX;
  if (cur !== inputIds.length) {
    // upstream prints "tokenization mismatch" and ignores the whole example; the labels are masked the
    // same way, and `mismatch` says so (the data loader reports such samples by id)
    labels.fill(IGNORE_INDEX);
    return { inputIds, labels, mismatch: true };
  }
  return { inputIds, labels };
}

/** The system sentence LLaVA-Med v1.0's trainer puts in the header (its default conversation's, early FastChat's). */
export const LEGACY_TRAIN_SYSTEM = "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.";

/**
 * LLaVA-Med v1.0's training example (its legacy `preprocess`): the header (system sentence + a blank line), each
 * turn as `### Human: …\n` / `### Assistant: …\n`, then a closing `### `. The lengths come from the header and each
 * turn tokenized on their own, each with its BOS, and `_mask_targets` masks the header and every human turn but
 * its first two tokens, moving by each piece's length — the per-piece BOS makes the later ranges drift by one per
 * turn, as upstream's do. The assistant turns (with their `### Assistant:` prefix) and the closing `### ` are
 * trained. `<image>` stays where the turn has it (v1.0 replaces it in place); a turn that carries the image
 * without the tag gets `<image>\n` first. No tokenization-mismatch check exists on this path upstream.
 */
function legacyExample(tokenizer: Tokenizer, t: TemplateDefinition, messages: Message[], len: (s: string) => number,
  options: { systemPrompt?: string }): { inputIds: number[]; labels: number[] } {
  const header = `${options.systemPrompt ?? LEGACY_TRAIN_SYSTEM}\n\n`;
  const pieces = messages.map((m, i) => {
    const expected = i % 2 === 0 ? 'user' : 'assistant';
    if (m.role !== expected) throw medllavaError('E_ARGUMENT', `message ${i} must be from the ${expected}, got ${m.role}`);
    const text = m.image && !m.text.includes('<image>') ? `<image>\n${m.text}` : m.text;
    return `### ${t.roles[i % 2]}: ${text}\n`;
  });
  const inputIds = tokenizer.encodePrompt(`${header}${pieces.join('')}### `);
  const labels = [...inputIds];
  let cur = len(header);
  for (let i = 0; i < Math.min(cur, labels.length); i++) labels[i] = IGNORE_INDEX;
  pieces.forEach((p, i) => {
    const n = len(p);
    if (i % 2 === 0) for (let k = cur + 2; k < Math.min(cur + n, labels.length); k++) labels[k] = IGNORE_INDEX;
    cur += n;
  });
  return { inputIds, labels };
}
