// The training engine over a loaded Llm (and Vision): train_step (train_step.h) over host memory —
// or, in a device engine (native/cuda/train_device.cuh), on a CUDA device, its gradients added into
// the tables — then, once per optimizer step, the global gradient norm, clipping and AdamW over every
// trainable parameter of the tables (fp32 master weights and state on the host). defines: ParamGroup,
// Trainer.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

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
  // (A device engine, native/cuda/train_device.cuh, runs the step on its device and adds the
  // gradients into the same tables: the rest below is shared.)
  virtual Loss accumulate(const TrainBatch& b, float grad_scale);
  void zero_grads();
  // √(Σ g²) over every trainable parameter
  double grad_norm();
  // AdamW over `groups` with learning rates lr · lr_factor, gradients scaled by clip (the clipping
  // coefficient, 1 when none); `step` counts from 1. Zeroes the gradients afterwards.
  void update(const std::vector<ParamGroup>& groups, int64_t step, float lr_factor, float clip, float beta1, float beta2, float eps);
  bool checkpoint = false;  // recompute every layer's activations in backward instead of keeping them
  // LoRA dropout on the adapters' input: p, and the seed of the first accumulate call (call k uses
  // dropout_seed + k as its step seed: llm_graph.h's LlmScratch)
  float lora_dropout = 0;
  uint64_t dropout_seed = 0;
  uint64_t calls = 0;  // accumulate calls that ran
  int64_t loss_rows = 0;  // rows per loss-head chunk (0: as many as keep its logits within 32 MiB)

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
