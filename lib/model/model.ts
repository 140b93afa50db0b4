/**
 * loadModel(): a checkpoint ready to run — spec, tokenizer, the native vision tower + projector and
 * LLM — and chats over it, on the CPU. Each '<image>' of a prompt (token -200) becomes the image's
 * projected patches (LLaVA-Med v1.0: <im_start> patches <im_end>). The CUDA device and LLaVA-Rad's
 * timm tower are not implemented yet and say so with E_UNSUPPORTED.
 */
import { statSync } from 'node:fs';
import { open } from 'node:fs/promises';

import type { Sharp } from 'sharp';

import { medllavaError } from '../errors.js';
import { CachedContext, generate, type GenerateOptions, type Reply } from '../generate.js';
import { preprocessImage } from '../image/preprocess.js';
import { native, type NativeLlm, type NativeVision } from '../native.js';
import { loadTokenizer } from '../tokenizer/load.js';
import { renderPrompt, type Message } from '../tokenizer/templates.js';
import { IMAGE_TOKEN_INDEX, type Tokenizer } from '../tokenizer/tokenizer.js';
import { loadLlm } from './llm.js';
import { loadModelSpec, type ModelSpec } from './spec.js';
import { loadVision } from './vision.js';

/** A path, encoded bytes, or a sharp pipeline (shared/API.md). */
export type ImageInput = string | Uint8Array | Sharp;

export interface LoadModelOptions {
  visionTower?: string;
  mmproj?: string;
  baseModel?: string;
  device?: 'auto' | 'cpu' | 'cuda';
  threads?: number;
  contextLength?: number;
  /** bytes of the weight files read so far (with `prefetch`), then the total once the model is ready */
  onProgress?: (p: { loadedBytes: number; totalBytes: number }) => void;
  /**
   * Read every weight file through once before mapping it (default true), so the page cache holds
   * the weights and the first token does not wait on disk; this is what `onProgress` measures.
   * false: map only, pages fault in on first use.
   */
  prefetch?: boolean;
  signal?: AbortSignal;
}

