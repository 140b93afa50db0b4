/**
 * Loads the addon and declares its exact types. Internal: the public surface is lib/index.ts.
 *
 * CUDA safety (node-llama-cpp's testBindingBinary habit): before this process loads the binary,
 * a child process loads it and initialises CUDA. Only if that child exits cleanly may this process
 * touch CUDA; if it crashes (a driver mismatch can segfault inside the CUDA runtime) the binary is
 * loaded with CUDA disabled and getBackendInfo() reports why.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { medllavaError } from './errors.js';

export interface NativeCudaDevice {
  name: string;
  memoryBytes: number;
  computeCapability: string;
}

export interface NativeBackendInfo {
  cpu: { threads: number; features: string[]; dispatch: 'avx512' | 'avx2' | 'scalar' };
  cuda: { compiled: boolean; available: boolean; reason?: string; devices: NativeCudaDevice[] };
}

export type NativeActivation = 'none' | 'gelu' | 'quick_gelu';
export type NativeDType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0' | 'q4_k' | 'q6_k';

/** A (outFeatures × inFeatures) weight, stored as PyTorch's Linear stores it, plus an optional bias. */
export interface NativeLinear {
  /** out[rows × outFeatures] = activation(input[rows × inFeatures] · weightᵀ + bias) */
  forward(input: Float32Array, rows: number,
    options: { activation?: NativeActivation; device?: 'cpu' | 'cuda'; deviceIndex?: number }): Promise<Float32Array>;
  /** Releases the weight references; later calls reject with E_ARGUMENT. Idempotent. */
  dispose(): void;
  readonly disposed: boolean;
}

export interface SafetensorsTensorInfo {
  name: string;
  /** 'F32', 'F16', 'BF16', 'I64', … */
  dtype: string;
  shape: number[];
  /** file offset of the tensor's first byte */
  offset: number;
  byteLength: number;
}

export interface SafetensorsHeader {
  tensors: SafetensorsTensorInfo[];
  metadata: Record<string, string>;
  dataStart: number;
}

export type GgufValueType = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'bool' | 'string' | 'array' | 'u64'
  | 'i64' | 'f64';

/** A GGUF metadata entry. Integers beyond 2^53 are BigInts; numeric arrays are TypedArrays. */
export interface GgufKeyValue {
  key: string;
  type: GgufValueType;
  /** for arrays */
  elementType?: GgufValueType;
  value: unknown;
}

export interface GgufTensorInfo {
  name: string;
  /** ne[0] (the fastest-varying dimension) first, as GGUF stores them */
  dims: number[];
  /** 'F32', 'F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_K', 'Q6_K', … */
  type: string;
  typeId: number;
  /** offset within the data section */
  offset: number;
  byteLength: number;
}

export interface GgufHeader {
  version: number;
  alignment: number;
  dataStart: number;
  metadata: GgufKeyValue[];
  tensors: GgufTensorInfo[];
}

