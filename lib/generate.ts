/**
 * Token generation over a native context: prompt evaluation with KV-cache reuse, sampling, EOS,
 * stop strings, max tokens, AbortSignal (checked before every token), a context that fills up
 * mid-answer (the answer so far comes back, stopReason 'context'), streaming text that never
 * splits a UTF-8 character, per-token log-probabilities and timings.
 */
import { medllavaError } from './errors.js';
import type { NativeImage, NativeImageRows, NativeLlmContext, NativeSampleResult, NativeSampling } from './native.js';
import { validateSampling, type SamplingOptions } from './sampling.js';
import type { Tokenizer } from './tokenizer/tokenizer.js';

export interface GenerateOptions extends SamplingOptions {
  maxTokens?: number;
  stop?: string[];
  signal?: AbortSignal;
  logprobs?: boolean;
}

export interface Reply {
  text: string;
  tokens: number[];
  /**
   * eos: the model ended its answer; length: maxTokens reached; stop: a stop string appeared;
   * abort: the signal fired; context: the context filled up — `text` is what fitted.
   */
  stopReason: 'eos' | 'length' | 'stop' | 'abort' | 'context';
  logprobs?: number[];
  /**
   * promptTokens: the prompt's length (image rows included); reusedTokens: how many of them came
   * from the chat's KV cache (a later turn re-evaluates only what changed), so
   * promptTokens − reusedTokens were evaluated.
   */
  timings: { promptTokens: number; reusedTokens: number; promptMs: number; genTokens: number; genMs: number; imageMs: number };
}

/**
 * Image rows spliced into a prompt: `rows` positions from `at` take the rows of `image`, an encoded
 * image that stays native (the eval's worker reads its rows by reference). `image` is also the
 * image's identity: a cached prefix is reused only for the same one. Image identity travels here,
 * next to the tokens, never in the token values.
 */
export interface ImageSpan {
  at: number;
  rows: number;
  image: NativeImage;
}

/** What a context's cache holds at one position: a token, or row `row` of an image. */
type CachedPosition = number | { image: object; row: number };
const samePosition = (a: CachedPosition, b: CachedPosition) =>
  typeof a === 'number' || typeof b === 'number' ? a === b : a.image === b.image && a.row === b.row;

/** The token value the native context gets for an image row: any negative id takes its embeddings row. */
const IMAGE_ROW = -1;

/** A context plus what its cache holds, so a new prompt only evaluates what changed. */
export class CachedContext {
  private held: CachedPosition[] = [];
  constructor(readonly ctx: NativeLlmContext) {}

  /** positions the cache holds */
  get length(): number {
    return this.held.length;
  }

  /** What to evaluate for `prompt` after truncating the cache to the longest prefix it shares. */
  private plan(prompt: number[], images: ImageSpan[]) {
    if (prompt.length === 0) throw medllavaError('E_ARGUMENT', 'the prompt is empty');
    const want: CachedPosition[] = prompt.slice();
    for (const s of images) for (let r = 0; r < s.rows; r++) want[s.at + r] = { image: s.image, row: r };
    let keep = 0;
    while (keep < want.length && keep < this.held.length && samePosition(this.held[keep]!, want[keep]!)) keep++;
    if (keep === want.length) keep--; // re-evaluate the last position to get its logits
    this.ctx.truncate(keep);
    this.held = this.held.slice(0, keep);
    const rest = want.slice(keep);
    const tokens = Int32Array.from(rest, (p) => (typeof p === 'number' ? p : IMAGE_ROW));
    // the image rows still to evaluate, by reference to the native features
    const rows: NativeImageRows[] = [];
    for (const s of images) {
      if (s.at + s.rows <= keep) continue;
      const from = Math.max(s.at, keep);
      rows.push({ at: from - keep, image: s.image, row: from - s.at, rows: s.at + s.rows - from });
    }
    return { rest, tokens, images: rows, keep };
  }

  /**
   * Evaluates `prompt` (text tokens; positions covered by `images` are image rows) reusing the
   * longest cached prefix; returns the last position's logits and how many positions were reused.
   */
  async prefill(prompt: number[], images: ImageSpan[] = []): Promise<{ logits: Float32Array; reused: number }> {
    const p = this.plan(prompt, images);
    const logits = await this.ctx.eval(p.tokens, p.images.length ? { images: p.images } : {});
    this.held.push(...p.rest);
    return { logits, reused: p.keep };
  }

  /** prefill, then the next token sampled natively from the last logits. */
  async prefillSample(prompt: number[], images: ImageSpan[], step: SampleStep):
    Promise<{ choice: NativeSampleResult; reused: number }> {
    const p = this.plan(prompt, images);
    const choice = await this.ctx.evalSample(p.tokens, { ...(p.images.length ? { images: p.images } : {}), ...step });
    this.held.push(...p.rest);
    return { choice, reused: p.keep };
  }

