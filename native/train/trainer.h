// The training engine over a loaded Llm (and Vision): train_step (train_step.h), then, once per
// optimizer step, the global gradient norm, clipping and AdamW over every trainable parameter. This
// class runs it all on the CPU over the tables (fp32 master weights, gradients and state in their flat
// buffer); the device engine (native/cuda/train_device.cuh) overrides each step to run on a CUDA
// device with everything in device memory. defines: ParamGroup, Trainer.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "../core/cancel.h"  // defines: CancelToken
#include "../model/llm.h"
#include "../model/vision.h"
#include "train_step.h"  // defines: TrainSequence, TrainBatch, train_step

namespace medllava {

// Optimizer settings of one trainable parameter (by table: the LLM's or the vision side's).
struct ParamGroup {
  bool vision = false;
  int id = -1;
  float lr = 0, weight_decay = 0;  // the base learning rate (the schedule scales it) and decay
};

// Restores one trainable parameter's saved state into its table — 'value' (the fp32 master), 'm' or 'v'
// (AdamW's moments) — as a resume does: the host copies are brought up to date first, the write takes
// the table's exclusive lock and moves its generation, so a device engine re-uploads before its next
// step. E_ARGUMENT for a frozen parameter or a wrong length.
void restore_param_state(ParamTable& t, int id, char which, const float* data, int64_t n);

// Sums gradient buffers over the data-parallel ranks, in place: MPI over host memory (the CPU engine), NCCL over
// device memory on the engine's stream (a device engine). finish() waits for what was queued on the stream
// (E_TIMEOUT past the reducer's deadline).
struct GradReducer {
  virtual ~GradReducer() = default;
  virtual void allreduce(float* data, int64_t n, void* stream) = 0;
  virtual void finish(void* stream) {}
};

class Trainer {
 public:
  Trainer(std::shared_ptr<const Llm> llm, std::shared_ptr<const Vision> vision);
  virtual ~Trainer() = default;

  struct Loss {
    double loss = 0;     // mean over the batch's non-ignored targets (weighted)
    int64_t tokens = 0;  // non-ignored targets
  };
  // Forward and backward over `b`: gradients accumulate (+=) into the tables, each target's loss
  // gradient scaled by grad_scale / tokens (1 / accumulation steps for gradient accumulation).
  // E_ARGUMENT / E_SHAPE / E_CONTEXT_FULL for a batch that does not fit; nothing is changed then.
  // (A device engine, native/cuda/train_device.cuh, runs all of it on its device, with the
  // gradients, moments and master values in device memory.)
  virtual Loss accumulate(const TrainBatch& b, float grad_scale);
  virtual void zero_grads();
  // √(Σ g²) over every trainable parameter
  virtual double grad_norm();
  // AdamW over `groups` with learning rates lr · lr_factor, gradients scaled by clip (the clipping
  // coefficient, 1 when none); `step` counts from 1. Zeroes the gradients afterwards.
  virtual void update(const std::vector<ParamGroup>& groups, int64_t step, float lr_factor, float clip, float beta1, float beta2,
                      float eps);
  // Data parallel: every trainable gradient (as accumulated so far) summed over the ranks by `r`.
  virtual void allreduce_grads(GradReducer& r);
  // Brings the tables' host copies of the trainable values, gradients and AdamW moments up to date
  // (a device engine keeps them in device memory; the CPU engine works in the tables: nothing to do).
  virtual void sync_state() {}
  // Mixed precision: the trainable matrices' GEMMs read bf16 copies of their fp32 master values
  // (gradients, norms, biases and optimizer state stay fp32). Device engines only (E_UNSUPPORTED on
  // the CPU); before the first step.
  virtual void set_compute_bf16(bool on);
  bool checkpoint = false;  // recompute every layer's activations in backward instead of keeping them
  // LoRA dropout on the adapters' input: p, and the seed of the first accumulate call (call k uses
  // dropout_seed + k as its step seed: llm_graph.h's LlmScratch)
  float lora_dropout = 0;
  uint64_t dropout_seed = 0;
  uint64_t calls = 0;  // accumulate calls that ran
  int64_t loss_rows = 0;  // rows per loss-head chunk (0: as many as keep its logits within 32 MiB)
  // Requested from any thread, a running accumulate stops at its next layer with E_ABORTED: the
  // gradients are then partial (zero them); parameters and optimizer state are untouched.
  CancelToken cancel;

 protected:
  // the step's model over the tables' host views and gradients (the caller holds their shared locks)
  TrainModel host_model(GradViews& lg, GradViews& vg) const;
  // the images of `b` as patches (host), images × patches × 3·p·p
  std::vector<float> patches(const TrainBatch& b, const TrainPlan& p) const;
  std::shared_ptr<const Llm> llm_;
  std::shared_ptr<const Vision> vision_;

 private:
  std::vector<float> arena_;  // activation tables and gradient scratch, grown as batches need
};

}  // namespace medllava
