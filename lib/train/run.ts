/**
 * The curriculum trainer: `train(options)` runs one stage (align, instruct, finetune, lora, full) from LLaVA
 * conversation data to a checkpoint in the layout the ecosystem reads (checkpoint.ts), with upstream's recipes
 * as defaults; `curriculum(options)` chains stages, each starting from the previous one's output.
 *
 * A run is reproducible and resumable bit for bit: the sample order of each epoch comes from the seed; every
 * `saveSteps` optimizer steps a checkpoint-<step> directory holds the stage output plus the trainer's exact
 * state (fp32 trainable values, AdamW moments, optimizer step, LoRA dropout stream) and the run's (epoch,
 * cursor, the epoch's sample order); `resume` continues from the newest complete one and its following steps
 * equal an uninterrupted run's. Micro-batches are prepared (tokenized, images decoded and preprocessed by
 * sharp on libuv's threads) while the previous ones train.
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { medllavaError } from '../errors.js';
import { loadModel, modelInternals, type LoadModelOptions, type Model } from '../model/model.js';
import type { NativeTrainSequence } from '../native.js';
import { SeededRandom } from '../sampling.js';
import { getTemplate } from '../tokenizer/templates.js';
import { checkWritable, writeCheckpointDir, writeFileAtomic, writeStageOutput } from './checkpoint.js';
import {
  groupByModalityLength, loadConversations, modalityLength, sampleExample, shuffledOrder, type ConversationSample, type DataProblem,
} from './data.js';
import { distributedWorld } from './distributed.js';
import { writeCurves } from './plot.js';
import { createTrainer, nativeBatch, TrainerImpl, type TrainerOptions, type TrainingStage } from './trainer.js';

export type Recipe = 'llava-med' | 'llava-1.5' | 'llava-rad';

export interface TrainOptions {
  stage: TrainingStage;
  /** an HF LLaVA checkpoint directory, or a previous stage's output */
  model: string;
  /** LLaVA conversation JSON / JSON lines (LLaVA-Med VQA train.json included) */
  data: string;
  /** the folder the records' image paths are relative to (default: the data file's folder) */
  images?: string;
  /** where checkpoints, the final model, metrics.jsonl / .csv and loss.png go */
  output: string;
  /** whose published hyper-parameters are the defaults (default: by the model's family) */
  recipe?: Recipe;
  epochs?: number;
  /** samples per optimizer step, over all ranks (the recipe's global batch) */
  batchSize?: number;
  /** samples per forward/backward (default min(4, batchSize)); gradient accumulation = batchSize / microBatchSize */
  microBatchSize?: number;
  learningRate?: number;
  projectorLearningRate?: number;
  weightDecay?: number;
  warmupRatio?: number;
  schedule?: 'cosine' | 'linear' | 'constant';
  /** global-norm clipping (default 1.0); null turns it off, explicitly */
  maxGradNorm?: number | null;
  /** tokens per sample, images expanded (default: min(2048, the model's context)) */
  maxLength?: number;
  lora?: { r?: number; alpha?: number; dropout?: number; targets?: string[] };
  /** seeds the sample order, new LoRA adapters and dropout (default 42, HF's) */
  seed?: number;
  /** LLaVA's group_by_modality_length (default: on, except for align) */
  groupByModalityLength?: boolean;
  /** a checkpoint every this many optimizer steps (default 500, HF's; 0: only at the end) */
  saveSteps?: number;
  /** checkpoints kept (default 1, as LLaVA's scripts); older ones are removed after a newer one is complete */
  saveTotalLimit?: number;
  /** continue from the newest complete checkpoint-<step> in `output` (a fresh start when there is none) */
  resume?: boolean;
  /** a fresh run into an output folder that holds an earlier run's checkpoints removes them (otherwise E_ARGUMENT:
   * a later resume would pick up the other run's) */
  overwrite?: boolean;
  /** stop after this many optimizer steps in all (default: the epochs') */
  maxSteps?: number;
  /** a sample that cannot be used: 'skip' it (reported by id) or 'stop' the run (E_FORMAT) */
  onProblem?: 'skip' | 'stop';
  /** micro-batches prepared ahead of the one training (default 2) */
  prefetch?: number;
  /** stops cleanly: the step in flight is abandoned, a checkpoint of the last complete step is written */
  signal?: AbortSignal;
  device?: LoadModelOptions['device'];
  cudaDevice?: number;
  threads?: number;
  computeType?: 'bf16' | 'f32';
  checkpointActivations?: boolean;
  /** data parallel: 'auto' (default) trains over MPI when started by mpirun with more than one rank; 'mpi' requires
   * it; 'none' trains alone. Each rank prepares its share of every step; gradients are summed; rank 0 writes. */
  distributed?: 'auto' | 'mpi' | 'none';
  /** how long a rank waits for the others in a collective before failing with E_TIMEOUT (default 10 min) */
  collectiveTimeoutMs?: number;
  /** ZeRO-1 over the MPI ranks (the CPU engine): each rank keeps AdamW's moments of its share of the parameters only,
   * updates those, and broadcasts their new values; checkpoints gather the moments (the same files as without it) */
  zero1?: boolean;
  /** loadModel options for finding the base / tower */
  visionTower?: string;
  baseModel?: string;
}

