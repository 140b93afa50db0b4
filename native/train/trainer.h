// One LLaVA training step on the CPU: the vision forward over the batch's images, their rows spliced
// into the LLM's training forward, masked cross-entropy, the LLM's backward, the projector's (and,
// when it trains, the tower's) backward, then — once per optimizer step — the global gradient norm,
// clipping and AdamW over every trainable parameter. All of it through the graphs of
// native/model/*_graph.h, so the same code runs on a device's op set. defines: TrainSequence,
// TrainBatch, ParamGroup, Trainer.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "../model/llm.h"
#include "../model/vision.h"

namespace medllava {

// One sequence as the LLM sees it: image rows already expanded (their tokens < 0), labels aligned
// with the tokens (HF's convention: the shift to next-token targets happens inside), −100 ignored.
struct TrainSequence {
  std::vector<int32_t> tokens, labels;
  struct Image {
    int64_t at = 0;     // the first of its rows
    int64_t index = 0;  // which of the batch's images
  };
  std::vector<Image> images;
  float weight = 1;  // per-sample weight of its targets' losses
};

struct TrainBatch {
  std::vector<TrainSequence> seqs;
  std::vector<std::vector<float>> pixels;  // each image normalised (3, S, S)
};

// Optimizer settings of one trainable parameter (by table: the LLM's or the vision side's).
struct ParamGroup {
  bool vision = false;
  int id = -1;
  float lr = 0, weight_decay = 0;  // the base learning rate (the schedule scales it) and decay
};

class Trainer {
 public:
  Trainer(std::shared_ptr<const Llm> llm, std::shared_ptr<const Vision> vision);

  struct Loss {
    double loss = 0;     // mean over the batch's non-ignored targets (weighted)
    int64_t tokens = 0;  // non-ignored targets
  };
  // Forward and backward over `b`: gradients accumulate (+=) into the tables, each target's loss
  // gradient scaled by grad_scale / tokens (1 / accumulation steps for gradient accumulation).
  // E_ARGUMENT / E_SHAPE / E_CONTEXT_FULL for a batch that does not fit; nothing is changed then.
  Loss accumulate(const TrainBatch& b, float grad_scale);
  void zero_grads();
  // √(Σ g²) over every trainable parameter
  double grad_norm();
  // AdamW over `groups` with learning rates lr · lr_factor, gradients scaled by clip (the clipping
  // coefficient, 1 when none); `step` counts from 1. Zeroes the gradients afterwards.
  void update(const std::vector<ParamGroup>& groups, int64_t step, float lr_factor, float clip, float beta1, float beta2, float eps);
  bool checkpoint = false;  // recompute every layer's activations in backward instead of keeping them

 private:
  void check(const TrainBatch& b) const;
  std::shared_ptr<const Llm> llm_;
  std::shared_ptr<const Vision> vision_;
  std::vector<float> act_, grad_;  // activation tables and gradient scratch, grown as batches need
};

}  // namespace medllava
