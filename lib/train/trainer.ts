/**
 * The low-level training API: createTrainer(model) → Trainer, over the native engine
 * (native/train/trainer.h). Which parameters train is data (a stage preset or name globs); the
 * optimizer is AdamW with HF Trainer's parameter groups (no decay on norms and biases) and LLaVA's
 * separate projector learning rate; global-norm clipping as torch.nn.utils.clip_grad_norm_; the
 * learning-rate schedules of HF's get_scheduler. A batch is what trainingExample() returns, with
 * its images.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { join } from 'node:path';

import { medllavaError } from '../errors.js';
import { modelInternals, type ImageInput, type Model } from '../model/model.js';
import { native, type NativeParameter, type NativeTrainSequence, type NativeTrainer } from '../native.js';
import { IMAGE_TOKEN_INDEX } from '../tokenizer/tokenizer.js';

export type TrainingStage = 'align' | 'instruct' | 'finetune' | 'lora' | 'full';

export interface LearningRateSchedule {
  kind: 'cosine' | 'linear' | 'constant';
  /** warmup steps as a share of totalSteps (HF: ceil(ratio · total)); warmupSteps wins when both are given */
  warmupRatio?: number;
  warmupSteps?: number;
  /** optimizer steps of the whole run (needed by linear and cosine) */
  totalSteps?: number;
}

export interface TrainerOptions {
  /** which parameters train: align = the projector; instruct / finetune = projector + LLM; lora = projector +
   * the LoRA pairs; full = everything, the vision tower included (default 'instruct') */
  stage?: TrainingStage;
  /** parameter-name globs (HF / PEFT names, `*` any run of characters); overrides stage */
  trainable?: string[];
  /** stage 'lora' on a model without adapters adds PEFT LoRA pairs (LLaVA-Rad's recipe by default: r 64,
   * alpha 128 on q, k, v, o, gate, up, down; A uniform ±1/√in, B = 0). dropout: on the adapters' input, as
   * PEFT's lora_dropout (default 0.05 with stage 'lora', else 0); each step draws a new mask from `seed` */
  lora?: { r?: number; alpha?: number; dropout?: number; targets?: string[] };
  /** seeds the new LoRA adapters' initialisation and the dropout masks (default 0) */
  seed?: number;
  learningRate?: number;           // default 2e-5
  projectorLearningRate?: number;  // LLaVA's mm_projector_lr (default: learningRate)
  weightDecay?: number;            // default 0 (LLaVA's recipes)
  betas?: [number, number];        // default [0.9, 0.999]
  eps?: number;                    // default 1e-8
  /** global-norm clipping (default 1.0); null turns it off, explicitly */
  maxGradNorm?: number | null;
  /** micro-batches per optimizer step (default 1) */
  gradientAccumulation?: number;
  schedule?: LearningRateSchedule; // default constant
  /** recompute activations in backward instead of keeping them (less memory, ~1/3 more compute) */
  checkpointActivations?: boolean;
  /** rows of logits made at once by the fused lm_head + cross-entropy (default: as many as fit
   * 32 MiB; only rows with a label count). Lower it to save memory with a large vocabulary. */
  lossChunkRows?: number;
  /** 'bf16': mixed precision — the trainable matrices' GEMMs read bf16 copies of their fp32 master values
   * (gradients, norms, biases and AdamW state stay fp32), as upstream's bf16 training does; the default for a
   * model on CUDA. 'f32': everything in fp32; the CPU's only (bf16 there is E_UNSUPPORTED). */
  computeType?: 'bf16' | 'f32';
}

export interface TrainingExample {
  /** -200 for each image, as trainingExample() returns them */
  inputIds: ArrayLike<number>;
  /** aligned with inputIds (the shift to next-token targets happens inside); -100 = ignored */
  labels: ArrayLike<number>;
  /** one per -200, in order */
  images?: ImageInput[];
  /** per-sample weight of its targets' losses (default 1) */
  weight?: number;
}