export interface TrainMetrics {
  step: number;
  totalSteps: number;
  /** fractional epochs done */
  epoch: number;
  loss: number;
  gradNorm: number;
  lr: number;
  /** sequence tokens (images expanded) and samples this step trained on */
  tokens: number;
  samples: number;
  /** the same per second of this step (its wait for the input pipeline included) */
  tokensPerSecond: number;
  samplesPerSecond: number;
  /** seconds left at the mean step time so far */
  eta: number;
  elapsed: number;
}

export type TrainEvent =
  | ({ type: 'step' } & TrainMetrics)
  | { type: 'checkpoint'; step: number; path: string }
  | { type: 'problem'; id: string; index: number; reason: string }
  | { type: 'log'; message: string };

export interface TrainResult {
  /** the stage's model (loadModel reads it) */
  output: string;
  steps: number;
  /** true when the signal stopped the run (a checkpoint of the last complete step was written) */
  stopped: boolean;
  finalLoss: number;
  problems: DataProblem[];
  /** the checkpoint the run resumed from, if any */
  resumedFrom?: string;
  /** this process's rank and the number of ranks (1 without MPI) */
  rank?: number;
  worldSize?: number;
  /** bytes of AdamW moments this rank held (a share of them with zero1) */
  optimizerBytes?: number;
}

interface Recipeish {
  learningRate: number; projectorLearningRate?: number; epochs: number; batchSize: number; warmupRatio: number; weightDecay: number;
}

/** Upstream's published recipes (their scripts and READMEs), per stage. */
export function recipeDefaults(recipe: Recipe, stage: TrainingStage): Recipeish {
  const base = { warmupRatio: 0.03, weightDecay: 0 };
  switch (stage) {
    case 'align':
      return recipe === 'llava-med' ? { ...base, learningRate: 2e-3, epochs: 1, batchSize: 128 } : { ...base, learningRate: 1e-3, epochs: 1, batchSize: 256 };
    case 'lora':
      return recipe === 'llava-1.5' ? { ...base, learningRate: 2e-4, projectorLearningRate: 2e-5, epochs: 1, batchSize: 128 }
        : { ...base, learningRate: 1e-4, epochs: 3, batchSize: 64 };
    default:
      return { ...base, learningRate: 2e-5, epochs: recipe === 'llava-1.5' ? 1 : 3, batchSize: 128 };
  }
}

function recipeFor(model: Model): Recipe {
  const f = model.spec.family;
  return f === 'llava-rad' ? 'llava-rad' : f === 'llava-1.5' ? 'llava-1.5' : 'llava-med';
}

const int = (v: unknown, what: string, min: number): number => {
  if (!Number.isInteger(v) || (v as number) < min) throw medllavaError('E_ARGUMENT', `${what} must be an integer ≥ ${min}, got ${String(v)}`);
  return v as number;
};