export interface NativeLlmConfig {
  hidden: number; layers: number; heads: number; kvHeads: number; ffn: number; vocab: number; contextLength: number;
  ropeTheta: number; rmsEps: number;
  /** 'half': HF weights (rotate-half RoPE); 'adjacent': GGUF weights, whose q/k rows llama.cpp permuted */
  ropeMode: 'half' | 'adjacent';
  /** where forward runs: 'cpu' (default) or 'cuda' (weights uploaded to device `deviceIndex` at load) */
  device?: 'cpu' | 'cuda';
  /** the CUDA device's ordinal (default 0) */
  deviceIndex?: number;
}
/** [file path, tensor name] */
export type NativeTensorRef = [string, string];
export interface NativeLlmTensors {
  embed: NativeTensorRef; norm: NativeTensorRef; lmHead: NativeTensorRef;
  layers: { attnNorm: NativeTensorRef; wq: NativeTensorRef; wk: NativeTensorRef; wv: NativeTensorRef; wo: NativeTensorRef;
    ffnNorm: NativeTensorRef; wGate: NativeTensorRef; wUp: NativeTensorRef; wDown: NativeTensorRef }[];
  /** LoRA kept separate: out = W x + scale · B (A x), keyed by the base weight's tensor name */
  lora?: { scale: number; pairs: Record<string, { a: NativeTensorRef; b: NativeTensorRef }> };
}
/** An encoded image's projected rows, kept native: eval splices them by reference. */
export interface NativeImage {
  readonly rows: number;
  /** the LLM's width */
  readonly width: number;
  /** a copy of the rows (rows × width) */
  toArray(): Float32Array;
  /** lets go of the rows (an eval in flight keeps them until it ends) */
  dispose(): void;
}
/** Rows [row, row + rows) of `image` at the eval's positions [at, at + rows) (whose tokens are < 0). */
export interface NativeImageRows {
  at: number; image: NativeImage; row?: number; rows?: number;
}
export interface NativeLlmContext {
  /**
   * Runs tokens after the cached ones; logits of the last token (or of every token) × vocab.
   * Negative tokens take their row of `embeddings` (tokens × hidden). The first eval allocates the
   * KV cache (on the worker, not the JS thread). The arrays are copied before the worker runs.
   */
  eval(tokens: Int32Array, options?: { allLogits?: boolean; images?: NativeImageRows[]; embeddings?: Float32Array }): Promise<Float32Array>;
  /**
   * eval, then the next token chosen natively from the last logits (the vocabulary never crosses to
   * JS): `history` is what the repetition penalty sees, `rngState` the sampler's mulberry32 state,
   * returned advanced.
   */
  evalSample(tokens: Int32Array, options: { images?: NativeImageRows[]; embeddings?: Float32Array; sampling?: NativeSampling; history?: Int32Array;
    rngState?: number }): Promise<NativeSampleResult>;
  reset(): void;
  /** Forgets cached positions from n on. */
  truncate(n: number): void;
  readonly nPast: number;
  /** positions the KV cache holds */
  readonly capacity: number;
  dispose(): void;
}
export interface NativeSampling {
  temperature?: number; topK?: number; topP?: number; minP?: number; repetitionPenalty?: number;
}
export interface NativeSampleResult {
  token: number;
  /** of `token` under the raw logits' softmax (untempered, unfiltered) */
  logprob: number;
  rngState: number;
}
/** One entry of a model's parameter table. */
export interface NativeParameter {
  /** the HF / PEFT name (model.layers.0.self_attn.q_proj.weight, model.mm_projector.0.bias, …) */
  name: string;
  /** PyTorch order */
  shape: number[];
  /** the type it is stored in, in its file */
  dtype: 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0' | 'q4_k' | 'q6_k';
  /** trainable parameters live in one flat fp32 buffer (values, gradients, AdamW m and v) */
  trainable: boolean;
  /** the parameter whose storage this one shares (a tied lm_head: 'model.embed_tokens.weight') */
  tiedTo: string | null;
}
/** A loaded model's parameter table: listed, marked trainable, read and written. */
export interface NativeParameterTable {
  parameters(): NativeParameter[];
  /** Marks the named parameters trainable (default) or frozen; resolves to the trainable float count. */
  setTrainable(names: string[], on?: boolean): Promise<number>;
  /** The current values as f32 (decoded from the stored type when frozen). */
  readParameter(name: string): Promise<Float32Array>;
  /** Writes elements [offset, offset + values.length) of a trainable parameter; the next forward sees them. */
  writeParameter(name: string, values: Float32Array, offset?: number): Promise<void>;
}
export interface NativeLlm extends NativeParameterTable {
  /** New PEFT LoRA pairs on the target linears of every layer (A uniform ±1/√in from `seed`, B = 0; scale alpha / r);
   * resolves to the pairs added. E_ARGUMENT when the model has adapters already. */
  addLora(o: { targets: string[]; r: number; alpha: number; seed?: number }): Promise<number>;
  /** A KV cache of `capacity` positions (default, or more than the context: the model's whole context). */
  createContext(options?: { capacity?: number }): NativeLlmContext;
  dispose(): void;
}