export interface TrainerParameter {
  name: string; shape: number[]; trainable: boolean; component: 'llm' | 'vision';
  /** the parameter whose storage (and gradient) this one shares: a tied lm_head reads embed_tokens */
  tiedTo: string | null;
}

export interface StepResult {
  /** mean loss over this batch's non-ignored targets */
  loss: number;
  /** the global gradient norm before clipping (NaN on a micro-step that did not update) */
  gradNorm: number;
  /** the learning rate this update used (the base rate × the schedule) */
  lr: number;
  tokens: number;
  /** whether the optimizer stepped (the last micro-batch of an accumulation) */
  updated: boolean;
  /** optimizer steps so far */
  step: number;
}

export interface Trainer {
  readonly parameters: readonly TrainerParameter[];
  /** loss, target count and every trainable parameter's gradient (HF shape, row-major); no update.
   * Discards any micro-batches accumulated by step() and not yet applied. */
  lossAndGradients(batch: TrainingExample[], options?: { signal?: AbortSignal }):
    Promise<{ loss: number; tokens: number; gradients: Map<string, Float32Array> }>;
  /** forward + backward, and on the last micro-batch of an accumulation: clip + AdamW */
  step(batch: TrainingExample[], options?: { signal?: AbortSignal }): Promise<StepResult>;
  /** the trainable parameters (safetensors, HF / PEFT names), the AdamW state and the trainer state */
  save(dir: string): Promise<void>;
  /** restores what save() wrote — the trainable values, AdamW's moments, the optimizer step (schedule and bias
   * correction go on from it) and the LoRA dropout stream — into a trainer made with the same options over the
   * same model: the next step is the one the saved trainer would have taken. Micro-batches a save found
   * accumulated and not yet applied are not saved (a resume starts at the optimizer step boundary). */
  load(dir: string): Promise<void>;
  dispose(): Promise<void>;
}

/** HF's get_scheduler multipliers: the rate of optimizer step k (1-based) is base · factor(k − 1). */
export function scheduleFactor(s: LearningRateSchedule, stepIndex: number): number {
  const total = s.totalSteps ?? 0;
  const warmup = s.warmupSteps ?? (s.warmupRatio ? Math.ceil(total * s.warmupRatio) : 0);
  if (stepIndex < warmup) return stepIndex / Math.max(1, warmup);
  switch (s.kind) {
    case 'constant': return 1;
    case 'linear': return Math.max(0, (total - stepIndex) / Math.max(1, total - warmup));
    case 'cosine': {
      const progress = (stepIndex - warmup) / Math.max(1, total - warmup);
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress)));
    }
  }
}

