/**
 * Token generation over a native context: prompt evaluation with KV-cache reuse, sampling, EOS,
 * stop strings, max tokens, AbortSignal (checked before every token), streaming text that never
 * splits a UTF-8 character, per-token log-probabilities and timings.
 */
import { medllavaError } from './errors.js';
import type { NativeLlmContext } from './native.js';
import { sample, SeededRandom, validateSampling, type SamplingOptions } from './sampling.js';
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
  stopReason: 'eos' | 'length' | 'stop' | 'abort';
  logprobs?: number[];
  timings: { promptTokens: number; promptMs: number; genTokens: number; genMs: number; imageMs: number };
}

/** A context plus the tokens its cache holds, so a new prompt only evaluates what changed. */
export class CachedContext {
  tokens: number[] = [];
  constructor(readonly ctx: NativeLlmContext) {}

  /**
   * Evaluates `prompt` reusing the longest cached prefix; returns the last token's logits.
   * Negative tokens are image rows, taken from `embeddings` (prompt length × hidden); each row's
   * token must be unique to its image so that a cached prefix is only reused for the same image.
   */
  async prefill(prompt: number[], embeddings?: Float32Array, hidden = 0): Promise<Float32Array> {
    if (prompt.length === 0) throw medllavaError('E_ARGUMENT', 'the prompt is empty');
    let keep = 0;
    while (keep < prompt.length && keep < this.tokens.length && this.tokens[keep] === prompt[keep]) keep++;
    if (keep === prompt.length) keep--; // re-evaluate the last token to get its logits
    this.ctx.truncate(keep);
    this.tokens = this.tokens.slice(0, keep);
    const rest = prompt.slice(keep);
    const rows = embeddings && rest.some((t) => t < 0) ? embeddings.subarray(keep * hidden, prompt.length * hidden) : undefined;
    const logits = await this.ctx.eval(Int32Array.from(rest), rows ? { embeddings: rows } : {});
    this.tokens.push(...rest);
    return logits;
  }

  async push(token: number): Promise<Float32Array> {
    const logits = await this.ctx.eval(Int32Array.from([token]));
    this.tokens.push(token);
    return logits;
  }
}

/** Yields text pieces as they become final; resolves to the Reply. */
export async function* generate(cc: CachedContext, tokenizer: Tokenizer, prompt: number[], o: GenerateOptions = {},
  image?: { embeddings: Float32Array; hidden: number; ms: number }): AsyncGenerator<string, Reply, void> {
  validateSampling(o);
  const maxTokens = o.maxTokens ?? 256;
  if (!Number.isInteger(maxTokens) || maxTokens < 0) throw medllavaError('E_ARGUMENT', `maxTokens must be an integer ≥ 0, got ${maxTokens}`);
  const stops = (o.stop ?? []).filter((s) => s.length > 0);
  const rng = new SeededRandom(o.seed ?? 0x5eed);
  const t0 = performance.now();
  if (o.signal?.aborted) throw medllavaError('E_ABORTED', 'aborted before the prompt was evaluated');
  let logits = await cc.prefill(prompt, image?.embeddings, image?.hidden ?? 0);
  const promptMs = performance.now() - t0;
  const t1 = performance.now();
  const decoder = tokenizer.createDecoder();
  const tokens: number[] = [];
  const logprobs: number[] = [];
  // what the repetition penalty looks at: the prompt's text tokens, then each new token (grown in place)
  const history = prompt.filter((t) => t >= 0);
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
    const choice = sample(logits, o, history, rng);
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
    if (tokens.length < maxTokens) logits = await cc.push(choice.token);
  }
  if (stopReason !== 'stop') text += decoder.flush();
  if (text.length > emitted) yield text.slice(emitted);
  return {
    text, tokens, stopReason, ...(o.logprobs ? { logprobs } : {}),
    timings: { promptTokens: prompt.length, promptMs, genTokens: tokens.length, genMs: performance.now() - t1, imageMs: image?.ms ?? 0 },
  };
}