export interface NativeVisionConfig {
  imageSize: number; patchSize: number; hidden: number; layers: number; heads: number; ffn: number; layerNormEps: number;
  activation: 'quick_gelu' | 'gelu'; selectLayer: number; selectFeature: 'patch' | 'cls_patch';
  projector: 'linear' | 'mlp2x_gelu'; outDim: number;
  /** where encode runs: 'cpu' (default) or 'cuda' (weights uploaded to device `deviceIndex` at load) */
  device?: 'cpu' | 'cuda';
  /** the CUDA device's ordinal (default 0) */
  deviceIndex?: number;
}
/** Either fused qkvW/qkvB (timm: rows q | k | v) or qW..vB; ls1/ls2: LayerScale γ (timm), absent in CLIP. */
type VisionLayerRefs = Record<'ln1W' | 'ln1B' | 'oW' | 'oB' | 'ln2W' | 'ln2B' | 'fcAW' | 'fcAB' | 'fcBW' | 'fcBB', NativeTensorRef>
  & Partial<Record<'qW' | 'qB' | 'kW' | 'kB' | 'vW' | 'vB' | 'qkvW' | 'qkvB' | 'ls1' | 'ls2', NativeTensorRef>>;
export interface NativeVisionTensors {
  patchEmbed: NativeTensorRef; classEmbed: NativeTensorRef; posEmbed: NativeTensorRef;
  /** timm's patch conv has a bias, CLIP's has none */
  patchBias?: NativeTensorRef;
  /** CLIP's pre_layrnorm (timm: norm_pre); absent → no pre-norm */
  preLnW?: NativeTensorRef; preLnB?: NativeTensorRef;
  proj0W: NativeTensorRef; proj0B: NativeTensorRef; proj2W?: NativeTensorRef; proj2B?: NativeTensorRef;
  /** fcA / fcB: CLIP's fc1 / fc2 (llama.cpp's legacy mmproj names them the other way round; shapes decide) */
  layers: VisionLayerRefs[];
}
export interface NativeVision extends NativeParameterTable {
  /** normalised pixels (3, S, S) → projected image tokens (tokens × LLM width) */
  encode(pixels: Float32Array): Promise<Float32Array>;
  /** the same, the rows kept native (what eval takes by reference) */
  encodeImage(pixels: Float32Array): Promise<NativeImage>;
  readonly tokens: number;
  dispose(): void;
}