/** The run state a checkpoint keeps beside the trainer's (run_state.json). */
interface RunState {
  version: 1;
  stage: TrainingStage;
  model: string;
  data: string;
  step: number;
  totalSteps: number;
  epoch: number;
  /** micro-batches of `epoch` already trained */
  cursor: number;
  /** this epoch's sample order (indices into the loaded samples) */
  order: number[];
  seed: number;
  samples: number;
  /** sample ids, hashed: a resume over other data is refused */
  dataHash: string;
  /** ranks that trained it (a resume needs as many) */
  worldSize: number;
  settings: Record<string, unknown>;
}

function hashIds(samples: ConversationSample[]): string {
  let h = 0x811c9dc5;
  for (const s of samples) for (const c of `${s.id}\u0000${s.image ?? ''}\u0001`) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
  return `${samples.length}:${h.toString(16)}`;
}

/** The newest complete checkpoint-<step> in `dir` (complete: run_state.json is there, written last). */
export function latestCheckpoint(dir: string): string | undefined {
  if (!existsSync(dir)) return undefined;
  const steps = readdirSync(dir).map((f) => /^checkpoint-(\d+)$/.exec(f)).filter((m): m is RegExpExecArray => !!m)
    .filter((m) => existsSync(join(dir, m[0], 'run_state.json'))).map((m) => Number(m[1])).sort((a, b) => b - a);
  return steps.length ? join(dir, `checkpoint-${steps[0]}`) : undefined;
}

/** A run: awaitable (its TrainResult) and async-iterable (its events, as they happen). */
export class TrainingRun implements AsyncIterable<TrainEvent>, PromiseLike<TrainResult> {
  private readonly queue: TrainEvent[] = [];
  private waiting: (() => void) | undefined;
  private finished = false;
  readonly result: Promise<TrainResult>;

  constructor(body: (emit: (e: TrainEvent) => void) => Promise<TrainResult>) {
    this.result = body((e) => {
      this.queue.push(e);
      this.waiting?.();
    }).finally(() => {
      this.finished = true;
      this.waiting?.();
    });
    this.result.catch(() => {});  // the error reaches whoever awaits the run or iterates it
  }