/** Reads `files` through in 8 MiB chunks (filling the page cache), reporting bytes; stops on abort. */
async function prefetchFiles(files: string[], totalBytes: number, onProgress?: LoadModelOptions['onProgress'],
  signal?: AbortSignal): Promise<void> {
  const buf = Buffer.allocUnsafe(8 << 20);
  let loaded = 0;
  let lastReport = 0;
  for (const f of files) {
    const fh = await open(f, 'r');
    try {
      for (;;) {
        if (signal?.aborted) throw medllavaError('E_ABORTED', 'aborted');
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        if (bytesRead === 0) break;
        loaded += bytesRead;
        if (loaded - lastReport >= 64 << 20) {
          lastReport = loaded;
          onProgress?.({ loadedBytes: loaded, totalBytes });
        }
      }
    } finally {
      await fh.close();
    }
  }
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

/** Prompt tokens with every -200 expanded to the image's rows, and the embeddings those rows take. */
interface Expanded {
  tokens: number[];
  embeddings?: Float32Array;
}

class ChatImpl implements Chat {
  readonly history: { role: 'user' | 'assistant'; text: string; image?: boolean }[] = [];
  private cc: CachedContext | undefined;
  private running = false;
  /** encoded features of the images in history, in order */
  private images: { features: Float32Array; serial: number }[] = [];

  constructor(private readonly model: ModelImpl, private readonly template: string, private readonly systemPrompt?: string) {}

  reset(): void {
    if (this.running) throw medllavaError('E_ARGUMENT', 'cannot reset a chat while it is answering');
    this.history.length = 0;
    this.images = [];
  }

  async *stream(message: ChatMessage, options: GenerateOptions = {}): AsyncGenerator<string, Reply, void> {
    if (!message || typeof message.text !== 'string') throw medllavaError('E_ARGUMENT', 'a message needs text');
    if (this.running) throw medllavaError('E_ARGUMENT', 'this chat is already answering; await it, or create another chat');
    this.running = true;
    try {
      let imageMs = 0;
      const images = [...this.images];
      if (message.image !== undefined) {
        const t0 = performance.now();
        images.push({ features: await this.model.encodeImage(message.image), serial: this.model.nextImageSerial() });
        imageMs = performance.now() - t0;
      }
      this.cc ??= new CachedContext(this.model.llm().createContext());
      const hasImage = message.image !== undefined;
      const messages: Message[] = [...this.history.map((h) => ({ role: h.role, text: h.text, image: h.image })),
        { role: 'user', text: message.text, image: hasImage }];
      const prompt = renderPrompt(this.template, messages, { systemPrompt: this.systemPrompt, addGenerationPrompt: true });
      const ex = this.model.expand(this.model.tokenizer.encodePrompt(prompt), images);
      const gen = generate(this.cc, this.model.tokenizer, ex.tokens, options,
        ex.embeddings ? { embeddings: ex.embeddings, hidden: this.model.spec.llm.hidden, ms: imageMs } : undefined);
      let r = await gen.next();
      while (!r.done) {
        yield r.value;
        r = await gen.next();
      }
      this.history.push({ role: 'user', text: message.text, ...(hasImage ? { image: true } : {}) },
        { role: 'assistant', text: r.value.text.trim() });
      this.images = images;
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
  private native: NativeLlm | undefined;
  private serial = 0;

  /** device: where the LLM and the vision tower run */
  constructor(readonly spec: ModelSpec, readonly tokenizer: Tokenizer, llm: NativeLlm, private vision: NativeVision | undefined,
    private readonly noVision: string, readonly device: 'cpu' | 'cuda') {
    this.native = llm;
  }

  nextImageSerial(): number {
    return ++this.serial;
  }

  /** Replaces each -200 with its image's rows (LLaVA-Med v1.0: framed by <im_start> … <im_end>). */
  expand(tokens: number[], images: { features: Float32Array; serial: number }[]): Expanded {
    const slots = tokens.filter((t) => t === IMAGE_TOKEN_INDEX).length;
    if (slots === 0) return { tokens };
    if (slots !== images.length) {
      throw medllavaError('E_ARGUMENT', `the prompt has ${slots} <image> placeholder(s) but ${images.length} image(s) were given`);
    }
    const D = this.spec.llm.hidden;
    const n = images[0]!.features.length / D;
    const frame = this.spec.mmUseImStartEnd
      ? [this.tokenizer.encodePrompt('<im_start>').slice(1), this.tokenizer.encodePrompt('<im_end>').slice(1)]
      : [[], []];
    const out: number[] = [];
    const rows: { at: number; features: Float32Array }[] = [];
    let k = 0;
    for (const t of tokens) {
      if (t !== IMAGE_TOKEN_INDEX) { out.push(t); continue; }
      const img = images[k++]!;
      out.push(...frame[0]!);
      rows.push({ at: out.length, features: img.features });
      // placeholders unique to this image and row: a cached prefix is reused only for the same image
      for (let i = 0; i < n; i++) out.push(-(1 + img.serial * 1_000_000 + i));
      out.push(...frame[1]!);
    }
    const embeddings = new Float32Array(out.length * D);
    for (const r of rows) embeddings.set(r.features, r.at * D);
    return { tokens: out, embeddings };
  }

  llm(): NativeLlm {
    if (!this.native) throw medllavaError('E_ARGUMENT', 'this model has been disposed');
    return this.native;
  }

  async encodeImage(image: ImageInput): Promise<Float32Array> {
    if (!this.vision) throw medllavaError('E_UNSUPPORTED', this.noVision);
    const v = this.spec.vision;
    const pixels = await preprocessImage(image, {
      imageSize: v.imageSize, mean: v.imageMean, std: v.imageStd, aspectRatio: this.spec.imageAspectRatio,
      preprocessor: v.preprocessor,
    });
    return this.vision.encode(pixels);
  }

  async forward(input: { tokens: ArrayLike<number>; images?: ImageInput[] }, options: { allLogits?: boolean } = {}) {
    const images = [];
    for (const img of input.images ?? []) images.push({ features: await this.encodeImage(img), serial: this.nextImageSerial() });
    const ex = this.expand(Array.from(input.tokens), images);
    const ctx = this.llm().createContext();
    try {
      return await ctx.eval(Int32Array.from(ex.tokens), { allLogits: options.allLogits ?? false,
        ...(ex.embeddings ? { embeddings: ex.embeddings } : {}) });
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
    this.vision?.dispose();
    this.vision = undefined;
  }
}

export async function loadModel(source?: string, options: LoadModelOptions = {}): Promise<Model> {
  if (source === undefined) {
    throw medllavaError('E_ARGUMENT', 'there is no bundled demo model yet: pass a checkpoint (`medllava fixture` writes small ones)');
  }
  const requested = options.device ?? 'auto';
  if (requested !== 'auto' && requested !== 'cpu' && requested !== 'cuda') {
    throw medllavaError('E_ARGUMENT', `device must be 'auto', 'cpu' or 'cuda', got '${String(requested)}'`);
  }
  // 'auto': CUDA when a device is there, else the CPU (getBackendInfo().cuda.reason says why not)
  const cuda = native().getBackendInfo().cuda;
  if (requested === 'cuda' && !cuda.available) {
    throw medllavaError(cuda.compiled ? 'E_CUDA' : 'E_UNSUPPORTED', `device 'cuda' was asked for, but CUDA is not available: ${cuda.reason}`);
  }
  const device: 'cpu' | 'cuda' = requested === 'cpu' || !cuda.available ? 'cpu' : 'cuda';
  if (options.threads !== undefined) native().setThreads(options.threads);
  if (options.signal?.aborted) throw medllavaError('E_ABORTED', 'aborted');
  const spec = await loadModelSpec(source, options);
  const files = [...new Set([...Object.values(spec.files.weights), ...(spec.lora ? [spec.lora.file] : []),
    ...(statSync(spec.files.visionTower, { throwIfNoEntry: false })?.isFile() ? [spec.files.visionTower] : [])])];
  const totalBytes = files.reduce((s, f) => s + statSync(f).size, 0);
  options.onProgress?.({ loadedBytes: 0, totalBytes });
  if (options.prefetch ?? true) await prefetchFiles(files, totalBytes, options.onProgress, options.signal);
  const tokenizer = await loadTokenizer(spec.files.tokenizer);
  const llm = await loadLlm(spec, { contextLength: options.contextLength, device });
  let vision: NativeVision | undefined;
  let noVision = '';
  try {
    vision = await loadVision(spec, { device });
  } catch (e) {
    if ((e as { code?: string }).code !== 'E_UNSUPPORTED') {
      llm.dispose();
      throw e;
    }
    noVision = (e as Error).message;
  }
  if (options.signal?.aborted) {
    llm.dispose();
    vision?.dispose();
    throw medllavaError('E_ABORTED', 'aborted');
  }
  options.onProgress?.({ loadedBytes: totalBytes, totalBytes });
  return new ModelImpl(spec, tokenizer, llm, vision, noVision, device);
}
