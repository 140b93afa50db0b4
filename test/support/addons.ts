/** Typed access to the two addons for tests: the product addon and the SIMT-emulator test addon. */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import {
  cudaProbedSync, native, packageRoot, type NativeAddon, type NativeDType, type NativeLlmConfig, type NativeLlmTensors, type NativeVisionConfig,
  type NativeVisionTensors, type NativeTrainSequence,
} from '../../lib/native.js';

export interface SimtAddon {
  run(name: string, input: Float32Array, outWords: number, grid: number[], block: number[], smem: number,
    p0: number, p1: number, init: 'nan' | 'zero'): Promise<Float32Array>;
  matmul(a: Float32Array, w: Float32Array | Uint16Array | Uint8Array, wType: NativeDType, bias: Float32Array | null,
    M: number, N: number, K: number, activation: string, kernel: 'auto' | 'tiled' | 'tensor'): Promise<Float32Array>;
  /** the CUDA twin of the product addon's cpuOp (+ activation, residual, embed, kvAppend, attentionDecode, topk),
   * kernels run under the emulator, outputs poisoned with NaN first */
  cudaOp(name: string, args: Record<string, unknown>): Float32Array;
  cudaOp(name: 'kvAppend', args: Record<string, unknown>): Uint16Array;
  /** The whole LLM on the CUDA kernels under the emulator (native/cuda/llm_device.cuh): the prompt's last
   * logits, then `steps` greedy tokens picked by the device's argmax. */
  emulatedGreedy(config: NativeLlmConfig, tensors: NativeLlmTensors, prompt: Int32Array, steps: number,
    options?: { maxBatch?: number; budgetBytes?: number; embeddings?: Float32Array; secondPrompt?: Int32Array }):
    { tokens: Int32Array; secondTokens: Int32Array; logits: Float32Array; deviceBytes: number };
  /** A NativeLlm-equivalent Llm with the emulated CUDA device attached, driven through Llm::forward like a context:
   * each step's last-row logits; `truncate` forgets cached positions first, as NativeLlmContext.truncate; `addLora`
   * adds PEFT adapters (Llm::add_lora, every B set to b) before that step. cpu: the same without the device. */
  emulatedLlm(config: NativeLlmConfig, tensors: NativeLlmTensors,
    steps: { tokens: Int32Array; truncate?: number; embeddings?: Float32Array; addLora?: { r: number; alpha: number; seed: number; b: number } }[],
    options?: { cpu?: boolean }): Float32Array[];
  /** The vision tower + projector on the CUDA kernels under the emulator (native/cuda/vision_device.cuh). */
  emulatedVision(config: NativeVisionConfig, tensors: NativeVisionTensors, pixels: Float32Array): Float32Array;
  /** emulatedVision, then the edits written through the parameter table (each parameter marked trainable
   * first), then a second encode: the device must see the table's new values. */
  emulatedVisionEdited(config: NativeVisionConfig, tensors: NativeVisionTensors, pixels: Float32Array,
    edits: { name: string; offset: number; values: Float32Array }[]): { before: Float32Array; after: Float32Array; binds: number };
  /** The training forward (native/model/llm_graph.h: llm_forward_train) over B sequences of T tokens, on the
   * CPU or the emulated device: the logits and, per layer, the saved statistics and activations. */
  trainForward(config: NativeLlmConfig, tensors: NativeLlmTensors, tokens: Int32Array, B: number, T: number,
    options?: { device?: 'cpu' | 'emulated'; recompute?: boolean[]; embeddings?: Float32Array }): {
    logits: Float32Array; rstdFinal: Float32Array; floats: number;
    layers: { recompute: boolean; x: Float32Array; rstd1?: Float32Array; rstd2?: Float32Array; lse?: Float32Array; q?: Float32Array;
      k?: Float32Array; g?: Float32Array }[];
  };
  /** The vision training forward (native/model/vision_graph.h: vision_forward_train) over B images (pixels
   * concatenated), on the CPU or the emulated device: the projected rows and what each block saved. */
  visionTrainForward(config: NativeVisionConfig, tensors: NativeVisionTensors, pixels: Float32Array, B: number,
    options?: { device?: 'cpu' | 'emulated'; recompute?: boolean[] }): {
    out: Float32Array; xEmb: Float32Array; preMean: Float32Array; preRstd: Float32Array; midPre: Float32Array; mid: Float32Array;
    floats: number;
    layers: { recompute: boolean; x: Float32Array; xMid?: Float32Array; mean1?: Float32Array; rstd1?: Float32Array; mean2?: Float32Array;
      rstd2?: Float32Array; lse?: Float32Array; q?: Float32Array; k?: Float32Array; fPre?: Float32Array; f?: Float32Array }[];
  };
  /** One training step (native/train/train_step.h) with the named parameters trainable, on the CPU or on the emulated
   * device: the loss summed over the targets, their count, and each trainable parameter's gradient. */
  trainGradients(llmConfig: NativeLlmConfig, llmTensors: NativeLlmTensors, visionConfig: NativeVisionConfig | null,
    visionTensors: NativeVisionTensors | null, batch: { seqs: NativeTrainSequence[]; pixels?: Float32Array[] }, trainable: string[],
    options: { device: 'cpu' | 'emulated'; checkpoint?: boolean; gradScale?: number; loraDropout?: number; dropoutStep?: number;
      lossRows?: number }):
    { loss: number; tokens: number; grads: Record<string, Float32Array> };
  /** The training engine for `steps` AdamW steps on one batch: the CPU Trainer, or the device engine
   * (native/cuda/train_device.cuh) over the emulated device; losses, gradient norms, the first step's gradients,
   * the final values and AdamW second moments as the host tables hold them after their sync. */
  trainerSteps(llmConfig: NativeLlmConfig, llmTensors: NativeLlmTensors, visionConfig: NativeVisionConfig | null,
    visionTensors: NativeVisionTensors | null, batch: { seqs: NativeTrainSequence[]; pixels?: Float32Array[] }, trainable: string[],
    options: { device: 'cpu' | 'emulated'; steps: number; lr: number; loraDropout?: number; seed?: number; lossRows?: number; bf16?: boolean; shareRunner?: boolean;
      abortAt?: { step: number; check: number };
      /** before this step the engine is dropped and a new one resumes from the saved values and moments */
      resumeAt?: number;
      /** that piece of the state is not restored at resumeAt */
      resumeSkip?: 'value' | 'm' | 'v' | 'dropout';
      /** after each accumulate, allreduce_grads with a reducer that multiplies every gradient buffer by this */
      reduceTimes?: number;
      hostWrite?: { step: number; name: string; value: number } }):
    { losses: number[]; norms: number[]; grads: Record<string, Float32Array>; values: Record<string, Float32Array>;
      v: Record<string, Float32Array>; paramBytes: number };
  /** The to_bf16 kernel (mixed-precision compute copies) under the emulator: the bf16 bits of x. */
  emulatedToBf16(x: Float32Array): Uint16Array;
  setOptions(o: { blockOrder?: 'forward' | 'reverse' | 'shuffle'; seed?: number; reverseThreads?: boolean;
    poisonShared?: boolean }): void;
  stats(): { launches: number; blocks: number; threads: number; switches: number };
}

/** The product addon, after the CUDA probe (as getBackendInfo() does), so tests may touch CUDA through it. */
export function addon(): NativeAddon {
  cudaProbedSync();
  return native();
}

export function simt(): SimtAddon {
  const path = join(packageRoot(), 'build', 'test', 'medllava_simt.node');
  if (!existsSync(path)) throw new Error(`${path} is missing: run \`npm run build:native:test\` first`);
  return createRequire(import.meta.url)(path) as SimtAddon;
}
