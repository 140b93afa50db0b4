// The vision side of LLaVA: an OpenAI CLIP ViT (pre-LN, quick_gelu or gelu, class token, learned
// positions) run to mm_vision_select_layer, and the projector (linear or mlp2x_gelu) into the LLM's
// width. Weights as stored, mapped from their files.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../ops/ops.h"
#include "weights.h"

namespace medllava {

struct VisionConfig {
  int64_t image_size = 0, patch = 0, hidden = 0, layers = 0, heads = 0, ffn = 0;
  float eps = 1e-5f;
  Activation act = Activation::QuickGelu;
  int64_t select_layer = -2;      // LLaVA's: hidden_states[select_layer]
  bool keep_cls = false;          // mm_vision_select_feature 'cls_patch'
  bool projector_mlp = true;      // mlp2x_gelu (else linear)
  int64_t out_dim = 0;            // the LLM's width
};

using Ref = std::pair<std::string, std::string>;  // (file, tensor)

struct VisionTensorNames {
  Ref patch_embed, class_embed, pos_embed, pre_ln_w, pre_ln_b;
  struct Layer {
    Ref ln1_w, ln1_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, ln2_w, ln2_b, fc_a_w, fc_a_b, fc_b_w, fc_b_b;
  };
  std::vector<Layer> layers;
  Ref proj0_w, proj0_b, proj2_w, proj2_b;  // linear projector: proj0 only
};

class Vision {
 public:
  Vision(const VisionConfig& cfg, const VisionTensorNames& names);
  const VisionConfig& config() const { return cfg_; }
  int64_t tokens() const;  // image tokens handed to the LLM
  // pixels (3, S, S) normalised → out (tokens, out_dim)
  void encode(const float* pixels, float* out) const;

 private:
  struct Linear {
    TensorRef w;
    std::vector<float> b;
  };
  Linear linear(const Ref& w, const Ref* b, int64_t out, int64_t in);
  void apply(const Linear& l, const float* x, int64_t T, float* out, Activation act = Activation::None) const;

  VisionConfig cfg_;
  WeightStore store_;
  TensorRef patch_;                 // (hidden, 3·p·p)
  std::vector<float> cls_, pos_, pre_w_, pre_b_;
  struct Layer {
    std::vector<float> ln1_w, ln1_b, ln2_w, ln2_b;
    Linear q, k, v, o, fc1, fc2;
  };
  std::vector<Layer> layers_;
  Linear proj0_, proj2_;
};

}  // namespace medllava
