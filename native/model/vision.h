// The vision side of LLaVA: a pre-norm ViT run to mm_vision_select_layer — OpenAI CLIP (pre_layrnorm,
// separate q/k/v, quick_gelu) or a timm ViT as open_clip's BiomedCLIP-CXR (no pre-norm, fused qkv,
// LayerScale, GELU) — with class token and learned positions, and the projector (linear or
// mlp2x_gelu) into the LLM's width. Weights as stored, mapped from their files.
#pragma once
#include <cstdint>
#include <memory>
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

// An empty Ref (both strings empty) is an absent tensor: pre_ln_* (no pre-norm), ls1/ls2 (no
// LayerScale); either qkv_* (fused, rows q | k | v) or q_*, k_*, v_* are given.
struct VisionTensorNames {
  Ref patch_embed, patch_bias, class_embed, pos_embed, pre_ln_w, pre_ln_b;  // patch_bias: timm's conv has one, CLIP's not
  struct Layer {
    Ref ln1_w, ln1_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, ln2_w, ln2_b, fc_a_w, fc_a_b, fc_b_w, fc_b_b;
    Ref qkv_w, qkv_b, ls1, ls2;
  };
  std::vector<Layer> layers;
  Ref proj0_w, proj0_b, proj2_w, proj2_b;  // linear projector: proj0 only
};

namespace cuda {
class VisionDevice;  // native/cuda/vision_device.cuh: the same tower on a CUDA device
}

// Where encode() runs instead of the CPU (cuda_backend::load_vision). Thread-safe.
class VisionDeviceRunner {
 public:
  virtual ~VisionDeviceRunner() = default;
  virtual void encode(const float* pixels, float* out) = 0;
};

class Vision {
 public:
  Vision(const VisionConfig& cfg, const VisionTensorNames& names);
  void attach_device(std::shared_ptr<VisionDeviceRunner> runner) { device_ = std::move(runner); }
  bool on_device() const { return device_ != nullptr; }
  // patches (np, 3·p·p) of normalised pixels (3, S, S), in the patch conv weight's (c, y, x) order
  void im2col(const float* pixels, float* cols) const;
  const VisionConfig& config() const { return cfg_; }
  int64_t tokens() const;  // image tokens handed to the LLM
  // pixels (3, S, S) normalised → out (tokens, out_dim)
  void encode(const float* pixels, float* out) const;

 private:
  friend class cuda::VisionDevice;
  struct Linear {
    TensorRef w;
    std::vector<float> b;
  };
  Linear linear(const Ref& w, const Ref* b, int64_t out, int64_t in);
  Linear rows(const Linear& l, int64_t first, int64_t count) const;  // a row slice of a loaded linear
  void apply(const Linear& l, const float* x, int64_t T, float* out, Activation act = Activation::None) const;

  VisionConfig cfg_;
  std::shared_ptr<VisionDeviceRunner> device_;
  WeightStore store_;
  TensorRef patch_;                 // (hidden, 3·p·p)
  std::vector<float> patch_b_;      // empty: no bias
  std::vector<float> cls_, pos_, pre_w_, pre_b_;
  struct Layer {
    std::vector<float> ln1_w, ln1_b, ln2_w, ln2_b, ls1, ls2;  // ls*: empty without LayerScale
    Linear q, k, v, o, fc1, fc2;
  };
  std::vector<Layer> layers_;
  Linear proj0_, proj2_;
};

}  // namespace medllava
