/**
 * loadModel(): a checkpoint ready to run — spec, tokenizer, the native LLM — and chats over it.
 * This version runs the language model on the CPU; the vision tower (encodeImage, images in
 * prompts) and the CUDA device are the next steps and say so with E_UNSUPPORTED.
 */
import { statSync } from 'node:fs';

import { medllavaError } from '../errors.js';
import { CachedContext, generate, type GenerateOptions, type Reply } from '../generate.js';
import { native, type NativeLlm } from '../native.js';
import { loadTokenizer } from '../tokenizer/load.js';
import { renderPrompt, type Message } from '../tokenizer/templates.js';
import { IMAGE_TOKEN_INDEX, type Tokenizer } from '../tokenizer/tokenizer.js';
import { loadLlm } from './llm.js';
import { loadModelSpec, type ModelSpec } from './spec.js';

export type ImageInput = string | Uint8Array | { toBuffer(): Promise<Buffer> };

export interface LoadModelOptions {
  visionTower?: string;
  mmproj?: string;
  baseModel?: string;
  device?: 'auto' | 'cpu' | 'cuda';
  threads?: number;
  contextLength?: number;
  onProgress?: (p: { loadedBytes: number; totalBytes: number }) => void;
  signal?: AbortSignal;
}

export interface ChatMessage {
  text: string;
  image?: ImageInput;
}

export interface Chat {
  send(message: ChatMessage, options?: GenerateOptions): Promise<Reply>;
  stream(message: ChatMessage, options?: GenerateOptions): AsyncIterable<string>;
  readonly history: { role: 'user' | 'assistant'; text: string; image?: boolean }[];
  reset(): void;
}

export interface Model {
  readonly spec: ModelSpec;
  readonly tokenizer: Tokenizer;
  readonly device: 'cpu' | 'cuda';
  encodeImage(image: ImageInput): Promise<Float32Array>;
  forward(input: { tokens: ArrayLike<number>; images?: ImageInput[] }, options?: { allLogits?: boolean }): Promise<Float32Array>;
  createChat(options?: { template?: string; systemPrompt?: string }): Chat;
  dispose(): Promise<void>;
}

const NO_VISION = 'images are not supported yet: the vision tower and projector run in a later version of medllava ' +
  '(this one runs the language model)';

class ChatImpl implements Chat {
  readonly history: { role: 'user' | 'assistant'; text: string; image?: boolean }[] = [];
  private cc: CachedContext | undefined;
  private running = false;

  constructor(private readonly model: ModelImpl, private readonly template: string, private readonly systemPrompt?: string) {}

  reset(): void {
    if (this.running) throw medllavaError('E_ARGUMENT', 'cannot reset a chat while it is answering');
    this.history.length = 0;
  }

  async *stream(message: ChatMessage, options: GenerateOptions = {}): AsyncGenerator<string, Reply, void> {
    if (!message || typeof message.text !== 'string') throw medllavaError('E_ARGUMENT', 'a message needs text');
    if (message.image !== undefined) throw medllavaError('E_UNSUPPORTED', NO_VISION);
    if (this.running) throw medllavaError('E_ARGUMENT', 'this chat is already answering; await it, or create another chat');
    this.running = true;
    try {
      this.cc ??= new CachedContext(this.model.llm().createContext());
      const messages: Message[] = [...this.history.map((h) => ({ role: h.role, text: h.text, image: h.image })),
        { role: 'user', text: message.text }];
      const prompt = renderPrompt(this.template, messages, { systemPrompt: this.systemPrompt, addGenerationPrompt: true });
      const tokens = this.model.tokenizer.encodePrompt(prompt);
      const gen = generate(this.cc, this.model.tokenizer, tokens, options);
      let r = await gen.next();
      while (!r.done) {
        yield r.value;
        r = await gen.next();
      }
      this.history.push({ role: 'user', text: message.text }, { role: 'assistant', text: r.value.text.trim() });
      return r.value;
    } finally {
      this.running = false;
    }
  }

  async send(message: ChatMessage, options: GenerateOptions = {}): Promise<Reply> {
    const gen = this.stream(message, options);
    let r = await gen.next();
    while (!r.done) r = await gen.next();
    return r.value;
  }
}

class ModelImpl implements Model {
  readonly device = 'cpu' as const;
  private native: NativeLlm | undefined;

  constructor(readonly spec: ModelSpec, readonly tokenizer: Tokenizer, llm: NativeLlm) {
    this.native = llm;
  }

  llm(): NativeLlm {
    if (!this.native) throw medllavaError('E_ARGUMENT', 'this model has been disposed');
    return this.native;
  }

  async encodeImage(_image: ImageInput): Promise<Float32Array> {
    throw medllavaError('E_UNSUPPORTED', NO_VISION);
  }

  async forward(input: { tokens: ArrayLike<number>; images?: ImageInput[] }, options: { allLogits?: boolean } = {}) {
    const tokens = Array.from(input.tokens);
    if ((input.images && input.images.length) || tokens.includes(IMAGE_TOKEN_INDEX)) throw medllavaError('E_UNSUPPORTED', NO_VISION);
    const ctx = this.llm().createContext();
    try {
      return await ctx.eval(Int32Array.from(tokens), { allLogits: options.allLogits ?? false });
    } finally {
      ctx.dispose();
    }
  }

  createChat(options: { template?: string; systemPrompt?: string } = {}): Chat {
    this.llm();
    return new ChatImpl(this, options.template ?? this.spec.template, options.systemPrompt);
  }

  async dispose(): Promise<void> {
    this.native?.dispose();
    this.native = undefined;
  }
}

export async function loadModel(source?: string, options: LoadModelOptions = {}): Promise<Model> {
  if (source === undefined) {
    throw medllavaError('E_ARGUMENT', 'there is no bundled demo model yet: pass a checkpoint (`medllava fixture` writes small ones)');
  }
  const device = options.device ?? 'auto';
  if (device === 'cuda') {
    throw medllavaError('E_UNSUPPORTED', `the CUDA model path is not implemented yet (CUDA backend: ${
      native().getBackendInfo().cuda.available ? 'available' : native().getBackendInfo().cuda.reason})`);
  }
  if (device !== 'auto' && device !== 'cpu') throw medllavaError('E_ARGUMENT', `device must be 'auto', 'cpu' or 'cuda', got '${String(device)}'`);
  if (options.threads !== undefined) native().setThreads(options.threads);
  if (options.signal?.aborted) throw medllavaError('E_ABORTED', 'aborted');
  const spec = await loadModelSpec(source, options);
  const files = [...new Set(Object.values(spec.files.weights))];
  const totalBytes = files.reduce((s, f) => s + statSync(f).size, 0);
  options.onProgress?.({ loadedBytes: 0, totalBytes });
  const tokenizer = await loadTokenizer(spec.files.tokenizer);
  const llm = await loadLlm(spec, { contextLength: options.contextLength });
  if (options.signal?.aborted) {
    llm.dispose();
    throw medllavaError('E_ABORTED', 'aborted');
  }
  options.onProgress?.({ loadedBytes: totalBytes, totalBytes });
  return new ModelImpl(spec, tokenizer, llm);
}