/** One sequence of a native training batch: image rows expanded (tokens < 0), labels aligned (unshifted). */
export interface NativeTrainSequence {
  tokens: Int32Array; labels: Int32Array;
  /** each image's first row and its index in the batch's pixels */
  images?: { at: number; index: number }[];
  weight?: number;
}
/** The training engine over a loaded LLM (and vision tower): native/train/trainer.h. One call at a time. */
export interface NativeTrainer {
  /** forward + backward; gradients accumulate, each target's scaled by gradScale / tokens */
  accumulate(batch: { seqs: NativeTrainSequence[]; pixels?: Float32Array[] }, gradScale: number): Promise<{ loss: number; tokens: number }>;
  zeroGrads(): Promise<void>;
  gradNorm(): Promise<number>;
  /** AdamW over the named trainable parameters (lr · lrFactor; gradients × clip); zeroes the gradients */
  update(o: { groups: { vision: boolean; name: string; lr: number; weightDecay: number }[]; step: number; lrFactor: number; clip: number;
    beta1: number; beta2: number; eps: number }): Promise<void>;
  /** a trainable parameter's gradient or AdamW moment (null: frozen) */
  state(vision: boolean, name: string, which: 'grad' | 'm' | 'v'): Promise<Float32Array | null>;
  /** a resume's restore of a trainable parameter's master value or AdamW moment (a device engine re-uploads) */
  setState(vision: boolean, name: string, which: 'value' | 'm' | 'v', values: Float32Array): Promise<void>;
  /** the step seed the next accumulate's LoRA dropout uses (setLoraDropout(p, it) continues the stream) */
  dropoutStep(): number;
  /** data parallel: the accumulated gradients summed over every MPI rank, in place (MPI for the CPU engine, NCCL on a device) */
  allreduceGrads(timeoutMs?: number): Promise<void>;
  /** ZeRO-1: AdamW moments are kept for these parameters only (the CPU engine) */
  shardOptimizer(owned: { vision: boolean; name: string }[]): Promise<void>;
  /** each parameter's values from its owner rank to every rank (MPI) */
  broadcastParams(list: { vision: boolean; name: string; root: number }[], timeoutMs?: number): Promise<void>;
  /** bytes of AdamW moments held by this engine's tables */
  optimizerBytes(): number;
  /** recompute activations in backward (activation checkpointing) */
  setCheckpoint(on: boolean): void;
  /** LoRA dropout p on the adapters' input; accumulate call k (from now) uses step seed `seed + k` */
  setLoraDropout(p: number, seed: number): void;
  setLossRows(rows: number): void;
  /** a running accumulate stops at its next layer with E_ABORTED (its gradients partial: zero them) */
  cancel(): void;
  dispose(): void;
}

export interface NativeMpiInfo { compiled: boolean; initialized: boolean; rank: number; size: number; library: string; reason?: string }
export interface NativeMpi {
  info(): NativeMpiInfo;
  /** opens libmpi (RTLD_GLOBAL) and MPI_Init_thread once; E_UNSUPPORTED with the reason without MPI */
  init(): NativeMpiInfo;
  /** in place over every rank; E_TIMEOUT when the others do not join within timeoutMs (default 10 min) */
  allreduce(values: Float32Array | Float64Array, op: 'sum' | 'max', timeoutMs?: number): Promise<void>;
  bcast(bytes: Uint8Array, root: number, timeoutMs?: number): Promise<void>;
  barrier(timeoutMs?: number): Promise<void>;
  finalize(): void;
}

export interface NativeOpInfo {
  name: string; method: string; stem: string;
  /** native/cpu/<stem>.cc and native/cuda/<stem>.cuh */
  cpu: string; cuda: string;
}

export interface NativeAddon {
  getBackendInfo(): NativeBackendInfo;
  cudaCompiled(): boolean;
  cudaDisable(reason: string): void;
  /** Forces a kernel family (tests): 'avx512-novnni' = AVX-512 without the VNNI int8 path (a CPU without VNNI). */
  setCpuDispatch(mode: 'auto' | 'avx512-novnni' | 'avx2' | 'scalar'): void;
  setThreads(threads: number): void;
  /** GFLOP/s of independent fp32 FMA chains on `threads` threads for about `ms` ms. */
  measureFmaPeak(threads: number, ms: number): Promise<number>;
  /** GPU microbenchmarks of every CUDA kernel at the real shapes, with the device's measured peaks (a GPU only). */
  cudaBenchKernels(device?: number): Promise<{ peaks: { bandwidthGBs: number; fp32TFlops: number; tensorTFlops: number };
    kernels: { kernel: string; shape: string; ms: number; bytes: number; flops: number }[] }>;
  /** GB/s read streaming through `bytes` of memory on `threads` threads (best of 3). */
  measureReadBandwidth(threads: number, bytes: number): Promise<number>;
  NativeLinear: new (weight: Float32Array | Uint16Array | Uint8Array, dtype: NativeDType, outFeatures: number,
    inFeatures: number, bias: Float32Array | null) => NativeLinear;