  then<A = TrainResult, B = never>(ok?: ((r: TrainResult) => A | PromiseLike<A>) | null, bad?: ((e: unknown) => B | PromiseLike<B>) | null): Promise<A | B> {
    return this.result.then(ok, bad);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<TrainEvent> {
    for (;;) {
      if (this.queue.length) {
        yield this.queue.shift()!;
        continue;
      }
      if (this.finished) {
        await this.result;  // throws the run's error
        return;
      }
      await new Promise<void>((r) => { this.waiting = r; });
      this.waiting = undefined;
    }
  }
}

/** Trains one stage. Await it for the result, or iterate it for metrics as they come. */
export function train(options: TrainOptions): TrainingRun {
  return new TrainingRun((emit) => runStage(options, emit));
}

interface Prepared {
  batch: { seqs: NativeTrainSequence[]; pixels: Float32Array[] };
  samples: number;
  tokens: number;
}

async function runStage(o: TrainOptions, emit: (e: TrainEvent) => void): Promise<TrainResult> {
  const stages: TrainingStage[] = ['align', 'instruct', 'finetune', 'lora', 'full'];
  if (!o || !stages.includes(o.stage)) throw medllavaError('E_ARGUMENT', `stage must be one of ${stages.join(', ')}`);
  for (const k of ['model', 'data', 'output'] as const) {
    if (typeof o[k] !== 'string' || !o[k]) throw medllavaError('E_ARGUMENT', `${k} must be a path`);
  }
  const output = resolve(o.output);
  const world = distributedWorld(o.distributed ?? 'auto', o.collectiveTimeoutMs ?? 10 * 60_000);
  if (world.rank !== 0) {
    // the other ranks report their own problems and logs; steps and checkpoints come from rank 0
    const inner = emit;
    emit = (e) => { if (e.type === 'problem' || e.type === 'log') inner(e); };
  }
  const earlier = existsSync(output) ? readdirSync(output).filter((f) => /^checkpoint-\d+$/.test(f)) : [];
  if (!o.resume && earlier.length) {
    if (!o.overwrite) {
      throw medllavaError('E_ARGUMENT', `${output} holds checkpoints of an earlier run (${earlier.slice(0, 3).join(', ')}): pass resume to ` +
        'continue it, overwrite to start again there, or choose another output folder');
    }
    await world.barrier();  // every rank has seen them before rank 0 removes them
    if (world.rank === 0) for (const f of earlier) rmSync(join(output, f), { recursive: true, force: true });
  }
  const resumeFrom = o.resume ? latestCheckpoint(output) : undefined;
  const saved: RunState | undefined = resumeFrom ? JSON.parse(readFileSync(join(resumeFrom, 'run_state.json'), 'utf8')) as RunState : undefined;
  if (saved && saved.stage !== o.stage) {
    throw medllavaError('E_ARGUMENT', `${resumeFrom} is a '${saved.stage}' checkpoint; this run's stage is '${o.stage}'`);
  }

  // ranks on one machine train on their own GPUs (NCCL cannot put two ranks on one device): local rank k on device k
  const localRank = Number(process.env['OMPI_COMM_WORLD_LOCAL_RANK'] ?? 0);
  const cudaDevice = o.cudaDevice ?? (world.size > 1 && o.device === 'cuda' ? localRank : undefined);
  const model = await loadModel(o.model, {
    device: o.device ?? 'cpu', cudaDevice, threads: o.threads, visionTower: o.visionTower, baseModel: o.baseModel,
  });
  try {
    checkWritable(model, o.stage);
    const recipe = o.recipe ?? recipeFor(model);
    const d = recipeDefaults(recipe, o.stage);
    const epochs = o.epochs ?? d.epochs;
    if (!(typeof epochs === 'number' && epochs > 0)) throw medllavaError('E_ARGUMENT', `epochs must be > 0, got ${String(epochs)}`);
    const batchSize = int(o.batchSize ?? d.batchSize, 'batchSize', 1);
    const micro = int(o.microBatchSize ?? Math.min(4, batchSize), 'microBatchSize', 1);
    if (batchSize % micro) throw medllavaError('E_ARGUMENT', `batchSize ${batchSize} is not a multiple of microBatchSize ${micro}`);
    if ((batchSize / micro) % world.size) {
      throw medllavaError('E_ARGUMENT', `batchSize ${batchSize} is not a multiple of microBatchSize ${micro} × ${world.size} ranks`);
    }
    const accum = batchSize / micro;
    const seed = int(o.seed ?? 42, 'seed', 0);
    const maxLength = int(o.maxLength ?? Math.min(2048, model.spec.llm.contextLength), 'maxLength', 2);
    const saveSteps = int(o.saveSteps ?? 500, 'saveSteps', 0);
    const saveTotalLimit = int(o.saveTotalLimit ?? 1, 'saveTotalLimit', 1);
    const prefetch = int(o.prefetch ?? 2, 'prefetch', 0);
    const grouped = o.groupByModalityLength ?? o.stage !== 'align';
    const templateName = o.stage === 'align' ? 'plain' : model.spec.template;
    const template = getTemplate(templateName);

    // the data: every unusable record reported by id
    const problems: DataProblem[] = [];
    mkdirSync(output, { recursive: true });
    const problemsFile = join(output, 'problems.jsonl');
    if (!saved && world.rank === 0) rmSync(problemsFile, { force: true });
    await world.barrier();  // cleared before any rank appends to it
    const reported = new Set<string>();
    const report = (p: DataProblem) => {
      if (reported.has(p.id)) return;  // a sample fails the same way in every epoch: reported once
      reported.add(p.id);
      problems.push(p);
      appendFileSync(problemsFile, `${JSON.stringify(p)}\n`);
      emit({ type: 'problem', ...p });
      if (o.onProblem === 'stop') throw medllavaError('E_FORMAT', `sample ${p.id} (record ${p.index}): ${p.reason}`);
    };
    const loaded = loadConversations(o.data, { imageFolder: o.images, onProblem: o.onProblem ?? 'skip' });
    if (!saved && world.rank === 0) loaded.problems.forEach(report);  // every rank loads the file; one reports it
    const samples = loaded.samples;
    if (samples.length === 0) throw medllavaError('E_FORMAT', `${o.data}: no usable sample`);
    const dataHash = hashIds(samples);
    if (saved && (saved.worldSize ?? 1) !== world.size) {
      throw medllavaError('E_ARGUMENT', `${resumeFrom} was trained by ${saved.worldSize ?? 1} rank(s); resume it with as many (this run has ${world.size})`);
    }
    if (saved && (saved.dataHash !== dataHash || saved.seed !== seed)) {
      throw medllavaError('E_ARGUMENT', `${resumeFrom} was trained on other data or another seed (${saved.samples} samples, seed ${saved.seed}); ` +
        'resume with the same data and options, or start a new output folder');
    }
    const microPerEpoch = Math.ceil(samples.length / micro);
    const stepsPerEpoch = Math.ceil(microPerEpoch / accum);
    const totalSteps = o.maxSteps !== undefined ? int(o.maxSteps, 'maxSteps', 1) : Math.ceil(stepsPerEpoch * epochs);
    const lengths = samples.map(modalityLength);
    // an epoch's order is a pure function of the seed and the epoch; the pipeline and the loop ask for it per
    // micro-batch, so the last few are kept
    const orders = new Map<number, number[]>();
    const epochOrder = (epoch: number): number[] => {
      let o = orders.get(epoch);
      if (!o) {
        o = computeOrder(epoch);
        orders.set(epoch, o);
        for (const k of orders.keys()) if (k < epoch - 1) orders.delete(k);
      }
      return o;
    };
    const computeOrder = (epoch: number): number[] => {
      const rng = new SeededRandom((seed + Math.imul(epoch + 1, 0x9e3779b1)) >>> 0);
      // LLaVA's megabatches span world × accumulation micro-batches (the global batch); LLaVA-Rad's the world only
      return grouped ? groupByModalityLength(lengths, micro, recipe === 'llava-rad' ? world.size : accum, rng) : shuffledOrder(samples.length, rng);
    };

    const trainerOptions: TrainerOptions = {
      stage: o.stage, learningRate: o.learningRate ?? d.learningRate, projectorLearningRate: o.projectorLearningRate ?? d.projectorLearningRate,
      weightDecay: o.weightDecay ?? d.weightDecay, maxGradNorm: o.maxGradNorm === undefined ? 1.0 : o.maxGradNorm,
      gradientAccumulation: accum, seed, lora: o.stage === 'lora' ? o.lora : undefined, computeType: o.computeType,
      checkpointActivations: o.checkpointActivations,
      schedule: { kind: o.schedule ?? 'cosine', warmupRatio: o.warmupRatio ?? d.warmupRatio, totalSteps },
    };
    const trainer = await createTrainer(model, trainerOptions) as TrainerImpl;
    try {
      const zero = o.zero1 === true && world.size > 1;
      if (zero) {
        const held = await trainer.shardOptimizer(world.rank, world.size, world.timeoutMs);
        emit({ type: 'log', message: `ZeRO-1: rank ${world.rank} holds ${(held / 2 ** 20).toFixed(1)} MiB of AdamW moments` });
      }
      const settings = { recipe, epochs, batchSize, microBatchSize: micro, maxLength, grouped, template: templateName, ...trainerOptions };
      let step = 0, epoch = 0, cursor = 0;
      let order = epochOrder(0);
      if (saved && resumeFrom) {
        await trainer.load(join(resumeFrom, 'trainer'));
        step = saved.step, epoch = saved.epoch, cursor = saved.cursor;
        order = epochOrder(epoch);
        if (order.length !== saved.order.length || order.some((v, i) => v !== saved.order[i])) {
          throw medllavaError('E_ARGUMENT', `${resumeFrom}: this run would order the data differently than the checkpoint did`);
        }
        emit({ type: 'log', message: `resumed from ${resumeFrom} at step ${step}` });
      }
      emit({ type: 'log', message: `${o.stage} (${recipe} recipe): ${samples.length} samples, ${totalSteps} steps of ${batchSize} ` +
        `(${accum} × ${micro}), lr ${trainerOptions.learningRate}, maxGradNorm ${trainerOptions.maxGradNorm ?? 'off'}` });

      const vrows = modelInternals(model).trainingParts().vision?.tokens ?? 0;
      const tokenizer = model.tokenizer;
      // micro-batch k of epoch e: its examples (bad samples reported and left out) and images, prepared ahead
      const prepare = async (ord: number[], k: number): Promise<Prepared> => {
        const ids = ord.slice(k * micro, (k + 1) * micro);
        const examples = [], exampleIds: number[] = [];
        for (const i of ids) {
          const s = samples[i]!;
          const ex = sampleExample(tokenizer, template, s, { maxLength, imageRows: vrows });
          if ('problem' in ex) {
            report({ id: s.id, index: i, reason: ex.problem });
            continue;
          }
          examples.push({ ...ex, images: s.imagePath ? [s.imagePath] : [] });
          exampleIds.push(i);
        }
        // each example on its own, so an image that cannot be read is reported by its sample; then merged
        const batch: Prepared['batch'] = { seqs: [], pixels: [] };
        let kept = 0;
        for (const [j, ex] of examples.entries()) {
          let one: Prepared['batch'];
          try {
            // with several ranks a stop is agreed at a step boundary: preparing is never cut short there
            one = await nativeBatch(model, [ex], world.size > 1 ? undefined : o.signal);
          } catch (err) {
            if ((err as { code?: string }).code === 'E_ABORTED') throw err;
            const i = exampleIds[j]!;
            report({ id: samples[i]!.id, index: i, reason: (err as Error).message });
            continue;
          }
          const base = batch.pixels.length;
          for (const q of one.seqs) batch.seqs.push({ ...q, images: q.images?.map((im) => ({ at: im.at, index: im.index + base })) });
          batch.pixels.push(...one.pixels);
          kept++;
        }
        return { batch, samples: kept, tokens: batch.seqs.reduce((n, q) => n + q.tokens.length, 0) };
      };

      const curves: TrainMetrics[] = [];
      const metricsFile = join(output, 'metrics.jsonl');
      if (world.rank !== 0) {
        // rank 0 keeps the files
      } else if (saved) {
        // the metrics of steps after the checkpoint are redone: keep only those up to it
        const old = existsSync(metricsFile) ? readFileSync(metricsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as TrainMetrics) : [];
        curves.push(...old.filter((m) => m.step <= step));
        writeFileAtomic(metricsFile, curves.map((m) => `${JSON.stringify(m)}\n`).join(''));
      } else {
        rmSync(metricsFile, { force: true });
      }

      const lead = world.rank === 0;  // rank 0 writes checkpoints, curves and the final model
      const save = async () => {
        const path = join(output, `checkpoint-${step}`);
        // ZeRO-1: the moments other ranks hold come to rank 0 for the save (every rank takes part)
        const gathered = zero ? await trainer.gatherMoments((b, r) => world.bcast(b, r)) : undefined;
        if (lead) {
          const state: RunState = {
            version: 1, stage: o.stage, model: resolve(o.model), data: resolve(o.data), step, totalSteps, epoch, cursor, order, seed,
            samples: samples.length, dataHash, worldSize: world.size, settings,
          };
          await writeCheckpointDir(path, async (tmp) => {
            await writeStageOutput(model, o.stage, tmp, { step, loraAlpha: o.lora?.alpha, loraDropout: o.lora?.dropout });
            await trainer.save(join(tmp, 'trainer'), gathered);
            writeFileAtomic(join(tmp, 'run_state.json'), `${JSON.stringify(state)}\n`);  // last: marks it complete
          });
          // only now, with the new one complete, the oldest beyond the limit go
          const all = readdirSync(output).map((f) => /^checkpoint-(\d+)$/.exec(f)).filter((m): m is RegExpExecArray => !!m)
            .map((m) => Number(m[1])).sort((a, b) => b - a);
          for (const s of all.slice(saveTotalLimit)) if (s !== step) rmSync(join(output, `checkpoint-${s}`), { recursive: true, force: true });
          await writeCurves(output, curves);
        }
        await world.barrier();  // every rank goes on (or returns) with the checkpoint complete
        emit({ type: 'checkpoint', step, path });
      };

      // The steps from (epoch, cursor): each takes `accum` micro-batches, an epoch's last one its remainder. With
      // several ranks, micro-batch `start + j` of a step is rank j mod size's: every rank accumulates its share with
      // the global 1/accum scale and the gradients are summed, which is the one-process step over the same samples.
      const stepsFrom = function* (e0: number, c0: number): Generator<{ e: number; start: number; count: number }> {
        for (let e = e0, c = c0; ;) {
          const count = Math.min(accum, microPerEpoch - c);
          yield { e, start: c, count };
          c += count;
          if (c >= microPerEpoch) e++, c = 0;
        }
      };
      const mine = (st: { start: number; count: number }) =>
        Array.from({ length: st.count }, (_, j) => st.start + j).filter((k) => (k - st.start) % world.size === world.rank);
      // the pipeline: this rank's micro-batches, `prefetch` of them being prepared ahead, none past the run's end
      const pending: { e: number; k: number; p: Promise<Prepared> }[] = [];
      const plan = stepsFrom(epoch, cursor);
      const queued: { e: number; k: number }[] = [];
      const planned: { e: number; start: number; count: number }[] = [];
      const firstStep = step;
      let plannedTotal = 0;  // steps planned since this run started (its last one is totalSteps)
      const planStep = () => {
        const st = plan.next().value as { e: number; start: number; count: number };
        planned.push(st);
        plannedTotal++;
        for (const k of mine(st)) queued.push({ e: st.e, k });
      };
      const fill = () => {
        while (pending.length < prefetch + 1) {
          if (queued.length === 0) {
            // nothing is prepared past the run's last step (a step of unusable samples makes the loop plan one more)
            if (firstStep + plannedTotal >= totalSteps) return;
            planStep();
            continue;
          }
          const { e, k } = queued.shift()!;
          const p = prepare(epochOrder(e), k);
          p.catch(() => {});
          pending.push({ e, k, p });
        }
      };

      const started = Date.now();
      let boundary = { epoch, cursor };  // where the data stood after the last optimizer step
      let stepTimes = 0, timedSteps = 0, lastLoss = NaN, stopped = false;
      const distributed = world.size > 1;
      try {
        while (step < totalSteps) {
          if (!distributed && o.signal?.aborted) { stopped = true; break; }
          const t0 = Date.now();
          while (planned.length === 0) planStep();
          const st = planned.shift()!;
          let lossSum = 0, ran = 0, samplesN = 0, tokensN = 0;
          for (const k of mine(st)) {
            fill();
            const next = pending.shift()!;
            if (next.e !== st.e || next.k !== k) throw medllavaError('E_INTERNAL', 'the input pipeline is out of order');
            const prep = await next.p;
            if (prep.samples > 0) {
              // the dropout masks follow the micro-batch's place in the run, whichever rank trains it
              const r = await trainer.accumulateNative(prep.batch, distributed ? undefined : o.signal, seed + st.e * microPerEpoch + k);
              lossSum += r.loss, ran++, samplesN += prep.samples, tokensN += prep.tokens;
            }
          }
          epoch = st.e, cursor = st.start + st.count;
          if (cursor >= microPerEpoch) epoch++, cursor = 0;
          order = epochOrder(epoch);
          let stopNow = false;
          if (distributed) {
            // the step's numbers over every rank, and whether any rank was asked to stop (all stop after this step)
            const stats = Float64Array.of(lossSum, ran, samplesN, tokensN, o.signal?.aborted ? 1 : 0);
            await world.sum(stats);
            [lossSum, ran, samplesN, tokensN] = [stats[0]!, stats[1]!, stats[2]!, stats[3]!];
            stopNow = stats[4]! > 0;
            if (ran > 0) await trainer.allreduceGrads(world.timeoutMs);
          }
          if (ran === 0) {  // every sample of these micro-batches was unusable (reported): no step
            boundary = { epoch, cursor };
            if (stopNow) { stopped = true; break; }
            continue;
          }
          const u = await trainer.applyUpdate({ allowEmpty: distributed });
          step = u.step;
          boundary = { epoch, cursor };
          const dt = (Date.now() - t0) / 1000;
          stepTimes += dt, timedSteps++;
          lastLoss = lossSum / ran;
          const m: TrainMetrics = {
            step, totalSteps, epoch: epoch + cursor / microPerEpoch, loss: lastLoss, gradNorm: u.gradNorm, lr: u.lr,
            tokens: tokensN, samples: samplesN, tokensPerSecond: tokensN / Math.max(dt, 1e-6), samplesPerSecond: samplesN / Math.max(dt, 1e-6),
            eta: (totalSteps - step) * (stepTimes / timedSteps), elapsed: (Date.now() - started) / 1000,
          };
          curves.push(m);
          if (lead) appendFileSync(metricsFile, `${JSON.stringify(m)}\n`);
          emit({ type: 'step', ...m });
          if (stopNow) { stopped = true; break; }
          if (saveSteps > 0 && step % saveSteps === 0 && step < totalSteps) await save();
        }
      } catch (e) {
        if ((e as { code?: string }).code !== 'E_ABORTED' || distributed) throw e;
        stopped = true;
        // the step in flight is abandoned: its micro-batches are redone on resume, from the last step's boundary
        await trainer.discardPending();
        epoch = boundary.epoch, cursor = boundary.cursor, order = epochOrder(epoch);
      } finally {
        for (const q of pending) await q.p.catch(() => {});
      }
      if (stopped && step < totalSteps) {
        await save();
        emit({ type: 'log', message: `stopped at step ${step}; resume with the same options and resume: true` });
        return { output, steps: step, stopped: true, finalLoss: lastLoss, problems, resumedFrom: resumeFrom, rank: world.rank, worldSize: world.size,
          optimizerBytes: trainer.optimizerBytes() };
      }
      await save();
      // the stage's model in the output folder itself (what the next stage or loadModel takes)
      if (lead) {
        await writeStageOutput(model, o.stage, output, { step, loraAlpha: o.lora?.alpha, loraDropout: o.lora?.dropout });
        await writeCurves(output, curves);
      }
      await world.barrier();
      return { output, steps: step, stopped: false, finalLoss: lastLoss, problems, resumedFrom: resumeFrom, rank: world.rank, worldSize: world.size,
        optimizerBytes: trainer.optimizerBytes() };
    } finally {
      await trainer.dispose();
    }
  } finally {
    await model.dispose();
  }
}

export interface CurriculumStage extends Omit<TrainOptions, 'model' | 'output' | 'signal' | 'resume'> {}

export interface CurriculumOptions {
  /** the starting checkpoint (the first stage's model) */
  model: string;
  stages: CurriculumStage[];
  /** each stage writes to <output>/<n>-<stage> */
  output: string;
  resume?: boolean;
  signal?: AbortSignal;
}

/** Runs stages in sequence, each from the previous stage's output; events carry no stage, a 'log' marks each start. */
export function curriculum(options: CurriculumOptions): TrainingRun {
  return new TrainingRun(async (emit) => {
    if (!Array.isArray(options.stages) || options.stages.length === 0) throw medllavaError('E_ARGUMENT', 'a curriculum needs stages');
    let from = options.model;
    let last: TrainResult | undefined;
    for (const [i, s] of options.stages.entries()) {
      const out = join(options.output, `${i + 1}-${s.stage}`);
      // a stage that finished before (its model written, no checkpoint newer) is not run again on resume
      const done = options.resume && existsSync(join(out, 'config.json')) && existsSync(join(out, 'run_state.done.json'));
      emit({ type: 'log', message: `stage ${i + 1}/${options.stages.length}: ${s.stage} from ${from}${done ? ' (done before)' : ''}` });
      if (!done) {
        const run = train({ ...s, model: from, output: out, resume: options.resume, signal: options.signal });
        for await (const e of run) emit(e);
        last = await run;
        if (last.stopped) return last;
        writeFileSync(join(out, 'run_state.done.json'), `${JSON.stringify({ steps: last.steps, finalLoss: last.finalLoss })}\n`);
      }
      from = out;
    }
    return last ?? { output: from, steps: 0, stopped: false, finalLoss: NaN, problems: [] };
  });
}
