// The vision side of LLaVA: a pre-norm ViT run to mm_vision_select_layer — OpenAI CLIP (pre_layrnorm,
// separate q/k/v, quick_gelu) or a timm ViT as open_clip's BiomedCLIP-CXR (no pre-norm, fused qkv,
// LayerScale, GELU) — with class token and learned positions, and the projector (linear or
// mlp2x_gelu) into the LLM's width. Loads the weights into its parameter table (as stored, mapped from
// their files) and runs the graph of vision_graph.h on the CPU or the attached device.
// defines: VisionTensorNames, VisionDeviceRunner, Vision.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../ops/ops.h"
#include "params.h"        // defines: ParamTable
#include "vision_graph.h"  // defines: VisionConfig, VisionIds, the layer order
#include "weights.h"

namespace medllava {

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
  VisionDeviceRunner* device_runner() const { return device_.get(); }
  // patches (np, 3·p·p) of normalised pixels (3, S, S), in the patch conv weight's (c, y, x) order
  void im2col(const float* pixels, float* cols) const;
  const VisionConfig& config() const { return cfg_; }
  int64_t tokens() const;  // image tokens handed to the LLM
  // pixels (3, S, S) normalised → out (tokens, out_dim)
  void encode(const float* pixels, float* out) const;

  // The parameter table (HF names: LLaVA's CLIP tower and mm_projector, open_clip's timm trunk) and
  // where the graph finds each one. Change values only through the table, under its exclusive lock.
  ParamTable& params() { return params_; }
  const ParamTable& params() const { return params_; }
  const VisionIds& ids() const { return ids_; }

 private:
  VisionConfig cfg_;
  std::shared_ptr<VisionDeviceRunner> device_;
  WeightStore store_;
  ParamTable params_;
  VisionIds ids_;
};

}  // namespace medllava