  async push(token: number): Promise<Float32Array> {
    const logits = await this.ctx.eval(Int32Array.from([token]));
    this.held.push(token);
    return logits;
  }

  /** push `token`, then the next one sampled natively. */
  async pushSample(token: number, step: SampleStep): Promise<NativeSampleResult> {
    const choice = await this.ctx.evalSample(Int32Array.of(token), step);
    this.held.push(token);
    return choice;
  }
}

/** One native sampling step's inputs: the options, what the repetition penalty sees, the RNG state. */
interface SampleStep {
  sampling: NativeSampling;
  history: Int32Array;
  rngState: number;
}

/** Yields text pieces as they become final; resolves to the Reply. */
export async function* generate(cc: CachedContext, tokenizer: Tokenizer, prompt: number[], o: GenerateOptions = {},
  image?: { spans: ImageSpan[]; ms: number }): AsyncGenerator<string, Reply, void> {
  validateSampling(o);
  const maxTokens = o.maxTokens ?? 256;
  if (!Number.isInteger(maxTokens) || maxTokens < 0) throw medllavaError('E_ARGUMENT', `maxTokens must be an integer ≥ 0, got ${maxTokens}`);
  const stops = (o.stop ?? []).filter((s) => s.length > 0);
  const sampling: NativeSampling = { temperature: o.temperature ?? 0, ...(o.topK !== undefined ? { topK: o.topK } : {}),
    ...(o.topP !== undefined ? { topP: o.topP } : {}), ...(o.minP !== undefined ? { minP: o.minP } : {}),
    ...(o.repetitionPenalty !== undefined ? { repetitionPenalty: o.repetitionPenalty } : {}) };
  let rngState = (o.seed ?? 0x5eed) >>> 0;
  const t0 = performance.now();
  if (o.signal?.aborted) throw medllavaError('E_ABORTED', 'aborted before the prompt was evaluated');
  // what the repetition penalty looks at: the prompt's text tokens, then each new token
  const imageRow = new Uint8Array(prompt.length);
  for (const s of image?.spans ?? []) imageRow.fill(1, s.at, s.at + s.rows);
  const history = prompt.filter((t, i) => !imageRow[i] && t >= 0);
  // a prompt that does not fit is the caller's to shorten: E_CONTEXT_FULL (nothing was generated);
  // sampling runs natively after each forward: only the chosen token and its log-probability return
  const pre = await cc.prefillSample(prompt, image?.spans ?? [], { sampling, history: Int32Array.from(history), rngState });
  let next = pre.choice;
  const promptMs = performance.now() - t0;
  const t1 = performance.now();
  const decoder = tokenizer.createDecoder();
  const tokens: number[] = [];
  const logprobs: number[] = [];
  let text = '';
  let emitted = 0;
  let stopReason: Reply['stopReason'] = 'length';
  // text that could still turn into a stop string is held back
  const safeEnd = (s: string) => {
    let end = s.length;
    for (const stop of stops) {
      for (let k = Math.min(stop.length - 1, s.length); k > 0; k--) {
        if (s.endsWith(stop.slice(0, k))) { end = Math.min(end, s.length - k); break; }
      }
    }
    return end;
  };
  while (tokens.length < maxTokens) {
    if (o.signal?.aborted) { stopReason = 'abort'; break; }
    const choice = next;
    rngState = choice.rngState;
    if (choice.token === tokenizer.eosId) { stopReason = 'eos'; break; }
    tokens.push(choice.token);
    history.push(choice.token);
    logprobs.push(choice.logprob);
    text += decoder.push(choice.token);
    const hit = stops.map((s) => text.indexOf(s)).filter((i) => i >= 0);
    if (hit.length) {
      text = text.slice(0, Math.min(...hit));
      stopReason = 'stop';
      break;
    }
    const end = safeEnd(text);
    if (end > emitted) {
      yield text.slice(emitted, end);
      emitted = end;
    }
    if (tokens.length < maxTokens) {
      try {
        next = await cc.pushSample(choice.token, { sampling, history: Int32Array.from(history), rngState });
      } catch (e) {
        // the context is full: the answer so far is the reply (the last token was sampled, but the
        // forward that would follow it does not fit; it is part of the text)
        if ((e as { code?: string }).code !== 'E_CONTEXT_FULL') throw e;
        stopReason = 'context';
        break;
      }
    }
  }
  if (stopReason !== 'stop') text += decoder.flush();
  if (text.length > emitted) yield text.slice(emitted);
  return {
    text, tokens, stopReason, ...(o.logprobs ? { logprobs } : {}),
    timings: {
      promptTokens: prompt.length, reusedTokens: pre.reused, promptMs, genTokens: tokens.length, genMs: performance.now() - t1,
      imageMs: image?.ms ?? 0,
    },
  };
}