  /** Validates the whole file layout (E_FORMAT with the reason otherwise). */
  readSafetensorsHeader(path: string): Promise<SafetensorsHeader>;
  readSafetensorsTensor(path: string, name: string): Promise<Uint8Array>;
  /** Atomic: temp file, fsync, rename. */
  writeSafetensors(path: string, tensors: { name: string; dtype: string; shape: number[]; data: ArrayBufferView }[],
    metadata: Record<string, string>): Promise<void>;
  readGguf(path: string): Promise<GgufHeader>;
  /** Raw bytes, or with `dequantize` the values as f32. */
  readGgufTensor(path: string, name: string, dequantize: boolean): Promise<Uint8Array | Float32Array>;
  /** GGUF v3, atomic. A Float32Array `data` is quantized to `type` (F32 F16 BF16 Q8_0 Q4_0); a Uint8Array is taken as is. */
  writeGguf(path: string, metadata: GgufKeyValue[],
    tensors: { name: string; dims: number[]; type: string; data: Float32Array | Uint8Array }[], alignment: number): Promise<void>;
  /** A PyTorch zip checkpoint (.bin / .pt) through the restricted unpickler: its flattened state dict. */
  readTorchCheckpoint(path: string): Promise<{ tensors: SafetensorsTensorInfo[] }>;
  readTorchTensor(path: string, name: string): Promise<Uint8Array>;
  ggmlQuantize(type: string, values: Float32Array): Uint8Array;
  NativeLlm: { load(config: NativeLlmConfig, tensors: NativeLlmTensors): Promise<NativeLlm> };
  NativeVision: { load(config: NativeVisionConfig, tensors: NativeVisionTensors): Promise<NativeVision> };
  /** on the CPU, or on the CUDA device `deviceIndex` when the LLM was loaded there (computeType 'bf16' by default
   * there: mixed precision; the CPU only has 'f32') */
  NativeTrainer: new (llm: NativeLlm, vision?: NativeVision, options?: { deviceIndex?: number; computeType?: 'bf16' | 'f32' }) => NativeTrainer;
  /** MPI collectives for data-parallel training (native/dist/mpi.h) */
  mpi: NativeMpi;
  ggmlDequantize(type: string, data: Uint8Array, n: number): Float32Array;
  /** Internal (the op test harness): one op of native/ops/op_list.h on the CPU, its arguments by name
   * (native/napi/op_harness.h); outputs start as NaN. */
  cpuOp(name: string, args: Record<string, unknown>): Float32Array;
  /** The same op on a CUDA device (default 0), buffers copied there and back (E_CUDA without a device). */
  cudaOp(name: string, args: Record<string, unknown>, device?: number): Float32Array;
  /** The op table: each op's harness name, its Ops method, its stem and its two source files. */
  opList(): NativeOpInfo[];
  /** native/cpu/sample.cc on one row of logits (what evalSample runs after its forward) */
  sampleLogits(logits: Float32Array, options: NativeSampling, history: Int32Array, rngState: number): NativeSampleResult;
}

/** The package root: the nearest directory above this file whose package.json is medllava's. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'medllava') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('medllava: cannot find the package root');
    dir = up;
  }
}

const require = createRequire(import.meta.url);

// The child loads the binary and initialises CUDA; exit 0 means it is safe in this process too
// (nothing is read from its output: the exit status decides).
// MEDLLAVA_PROBE_SIMULATE_CRASH lets the tests check the crash path without a broken driver.
const PROBE = `
const m = require(process.env.MEDLLAVA_PROBE_BINARY);
if (process.env.MEDLLAVA_PROBE_SIMULATE_CRASH === '1') process.kill(process.pid, 'SIGSEGV');
m.getBackendInfo();
`;

let addon: NativeAddon | undefined;
let binaryPath: string | undefined;
/** undefined: not probed yet; null: probed, CUDA safe to touch; string: why CUDA was disabled */
let probeResult: string | null | undefined;
let probeRun: Promise<void> | undefined;