function globToRegExp(glob: string): RegExp {
  return new RegExp(`^${glob.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
}

const isProjector = (name: string) => /(^|\.)mm_projector\./.test(name);
const isLora = (name: string) => /\.lora_[AB]\.weight$/.test(name);
/** HF Trainer's groups: no decay for biases and normalization layers' parameters */
export const noWeightDecay = (name: string) =>
  /bias$/.test(name) || /(norm\d*|layrnorm|norm_pre|ln_\w+|ln\d*)(\.|$)/i.test(name);

function stageTrainable(stage: TrainingStage, p: NativeParameter & { component: 'llm' | 'vision' }): boolean {
  switch (stage) {
    case 'align': return isProjector(p.name);
    case 'instruct':
    case 'finetune': return isProjector(p.name) || (p.component === 'llm' && !isLora(p.name));
    case 'lora': return isProjector(p.name) || isLora(p.name);
    case 'full': return true;
  }
}

function positiveNumber(v: unknown, what: string, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw medllavaError('E_ARGUMENT', `${what} must be a finite number ≥ 0, got ${String(v)}`);
  return v;
}

/** trainingExample()s → the native batch: each -200 expanded to the image's rows (framed by <im_start> /
 * <im_end> on LLaVA-Med v1.0), their labels -100; the images preprocessed as the model's encode does. */
export async function nativeBatch(model: Model, batch: TrainingExample[], signal?: AbortSignal):
  Promise<{ seqs: NativeTrainSequence[]; pixels: Float32Array[] }> {
  if (!Array.isArray(batch) || batch.length === 0) throw medllavaError('E_ARGUMENT', 'a batch is a non-empty array of training examples');
  const parts = modelInternals(model).trainingParts();
  const rows = parts.vision?.tokens ?? 0;
  const seqs: NativeTrainSequence[] = [];
  const pixels: Float32Array[] = [];
  for (const [i, ex] of batch.entries()) {
    const ids = Array.from(ex.inputIds ?? []), labels = Array.from(ex.labels ?? []);
    if (ids.length !== labels.length) {
      throw medllavaError('E_SHAPE', `example ${i}: ${labels.length} labels for ${ids.length} input ids (they must be aligned)`);
    }
    const slots = ids.filter((t) => t === IMAGE_TOKEN_INDEX).length, images = ex.images ?? [];
    if (slots !== images.length) throw medllavaError('E_ARGUMENT', `example ${i}: ${slots} image placeholder(s) (-200) but ${images.length} image(s)`);
    if (slots > 0 && !parts.vision) throw medllavaError('E_UNSUPPORTED', `example ${i} has an image, but this model has no vision tower`);
    for (const t of ids) {
      if (!Number.isInteger(t) || (t < 0 && t !== IMAGE_TOKEN_INDEX)) throw medllavaError('E_ARGUMENT', `example ${i}: input id ${t} is not a token`);
    }
    const tokens: number[] = [], labs: number[] = [], at: { at: number; index: number }[] = [];
    ids.forEach((t, k) => {
      if (t !== IMAGE_TOKEN_INDEX) { tokens.push(t); labs.push(labels[k]!); return; }
      for (const f of parts.frame[0]) { tokens.push(f); labs.push(-100); }
      at.push({ at: tokens.length, index: pixels.length + at.length });
      for (let r = 0; r < rows; r++) { tokens.push(-1); labs.push(-100); }
      for (const f of parts.frame[1]) { tokens.push(f); labs.push(-100); }
    });
    for (const img of images) {
      if (signal?.aborted) throw medllavaError('E_ABORTED', 'aborted');
      pixels.push(await parts.pixels(img));
    }
    const weight = positiveNumber(ex.weight, `example ${i}: weight`, 1);
    seqs.push({ tokens: Int32Array.from(tokens), labels: Int32Array.from(labs), images: at, weight });
  }
  return { seqs, pixels };
}


export class TrainerImpl implements Trainer {
  readonly parameters: TrainerParameter[];
  private engine: NativeTrainer | undefined;
  private micro = 0;
  private optimizerStep = 0;
  private readonly groups: { vision: boolean; name: string; lr: number; weightDecay: number }[];
  private busy = false;
  /** the dropout stream's position at the last optimizer step's boundary (what a save keeps) */
  private boundaryDropout: number;
  /** ZeRO-1: every trainable parameter's owner rank (its AdamW state lives there), and this rank */
  private shard: { owner: Map<string, number>; rank: number; timeoutMs: number } | undefined;

  constructor(private readonly model: Model, engine: NativeTrainer, params: TrainerParameter[], private readonly o: Required<Omit<TrainerOptions,
    'trainable' | 'projectorLearningRate' | 'stage' | 'checkpointActivations' | 'lora' | 'seed' | 'lossChunkRows' | 'computeType'>> & { projectorLearningRate: number },
    /** parameters that read another's storage (a tied lm_head): their gradient is the owner's */
    private readonly tied: Set<string>, private readonly dropout: number) {
    this.engine = engine;
    this.boundaryDropout = engine.dropoutStep();
    this.parameters = params;
    this.groups = params.filter((p) => p.trainable && !this.tied.has(p.name)).map((p) => ({
      vision: p.component === 'vision', name: p.name,
      lr: isProjector(p.name) ? o.projectorLearningRate : o.learningRate,
      weightDecay: noWeightDecay(p.name) ? 0 : o.weightDecay,
    }));
  }

  private native(): NativeTrainer {
    if (!this.engine) throw medllavaError('E_ARGUMENT', 'this trainer has been disposed');
    if (this.busy) throw medllavaError('E_ARGUMENT', 'the trainer is busy: await the previous call first');
    return this.engine;
  }

  private toBatch(batch: TrainingExample[], signal?: AbortSignal) {
    return nativeBatch(this.model, batch, signal);
  }

  private async exclusive<T>(f: (engine: NativeTrainer) => Promise<T>): Promise<T> {
    const engine = this.native();
    this.busy = true;
    try {
      return await f(engine);
    } finally {
      this.busy = false;
    }
  }

  async lossAndGradients(batch: TrainingExample[], options: { signal?: AbortSignal } = {}) {
    const b = await this.toBatch(batch, options.signal);
    return this.exclusive(async (engine) => {
      await engine.zeroGrads();
      this.micro = 0;
      const stop = abortInto(engine, options.signal);
      try {
        if (options.signal?.aborted) throw medllavaError('E_ABORTED', 'aborted');
        const r = await engine.accumulate(b, 1);
        const gradients = new Map<string, Float32Array>();
        for (const p of this.parameters) {
          if (!p.trainable || this.tied.has(p.name)) continue;
          const g = await engine.state(p.component === 'vision', p.name, 'grad');
          if (g) gradients.set(p.name, g);
        }
        return { loss: r.loss, tokens: r.tokens, gradients };
      } finally {
        stop();
        await engine.zeroGrads();
      }
    });
  }

  async step(batch: TrainingExample[], options: { signal?: AbortSignal } = {}): Promise<StepResult> {
    return this.stepNative(await this.toBatch(batch, options.signal), options);
  }

  /** step() over a batch nativeBatch() already made */
  async stepNative(b: { seqs: NativeTrainSequence[]; pixels: Float32Array[] }, options: { signal?: AbortSignal } = {}): Promise<StepResult> {
    const r = await this.accumulateNative(b, options.signal);
    if (this.micro < this.o.gradientAccumulation) {
      return { loss: r.loss, tokens: r.tokens, gradNorm: NaN, lr: this.o.learningRate * scheduleFactor(this.o.schedule, this.optimizerStep),
        updated: false, step: this.optimizerStep };
    }
    const u = await this.applyUpdate();
    return { loss: r.loss, tokens: r.tokens, ...u, updated: true };
  }

  /** One micro-batch's forward and backward (its gradient scaled by 1 / gradientAccumulation); no update. */
  async accumulateNative(b: { seqs: NativeTrainSequence[]; pixels: Float32Array[] }, signal?: AbortSignal,
    dropoutStep?: number): Promise<{ loss: number; tokens: number }> {
    return this.exclusive(async (engine) => {
      if (signal?.aborted) throw medllavaError('E_ABORTED', 'aborted');
      // the curriculum trainer names each micro-batch's dropout step (its place in the run), so that it does not
      // depend on which rank trains it or on what ran before
      if (dropoutStep !== undefined) engine.setLoraDropout(this.dropout, dropoutStep);
      const stop = abortInto(engine, signal);
      try {
        const r = await engine.accumulate(b, 1 / this.o.gradientAccumulation);
        this.micro++;
        return r;
      } catch (e) {
        // a refused batch changed nothing; anything else may have left a partial gradient: start the
        // accumulation again rather than apply it
        const code = (e as { code?: string }).code;
        if (code !== 'E_ARGUMENT' && code !== 'E_SHAPE' && code !== 'E_CONTEXT_FULL' && code !== 'E_UNSUPPORTED') {
          await engine.zeroGrads();
          this.micro = 0;
        }
        throw e;
      } finally {
        stop();
      }
    });
  }

  /** Clipping and AdamW over the gradients accumulated so far (however many micro-batches: an epoch's last
   * step may have fewer); the optimizer step's boundary. */
  async applyUpdate(o: { allowEmpty?: boolean } = {}): Promise<{ gradNorm: number; lr: number; step: number }> {
    return this.exclusive(async (engine) => {
      // allowEmpty: a rank that trained none of this step's micro-batches still updates with the summed gradients
      if (this.micro === 0 && !o.allowEmpty) throw medllavaError('E_ARGUMENT', 'no micro-batch has been accumulated since the last update');
      const lrFactor = scheduleFactor(this.o.schedule, this.optimizerStep);
      this.micro = 0;
      const gradNorm = await engine.gradNorm();
      const max = this.o.maxGradNorm;
      // torch.nn.utils.clip_grad_norm_: scale by max / (norm + 1e-6) when that is below 1
      const clip = max === null ? 1 : Math.min(1, max / (gradNorm + 1e-6));
      this.optimizerStep++;
      const shard = this.shard;
      await engine.update({
        groups: shard ? this.groups.filter((g) => shard.owner.get(g.name) === shard.rank) : this.groups,
        step: this.optimizerStep, lrFactor, clip, beta1: this.o.betas[0], beta2: this.o.betas[1], eps: this.o.eps,
      });
      // ZeRO-1: each rank updated the parameters it owns; their new values go from the owners to everyone
      if (shard) await engine.broadcastParams(this.groups.map((g) => ({ vision: g.vision, name: g.name, root: shard.owner.get(g.name)! })), shard.timeoutMs);
      this.boundaryDropout = engine.dropoutStep();
      return { gradNorm, lr: this.o.learningRate * lrFactor, step: this.optimizerStep };
    });
  }

  /**
   * ZeRO-1 over `size` ranks: the trainable parameters are dealt to the ranks (each to the one holding the fewest
   * values so far, in table order); each rank keeps AdamW's moments for its own only, updates only those, and the
   * new values are broadcast from their owners. Returns the moment bytes this rank holds.
   */
  async shardOptimizer(rank: number, size: number, timeoutMs: number): Promise<number> {
    return this.exclusive(async (engine) => {
      const load = new Array<number>(size).fill(0), owner = new Map<string, number>();
      for (const p of this.parameters) {
        if (!p.trainable || this.tied.has(p.name)) continue;
        let r = 0;
        for (let k = 1; k < size; k++) if (load[k]! < load[r]!) r = k;
        owner.set(p.name, r);
        load[r]! += p.shape.reduce((a, b) => a * b, 1);
      }
      await engine.shardOptimizer(this.groups.filter((g) => owner.get(g.name) === rank).map((g) => ({ vision: g.vision, name: g.name })));
      this.shard = { owner, rank, timeoutMs };
      return engine.optimizerBytes();
    });
  }

  /** bytes of AdamW moments this trainer holds */
  optimizerBytes(): number {
    return this.native().optimizerBytes();
  }

  /** ZeRO-1: every moment this rank does not hold, from its owner (a collective: every rank calls it; rank 0 uses the result for a save). */
  async gatherMoments(bcast: (bytes: Uint8Array, root: number) => Promise<void>): Promise<Map<string, { m: Float32Array; v: Float32Array }>> {
    const out = new Map<string, { m: Float32Array; v: Float32Array }>();
    const shard = this.shard;
    if (!shard) return out;
    for (const g of this.groups) {
      const root = shard.owner.get(g.name)!;
      const p = this.parameters.find((q) => q.name === g.name)!;
      const n = p.shape.reduce((a, b) => a * b, 1);
      const got: Float32Array[] = [];
      for (const which of ['m', 'v'] as const) {
        const mine = root === shard.rank ? await this.exclusive((engine) => engine.state(g.vision, g.name, which)) : null;
        const buf = new Uint8Array(n * 4);
        if (mine) buf.set(new Uint8Array(mine.buffer, mine.byteOffset, n * 4));
        await bcast(buf, root);
        got.push(new Float32Array(buf.buffer));
      }
      if (root !== shard.rank) out.set(g.name, { m: got[0]!, v: got[1]! });
    }
    return out;
  }

  /** Data parallel: every rank's accumulated gradients summed in place over MPI (before applyUpdate). */
  async allreduceGrads(timeoutMs: number): Promise<void> {
    await this.exclusive((engine) => engine.allreduceGrads(timeoutMs));
  }

  /** Drops micro-batches accumulated since the last update and rewinds the dropout stream to that boundary. */
  async discardPending(): Promise<void> {
    await this.exclusive(async (engine) => {
      await engine.zeroGrads();
      this.micro = 0;
      engine.setLoraDropout(this.dropout, this.boundaryDropout);
    });
  }

  async save(dir: string, gathered?: Map<string, { m: Float32Array; v: Float32Array }>): Promise<void> {
    const parts = modelInternals(this.model).trainingParts();
    await this.exclusive(async (engine) => {
      mkdirSync(dir, { recursive: true });
      const values: { name: string; dtype: string; shape: number[]; data: Float32Array }[] = [];
      const state: { name: string; dtype: string; shape: number[]; data: Float32Array }[] = [];
      for (const p of this.parameters) {
        if (!p.trainable || this.tied.has(p.name)) continue;
        const table = p.component === 'vision' ? parts.vision! : parts.llm;
        values.push({ name: p.name, dtype: 'F32', shape: p.shape, data: await table.readParameter(p.name) });
        for (const which of ['m', 'v'] as const) {
          const s = (await engine.state(p.component === 'vision', p.name, which)) ?? gathered?.get(p.name)?.[which] ?? null;
          if (s) state.push({ name: `${p.name}.exp_avg${which === 'm' ? '' : '_sq'}`, dtype: 'F32', shape: p.shape, data: s });
        }
      }
      await native().writeSafetensors(join(dir, 'trainable.safetensors'), values, { format: 'pt' });
      await native().writeSafetensors(join(dir, 'optimizer.safetensors'), state, { format: 'pt' });
      const json = JSON.stringify({
        step: this.optimizerStep, pendingMicroBatches: this.micro, dropoutStep: this.boundaryDropout, options: this.o, groups: this.groups,
        trainable: values.map((v) => ({ name: v.name, shape: v.shape })),
      }, null, 2);
      const tmp = join(dir, `.trainer_state.json.${process.pid}.tmp`);
      writeFileSync(tmp, json);
      const fd = openSync(tmp, 'r');
      fsyncSync(fd);
      closeSync(fd);
      renameSync(tmp, join(dir, 'trainer_state.json'));
    });
  }

  async load(dir: string): Promise<void> {
    let state: { step?: unknown; dropoutStep?: unknown; trainable?: { name: string; shape: number[] }[] };
    try {
      state = JSON.parse(readFileSync(join(dir, 'trainer_state.json'), 'utf8')) as typeof state;
    } catch (e) {
      throw medllavaError('E_IO', `cannot read ${join(dir, 'trainer_state.json')}: ${(e as Error).message}`);
    }
    const mine = this.parameters.filter((p) => p.trainable && !this.tied.has(p.name));
    const saved = state.trainable ?? [];
    const key = (l: { name: string; shape: number[] }[]) => l.map((p) => `${p.name}:${p.shape.join('x')}`).sort().join('\n');
    if (key(saved) !== key(mine)) {
      const missing = mine.filter((p) => !saved.some((q) => q.name === p.name)).map((p) => p.name);
      throw medllavaError('E_ARGUMENT', `${dir} was saved by a trainer with other trainable parameters than this one` +
        (missing.length ? ` (it lacks ${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', …' : ''})` : ' (their shapes differ)'));
    }
    if (!Number.isInteger(state.step) || (state.step as number) < 0 || !Number.isSafeInteger(state.dropoutStep)) {
      throw medllavaError('E_FORMAT', `${join(dir, 'trainer_state.json')}: step / dropoutStep missing`);
    }
    const read = async (file: string, name: string, n: number) => {
      const bytes = await native().readSafetensorsTensor(join(dir, file), name);
      if (bytes.byteLength !== n * 4) throw medllavaError('E_FORMAT', `${join(dir, file)}: ${name} is not ${n} f32 values`);
      return new Float32Array(bytes.slice().buffer);
    };
    await this.exclusive(async (engine) => {
      for (const p of mine) {
        const n = p.shape.reduce((a, b) => a * b, 1), vision = p.component === 'vision';
        await engine.setState(vision, p.name, 'value', await read('trainable.safetensors', p.name, n));
        if (this.shard && this.shard.owner.get(p.name) !== this.shard.rank) continue;  // ZeRO-1: another rank's state
        await engine.setState(vision, p.name, 'm', await read('optimizer.safetensors', `${p.name}.exp_avg`, n));
        await engine.setState(vision, p.name, 'v', await read('optimizer.safetensors', `${p.name}.exp_avg_sq`, n));
      }
      await engine.zeroGrads();
      engine.setLoraDropout(this.dropout, state.dropoutStep as number);
      this.boundaryDropout = state.dropoutStep as number;
      this.optimizerStep = state.step as number;
      this.micro = 0;
    });
  }

  async dispose(): Promise<void> {
    const engine = this.native();
    engine.dispose();
    this.engine = undefined;
  }
}

/** A trainer over `model` (loaded by loadModel): marks the chosen parameters trainable; trains where the model runs. */
/** While a native accumulate runs, an abort of `signal` cancels it at its next layer (E_ABORTED). Returns the unhook. */
function abortInto(engine: NativeTrainer, signal: AbortSignal | undefined): () => void {
  if (!signal) return () => {};
  const onAbort = () => engine.cancel();
  signal.addEventListener('abort', onAbort, { once: true });
  return () => signal.removeEventListener('abort', onAbort);
}

export async function createTrainer(model: Model, options: TrainerOptions = {}): Promise<Trainer> {
  const parts = modelInternals(model).trainingParts();
  const stage = options.stage ?? 'instruct';
  if (!['align', 'instruct', 'finetune', 'lora', 'full'].includes(stage)) {
    throw medllavaError('E_ARGUMENT', `stage must be 'align', 'instruct', 'finetune', 'lora' or 'full', got '${String(stage)}'`);
  }
  const learningRate = positiveNumber(options.learningRate, 'learningRate', 2e-5);
  const betas = options.betas ?? [0.9, 0.999];
  if (!Array.isArray(betas) || betas.length !== 2 || betas.some((b) => typeof b !== 'number' || !(b >= 0 && b < 1))) {
    throw medllavaError('E_ARGUMENT', 'betas must be two numbers in [0, 1)');
  }
  const accum = options.gradientAccumulation ?? 1;
  if (!Number.isInteger(accum) || accum < 1) throw medllavaError('E_ARGUMENT', `gradientAccumulation must be an integer ≥ 1, got ${accum}`);
  const maxGradNorm = options.maxGradNorm === undefined ? 1.0 : options.maxGradNorm;
  if (maxGradNorm !== null) positiveNumber(maxGradNorm, 'maxGradNorm', 1);
  const schedule = options.schedule ?? { kind: 'constant' };
  if (!['cosine', 'linear', 'constant'].includes(schedule.kind)) throw medllavaError('E_ARGUMENT', `schedule.kind must be 'cosine', 'linear' or 'constant'`);
  if (schedule.kind !== 'constant' && !(Number.isInteger(schedule.totalSteps) && schedule.totalSteps! > 0)) {
    throw medllavaError('E_ARGUMENT', `a ${schedule.kind} schedule needs totalSteps (an integer ≥ 1)`);
  }
  if (options.lora && stage !== 'lora' && !options.trainable) {
    throw medllavaError('E_ARGUMENT', `lora options go with stage 'lora' (the stage is '${stage}')`);
  }
  const hasLora = () => parts.llm.parameters().some((p) => isLora(p.name));
  // every option is checked before anything changes the model
  const dropout = options.lora?.dropout ?? (stage === 'lora' && !options.trainable ? 0.05 : 0);
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) throw medllavaError('E_ARGUMENT', `lora.dropout must be in [0, 1), got ${String(dropout)}`);
  const seed = options.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw medllavaError('E_ARGUMENT', `seed must be an integer ≥ 0, got ${String(seed)}`);
  if (stage === 'lora' && !options.trainable) {
    const lora = options.lora ?? {};
    if (!hasLora()) {
      const r = lora.r ?? 64, alpha = lora.alpha ?? 128;
      if (!Number.isInteger(r) || r < 1) throw medllavaError('E_ARGUMENT', `lora.r must be an integer ≥ 1, got ${String(r)}`);
      if (typeof alpha !== 'number' || !(alpha > 0)) throw medllavaError('E_ARGUMENT', `lora.alpha must be > 0, got ${String(alpha)}`);
      const targets = lora.targets ?? ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
      await parts.llm.addLora({ targets, r, alpha, seed });
    } else if (options.lora?.r !== undefined || options.lora?.alpha !== undefined || options.lora?.targets !== undefined) {
      throw medllavaError('E_ARGUMENT', 'this model has LoRA adapters already: their r, alpha and targets are the checkpoint\'s');
    }
  }
  const all: (NativeParameter & { component: 'llm' | 'vision' })[] = [
    ...parts.llm.parameters().map((p) => ({ ...p, component: 'llm' as const })),
    ...(parts.vision?.parameters() ?? []).map((p) => ({ ...p, component: 'vision' as const })),
  ];
  const globs = options.trainable?.map(globToRegExp);
  const want = all.filter((p) => (globs ? globs.some((g) => g.test(p.name)) : stageTrainable(stage, p)));
  if (want.length === 0) {
    throw medllavaError('E_ARGUMENT', options.trainable ? `no parameter matches ${JSON.stringify(options.trainable)}`
      : `stage '${stage}' finds no parameter to train in this model${stage === 'lora' ? ' (it has no LoRA adapters)' : ''}`);
  }
  const names = (c: 'llm' | 'vision', on: boolean) => all.filter((p) => p.component === c && want.includes(p) === on).map((p) => p.name);
  await parts.llm.setTrainable(names('llm', false), false);
  await parts.llm.setTrainable(names('llm', true), true);
  if (parts.vision) {
    await parts.vision.setTrainable(names('vision', false), false);
    await parts.vision.setTrainable(names('vision', true), true);
  }
  // a model loaded on a CUDA device trains there: step, norm and AdamW on the device (fp32 master weights and state
  // in device memory, bf16 compute by default)
  const engine = new (native().NativeTrainer)(parts.llm, parts.vision, { deviceIndex: parts.deviceIndex, computeType: options.computeType });
  engine.setCheckpoint(options.checkpointActivations ?? false);
  engine.setLoraDropout(dropout, seed);
  if (options.lossChunkRows !== undefined) {
    if (!Number.isInteger(options.lossChunkRows) || options.lossChunkRows < 1)
      throw medllavaError('E_ARGUMENT', `lossChunkRows must be a whole number ≥ 1 (got ${options.lossChunkRows})`);
    engine.setLossRows(options.lossChunkRows);
  }
  const listed = [
    ...parts.llm.parameters().map((p) => ({ ...p, component: 'llm' as const })),
    ...(parts.vision?.parameters() ?? []).map((p) => ({ ...p, component: 'vision' as const })),
  ];
  const params: TrainerParameter[] = listed.map((p) => ({ name: p.name, shape: p.shape, trainable: p.trainable, component: p.component, tiedTo: p.tiedTo }));
  const t = new TrainerImpl(model, engine, params, {
    learningRate, projectorLearningRate: positiveNumber(options.projectorLearningRate, 'projectorLearningRate', learningRate),
    weightDecay: positiveNumber(options.weightDecay, 'weightDecay', 0), betas: [betas[0], betas[1]],
    eps: positiveNumber(options.eps, 'eps', 1e-8), maxGradNorm, gradientAccumulation: accum, schedule,
  }, new Set(listed.filter((p) => p.tiedTo).map((p) => p.name)), dropout);
  return t;
}
