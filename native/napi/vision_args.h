// The arguments of NativeVision.load(config, tensors) → VisionConfig + VisionTensorNames, for the
// addon and for the test addon's emulated CUDA tower (one parser, so both load the same tower).
#pragma once
#include <napi.h>

#include <string>
#include <utility>

#include "../model/vision.h"
#include "js_error.h"
#include "native_object.h"

namespace medllava {
namespace napi {

namespace vision_args_detail {
inline Ref ref(Napi::Env env, const Napi::Object& o, const char* key) {
  return tensor_ref(env, o.Get(key), std::string("tensors.") + key);
}
// an optional tensor: absent (undefined) → an empty Ref
inline Ref opt(Napi::Env env, const Napi::Object& o, const char* key) { return o.Get(key).IsUndefined() ? Ref{} : ref(env, o, key); }
}  // namespace vision_args_detail

inline void parse_vision_args(Napi::Env env, const Napi::Object& c, const Napi::Object& t, VisionConfig& cfg, VisionTensorNames& n) {
  using vision_args_detail::opt;
  using vision_args_detail::ref;
  constexpr int64_t kDim = 1 << 20;  // far above any real width; keeps products in int64
  cfg.image_size = config_int(env, c, "imageSize", 1, 1 << 16);
  cfg.patch = config_int(env, c, "patchSize", 1, 1 << 16);
  cfg.hidden = config_int(env, c, "hidden", 1, kDim);
  cfg.layers = config_int(env, c, "layers", 1, 4096);
  cfg.heads = config_int(env, c, "heads", 1, kDim);
  cfg.ffn = config_int(env, c, "ffn", 1, kDim);
  cfg.eps = (float)config_number(env, c, "layerNormEps");
  if (!(cfg.eps > 0)) throw_js(env, ErrorCode::Argument, "config.layerNormEps must be > 0, got " + std::to_string(cfg.eps));
  cfg.select_layer = config_int(env, c, "selectLayer", -4096, 4096);
  cfg.out_dim = config_int(env, c, "outDim", 1, kDim);
  cfg.act = config_choice(env, c, "activation", {"quick_gelu", "gelu"}) == "gelu" ? Activation::Gelu : Activation::QuickGelu;
  cfg.keep_cls = config_choice(env, c, "selectFeature", {"patch", "cls_patch"}) == "cls_patch";
  cfg.projector_mlp = config_choice(env, c, "projector", {"linear", "mlp2x_gelu"}) == "mlp2x_gelu";
  n.patch_embed = ref(env, t, "patchEmbed");
  n.patch_bias = opt(env, t, "patchBias");
  n.class_embed = ref(env, t, "classEmbed");
  n.pos_embed = ref(env, t, "posEmbed");
  n.pre_ln_w = opt(env, t, "preLnW");
  n.pre_ln_b = n.pre_ln_w.second.empty() ? medllava::Ref{} : ref(env, t, "preLnB");
  n.proj0_w = ref(env, t, "proj0W");
  n.proj0_b = ref(env, t, "proj0B");
  if (cfg.projector_mlp) {
    n.proj2_w = ref(env, t, "proj2W");
    n.proj2_b = ref(env, t, "proj2B");
  }
  if (!t.Get("layers").IsArray()) throw_js(env, ErrorCode::Argument, "tensors.layers must be an array");
  Napi::Array layers = t.Get("layers").As<Napi::Array>();
  for (uint32_t i = 0; i < layers.Length(); ++i) {
    if (!layers.Get(i).IsObject()) throw_js(env, ErrorCode::Argument, "tensors.layers[i] must be an object");
    Napi::Object L = layers.Get(i).As<Napi::Object>();
    VisionTensorNames::Layer y;
    const bool fused = !L.Get("qkvW").IsUndefined();
    if (fused) {
      y.qkv_w = ref(env, L, "qkvW");
      y.qkv_b = ref(env, L, "qkvB");
    } else {
      y.q_w = ref(env, L, "qW"), y.q_b = ref(env, L, "qB"), y.k_w = ref(env, L, "kW"), y.k_b = ref(env, L, "kB");
      y.v_w = ref(env, L, "vW"), y.v_b = ref(env, L, "vB");
    }
    y.ln1_w = ref(env, L, "ln1W"), y.ln1_b = ref(env, L, "ln1B"), y.o_w = ref(env, L, "oW"), y.o_b = ref(env, L, "oB");
    y.ln2_w = ref(env, L, "ln2W"), y.ln2_b = ref(env, L, "ln2B"), y.fc_a_w = ref(env, L, "fcAW"), y.fc_a_b = ref(env, L, "fcAB");
    y.fc_b_w = ref(env, L, "fcBW"), y.fc_b_b = ref(env, L, "fcBB");
    y.ls1 = opt(env, L, "ls1");
    y.ls2 = y.ls1.second.empty() ? medllava::Ref{} : ref(env, L, "ls2");
    n.layers.push_back(std::move(y));
  }
}

}  // namespace napi
}  // namespace medllava