function describeChildFailure(r: { error?: Error; signal?: NodeJS.Signals | null; status: number | null; stderr: string }): string {
  if (r.error) return `the CUDA probe process could not run (${r.error.message})`;
  if (r.signal) return `the CUDA probe process was killed by ${r.signal} while initialising CUDA`;
  const err = r.stderr.trim().split('\n').slice(-3).join(' | ');
  return `the CUDA probe process exited with status ${r.status} while initialising CUDA${err ? `: ${err}` : ''}`;
}

function settleProbe(reason: string | null): void {
  if (probeResult !== undefined) return; // the first probe to finish decides
  probeResult = reason;
  if (reason) native().cudaDisable(`CUDA disabled: ${reason}`);
}

/**
 * The addon, loaded once per process. Loading it does not touch CUDA: only getBackendInfo and
 * 'cuda' loads / forwards do, and those wait for the CUDA probe first (cudaProbed / cudaProbedSync).
 */
export function native(): NativeAddon {
  if (addon) return addon;
  const nodeGypBuild = require('node-gyp-build') as { resolve(dir: string): string };
  try {
    // MEDLLAVA_ADDON_PATH: another build of the addon (the sanitizer build the tests run under)
    binaryPath = process.env.MEDLLAVA_ADDON_PATH || nodeGypBuild.resolve(packageRoot());
  } catch {
    throw medllavaError('E_UNSUPPORTED', `medllava has no prebuilt binary for ${process.platform}-${process.arch} and none was ` +
      'built here: run `npx medllava build` (needs cmake ≥ 3.19 and a C++17 compiler; nvcc adds the CUDA backend)');
  }
  addon = require(binaryPath) as NativeAddon;
  if (process.env.MEDLLAVA_CUDA === 'off') probeResult = null; // the addon disabled CUDA itself; nothing to probe
  return addon;
}

const probeEnv = () => ({ ...process.env, MEDLLAVA_PROBE_BINARY: binaryPath! });

/**
 * Initialises CUDA once in a child process before this one touches it, so a broken driver that
 * crashes on init takes down the child, not the user's process (CUDA is then disabled with the
 * reason). Asynchronous: the event loop keeps running while the child starts (loadModel awaits it).
 */
export function cudaProbed(): Promise<void> {
  native();
  if (probeResult !== undefined) return Promise.resolve();
  probeRun ??= new Promise<void>((resolve) => {
    const child = spawn(process.execPath, ['-e', PROBE], { env: probeEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr = (stderr + d).slice(-4096); });
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, 60_000);
    child.on('error', (error) => { clearTimeout(timer); settleProbe(describeChildFailure({ error, status: null, stderr })); resolve(); });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      settleProbe(status === 0 && !signal ? null : timedOut ? 'the CUDA probe process did not finish initialising CUDA within 60 s'
        : describeChildFailure({ status, signal, stderr }));
      resolve();
    });
  });
  return probeRun;
}

/** cudaProbed() for the synchronous getBackendInfo(): blocks while the child runs, once per process. */
export function cudaProbedSync(): void {
  native();
  if (probeResult !== undefined) return;
  const r = spawnSync(process.execPath, ['-e', PROBE], { env: probeEnv(), stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8',
    timeout: 60_000 });
  const timedOut = (r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT';
  settleProbe(r.status === 0 && !r.signal && !r.error ? null
    : timedOut ? 'the CUDA probe process did not finish initialising CUDA within 60 s'
      : describeChildFailure({ error: r.error, signal: r.signal, status: r.status, stderr: String(r.stderr ?? '') }));
}

/** Why the load-time CUDA probe disabled CUDA, if it did. */
export function cudaProbeNote(): string | undefined {
  cudaProbedSync();
  return probeResult ?? undefined;
}
