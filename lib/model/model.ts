/**
 * loadModel(): a checkpoint ready to run — spec, tokenizer, the native vision tower + projector
 * (CLIP, or LLaVA-Rad's timm ViT) and LLM, on the CPU or a CUDA device — and chats over it. Each
 * '<image>' of a prompt (token -200) becomes the image's projected patches (LLaVA-Med v1.0:
 * <im_start> patches <im_end>); the patches travel as spans beside the tokens, identified by the
 * encoded image, so a chat's cached prefix is reused only for the same image.
 *
 * Lifecycles: Chat.dispose() frees its KV cache; Model.dispose() disposes every chat of the model
 * (a chat used afterwards throws E_ARGUMENT). Model.forward() sizes its cache to the prompt.
 */
import { existsSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';

import type { Sharp } from 'sharp';

import { medllavaError } from '../errors.js';
import { CachedContext, generate, type GenerateOptions, type ImageSpan, type Reply } from '../generate.js';
import { preprocessImage } from '../image/preprocess.js';
import { cudaProbed, native, packageRoot, type NativeImage, type NativeLlm, type NativeVision } from '../native.js';
import { loadTokenizer } from '../tokenizer/load.js';
import { renderPrompt, type Message } from '../tokenizer/templates.js';
import { IMAGE_TOKEN_INDEX, type Tokenizer } from '../tokenizer/tokenizer.js';
import { loadLlm } from './llm.js';
import { loadModelSpec, type ModelSpec } from './spec.js';
import { loadVision } from './vision.js';

/** A path, encoded bytes, or a sharp pipeline (docs/API.md). */
export type ImageInput = string | Uint8Array | Sharp;

export interface LoadModelOptions {
  visionTower?: string;
  mmproj?: string;
  baseModel?: string;
  device?: 'auto' | 'cpu' | 'cuda';
  /** which CUDA device (its ordinal, default 0) when the model runs on CUDA */
  cudaDevice?: number;
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
  /** Frees the chat's KV cache now (instead of at garbage collection); the chat cannot be used after. */
  dispose(): void;
}

export interface Model {
  readonly spec: ModelSpec;
  readonly tokenizer: Tokenizer;
  readonly device: 'cpu' | 'cuda';
  encodeImage(image: ImageInput): Promise<Float32Array>;
  forward(input: { tokens: ArrayLike<number>; images?: ImageInput[] }, options?: { allLogits?: boolean }): Promise<Float32Array>;
  createChat(options?: { template?: string; systemPrompt?: string }): Chat;
  /**
   * The model's parameters: every tensor the LLM and the vision tower + projector read, under the
   * checkpoint's own names (HF / PEFT; HF names for GGUF files), with PyTorch shapes and stored types.
   */
  parameters(): ModelParameter[];
  /** Frees the weights and disposes every chat of this model (their later use throws E_ARGUMENT). */
  dispose(): Promise<void>;
}

export interface ModelParameter {
  name: string;
  shape: number[];
  dtype: string;
  /** 'llm' (the language model, LoRA pairs included) or 'vision' (the tower and the projector) */
  component: 'llm' | 'vision';
  trainable: boolean;
  /** the parameter whose storage this one shares (a tied lm_head) */
  tiedTo: string | null;
}

/** An encoded image: its projected patches, kept native; the object's identity is the image's identity. */
type EncodedImage = NativeImage;

/** Prompt tokens with every -200 expanded to the image's rows (IMAGE_ROW there), and the spans. */
interface Expanded {
  tokens: number[];
  spans: ImageSpan[];
}

/** The token value at an image row: the native context takes any negative id's row from the embeddings. */
const IMAGE_ROW = -1;

class ChatImpl implements Chat {
  readonly history: { role: 'user' | 'assistant'; text: string; image?: boolean }[] = [];
  private cc: CachedContext | undefined;
  private running = false;
  private disposed = false;
  /** the encoded images of the history, in order */
  private images: EncodedImage[] = [];

  constructor(private readonly model: ModelImpl, readonly id: number, private readonly template: string,
    private readonly systemPrompt?: string) {}

  private usable(): void {
    this.model.llm(); // E_ARGUMENT once the model is disposed
    if (this.disposed) throw medllavaError('E_ARGUMENT', 'this chat has been disposed; create another with model.createChat()');
  }

  reset(): void {
    this.usable();
    if (this.running) throw medllavaError('E_ARGUMENT', 'cannot reset a chat while it is answering');
    this.history.length = 0;
    for (const img of this.images) img.dispose();
    this.images = [];
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.cc?.ctx.dispose(); // an eval in flight keeps the cache until it ends
    this.cc = undefined;
    for (const img of this.images) img.dispose();
    this.images = [];
    this.model.forget(this);
  }

  async *stream(message: ChatMessage, options: GenerateOptions = {}): AsyncGenerator<string, Reply, void> {
    this.usable();
    if (!message || typeof message.text !== 'string') throw medllavaError('E_ARGUMENT', 'a message needs text');
    if (this.running) throw medllavaError('E_ARGUMENT', 'this chat is already answering; await it, or create another chat');
    this.running = true;
    let added: EncodedImage | undefined;
    try {
      let imageMs = 0;
      const images = [...this.images];
      if (message.image !== undefined) {
        const t0 = performance.now();
        added = await this.model.encodeNative(message.image);
        images.push(added);
        imageMs = performance.now() - t0;
      }
      this.usable(); // the model or the chat may have been disposed while the image was encoded
      this.cc ??= new CachedContext(this.model.llm().createContext());
      const hasImage = message.image !== undefined;
      const messages: Message[] = [...this.history.map((h) => ({ role: h.role, text: h.text, image: h.image })),
        { role: 'user', text: message.text, image: hasImage }];
      const prompt = renderPrompt(this.template, messages, { systemPrompt: this.systemPrompt, addGenerationPrompt: true });
      const ex = this.model.expand(this.model.tokenizer.encodePrompt(prompt), images);
      const gen = generate(this.cc, this.model.tokenizer, ex.tokens, options,
        ex.spans.length ? { spans: ex.spans, ms: imageMs } : undefined);
      let r = await gen.next();
      while (!r.done) {
        yield r.value;
        r = await gen.next();
      }
      this.history.push({ role: 'user', text: message.text, ...(hasImage ? { image: true } : {}) },
        { role: 'assistant', text: r.value.text.trim() });
      this.images = images;
      added = undefined;  // the history holds it now
      return r.value;
    } finally {
      added?.dispose();  // a turn that failed: its image is not part of the chat
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
  /**
   * The chats of this model, disposed with it. Held weakly: a chat dropped without dispose() is
   * still collected (its KV cache with it), and its entry leaves when the collector takes it.
   */
  private readonly chats = new Map<number, WeakRef<ChatImpl>>();
  private readonly chatGone = new FinalizationRegistry<number>((id) => this.chats.delete(id));
  private chatIds = 0;

  /** device: where the LLM and the vision tower run */
  constructor(readonly spec: ModelSpec, readonly tokenizer: Tokenizer, llm: NativeLlm, private vision: NativeVision | undefined,
    private readonly noVision: string, readonly device: 'cpu' | 'cuda', readonly cudaDevice = 0) {
    this.native = llm;
  }

  parameters(): ModelParameter[] {
    const llm = this.llm().parameters().map((p) => ({ ...p, component: 'llm' as const }));
    const vision = (this.vision?.parameters() ?? []).map((p) => ({ ...p, component: 'vision' as const }));
    return [...llm, ...vision];
  }

  forget(chat: ChatImpl): void {
    this.chats.delete(chat.id);
    this.chatGone.unregister(chat);
  }

  /** Replaces each -200 with its image's rows (LLaVA-Med v1.0: framed by <im_start> … <im_end>). */
  expand(tokens: number[], images: EncodedImage[]): Expanded {
    const slots = tokens.filter((t) => t === IMAGE_TOKEN_INDEX).length;
    if (slots === 0) return { tokens, spans: [] };
    if (slots !== images.length) {
      throw medllavaError('E_ARGUMENT', `the prompt has ${slots} <image> placeholder(s) but ${images.length} image(s) were given`);
    }
    const D = this.spec.llm.hidden;
    const frame = this.spec.mmUseImStartEnd
      ? [this.tokenizer.encodePrompt('<im_start>').slice(1), this.tokenizer.encodePrompt('<im_end>').slice(1)]
      : [[], []];
    const out: number[] = [];
    const spans: ImageSpan[] = [];
    let k = 0;
    for (const t of tokens) {
      if (t !== IMAGE_TOKEN_INDEX) { out.push(t); continue; }
      const img = images[k++]!;
      out.push(...frame[0]!);
      if (img.width !== D) throw medllavaError('E_SHAPE', `an image's rows are ${img.width} wide, the LLM's ${D}`);
      const rows = img.rows;
      spans.push({ at: out.length, rows, image: img });
      for (let i = 0; i < rows; i++) out.push(IMAGE_ROW);
      out.push(...frame[1]!);
    }
    return { tokens: out, spans };
  }

  llm(): NativeLlm {
    if (!this.native) throw medllavaError('E_ARGUMENT', 'this model has been disposed');
    return this.native;
  }

  /** What a trainer works on: the native LLM and vision tower, and the image preprocessing. */
  trainingParts(): { llm: NativeLlm; vision: NativeVision | undefined; frame: [number[], number[]];
    pixels(image: ImageInput): Promise<Float32Array>; device: 'cpu' | 'cuda'; deviceIndex: number } {
    const frame: [number[], number[]] = this.spec.mmUseImStartEnd
      ? [this.tokenizer.encodePrompt('<im_start>').slice(1), this.tokenizer.encodePrompt('<im_end>').slice(1)]
      : [[], []];
    return {
      llm: this.llm(), vision: this.vision, frame, device: this.device, deviceIndex: this.cudaDevice,
      pixels: async (image) => {
        if (!this.vision) throw medllavaError('E_UNSUPPORTED', this.noVision);
        const v = this.spec.vision;
        return preprocessImage(image, {
          imageSize: v.imageSize, mean: v.imageMean, std: v.imageStd, aspectRatio: this.spec.imageAspectRatio, preprocessor: v.preprocessor,
        });
      },
    };
  }

  async encodeImage(image: ImageInput): Promise<Float32Array> {
    const encoded = await this.encodeNative(image);
    try {
      return encoded.toArray();
    } finally {
      encoded.dispose();
    }
  }

  /** The image encoded, its rows kept native (what chats and forward splice by reference). */
  async encodeNative(image: ImageInput): Promise<EncodedImage> {
    if (!this.vision) throw medllavaError('E_UNSUPPORTED', this.noVision);
    const v = this.spec.vision;
    const pixels = await preprocessImage(image, {
      imageSize: v.imageSize, mean: v.imageMean, std: v.imageStd, aspectRatio: this.spec.imageAspectRatio,
      preprocessor: v.preprocessor,
    });
    return this.vision.encodeImage(pixels);
  }

  async forward(input: { tokens: ArrayLike<number>; images?: ImageInput[] }, options: { allLogits?: boolean } = {}) {
    const images: EncodedImage[] = [];
    try {
      for (const img of input.images ?? []) images.push(await this.encodeNative(img));
      const ex = this.expand(Array.from(input.tokens), images);
      // a cache for exactly this input, not the whole context (E_CONTEXT_FULL when it exceeds the context)
      const ctx = this.llm().createContext({ capacity: Math.max(1, ex.tokens.length) });
      const cc = new CachedContext(ctx);
      try {
        if (!(options.allLogits ?? false)) return (await cc.prefill(ex.tokens, ex.spans)).logits;
        return await ctx.eval(Int32Array.from(ex.tokens),
          { allLogits: true, ...(ex.spans.length ? { images: ex.spans.map((s) => ({ at: s.at, image: s.image })) } : {}) });
      } finally {
        ctx.dispose();
      }
    } finally {
      for (const img of images) img.dispose();
    }
  }

  createChat(options: { template?: string; systemPrompt?: string } = {}): Chat {
    this.llm();
    const chat = new ChatImpl(this, ++this.chatIds, options.template ?? this.spec.template, options.systemPrompt);
    this.chats.set(chat.id, new WeakRef(chat));
    this.chatGone.register(chat, chat.id, chat);
    return chat;
  }

  async dispose(): Promise<void> {
    for (const ref of [...this.chats.values()]) ref.deref()?.dispose();
    this.native?.dispose();
    this.native = undefined;
    this.vision?.dispose();
    this.vision = undefined;
  }
}

/** The internals of a Model that loadModel made (a trainer's view of it); E_ARGUMENT for anything else. */
export function modelInternals(model: Model): ModelImpl {
  if (!(model instanceof ModelImpl)) throw medllavaError('E_ARGUMENT', 'expected a Model from loadModel()');
  return model;
}

export async function loadModel(source?: string, options: LoadModelOptions = {}): Promise<Model> {
  if (source === undefined) {
    // the bundled demo model (trained on the synthetic world by `npm run train:demo`)
    source = join(packageRoot(), 'models', 'medllava-demo');
    if (!existsSync(join(source, 'config.json'))) {
      throw medllavaError('E_IO', `the bundled demo model is missing from ${source} (this copy of the package lacks models/; ` +
        '`npm run train:demo` rebuilds it) — or pass a checkpoint');
    }
  }
  const requested = options.device ?? 'auto';
  if (requested !== 'auto' && requested !== 'cpu' && requested !== 'cuda') {
    throw medllavaError('E_ARGUMENT', `device must be 'auto', 'cpu' or 'cuda', got '${String(requested)}'`);
  }
  // 'auto': CUDA when a device is there, else the CPU (getBackendInfo().cuda.reason says why not)
  await cudaProbed(); // without blocking the event loop; the synchronous getBackendInfo() then finds it done
  const cuda = native().getBackendInfo().cuda;
  if (requested === 'cuda' && !cuda.available) {
    throw medllavaError(cuda.compiled ? 'E_CUDA' : 'E_UNSUPPORTED', `device 'cuda' was asked for, but CUDA is not available: ${cuda.reason}`);
  }
  const device: 'cpu' | 'cuda' = requested === 'cpu' || !cuda.available ? 'cpu' : 'cuda';
  const cudaDevice = options.cudaDevice ?? 0;
  if (!Number.isInteger(cudaDevice) || cudaDevice < 0) {
    throw medllavaError('E_ARGUMENT', `cudaDevice must be an integer ≥ 0, got ${String(options.cudaDevice)}`);
  }
  if (device === 'cuda' && cudaDevice >= cuda.devices.length) {
    throw medllavaError('E_ARGUMENT', `cudaDevice ${cudaDevice} is not there: this machine has ${cuda.devices.length} CUDA device(s)`);
  }
  if (options.threads !== undefined) native().setThreads(options.threads);
  if (options.signal?.aborted) throw medllavaError('E_ABORTED', 'aborted');
  const spec = await loadModelSpec(source, options);
  const files = [...new Set([...Object.values(spec.files.weights), ...(spec.lora ? [spec.lora.file] : []),
    ...(statSync(spec.files.visionTower, { throwIfNoEntry: false })?.isFile() ? [spec.files.visionTower] : [])])];
  const totalBytes = files.reduce((s, f) => s + statSync(f).size, 0);
  options.onProgress?.({ loadedBytes: 0, totalBytes });
  if (options.prefetch ?? true) await prefetchFiles(files, totalBytes, options.onProgress, options.signal);
  const tokenizer = await loadTokenizer(spec.files.tokenizer);
  const llm = await loadLlm(spec, { contextLength: options.contextLength, device, deviceIndex: cudaDevice });
  let vision: NativeVision | undefined;
  let noVision = '';
  try {
    vision = await loadVision(spec, { device, deviceIndex: cudaDevice });
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
  return new ModelImpl(spec, tokenizer, llm, vision, noVision, device, cudaDevice);
}
