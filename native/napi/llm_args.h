// The arguments of NativeLlm.load(config, tensors) → LlmConfig + LlmTensorNames, for the addon and
// for the test addon's emulated CUDA model (one parser, so both load exactly the same model).
#pragma once
#include <napi.h>

#include <string>

#include "../model/llm.h"
#include "js_error.h"
#include "native_object.h"

namespace medllava {
namespace napi {

inline void parse_llm_args(Napi::Env env, const Napi::Object& c, const Napi::Object& t, LlmConfig& cfg, LlmTensorNames& names) {
  constexpr int64_t kDim = 1 << 20;  // far above any real width; keeps products in int64
  cfg.hidden = config_int(env, c, "hidden", 1, kDim);
  cfg.layers = config_int(env, c, "layers", 1, 4096);
  cfg.heads = config_int(env, c, "heads", 1, kDim);
  cfg.kv_heads = config_int(env, c, "kvHeads", 1, kDim);
  cfg.ffn = config_int(env, c, "ffn", 1, kDim);
  cfg.vocab = config_int(env, c, "vocab", 1, 1 << 24);
  cfg.context = config_int(env, c, "contextLength", 1, 1 << 24);
  cfg.rope_theta = (float)config_number(env, c, "ropeTheta");
  cfg.rms_eps = (float)config_number(env, c, "rmsEps");
  const std::string mode = config_choice(env, c, "ropeMode", {"half", "adjacent"});
  cfg.rope_mode = mode == "half" ? RopeMode::Half : RopeMode::Adjacent;
  names.embed = tensor_ref(env, t.Get("embed"), "tensors.embed");
  names.norm = tensor_ref(env, t.Get("norm"), "tensors.norm");
  names.lm_head = tensor_ref(env, t.Get("lmHead"), "tensors.lmHead");
  if (!t.Get("layers").IsArray()) throw_js(env, ErrorCode::Argument, "tensors.layers must be an array");
  Napi::Array layers = t.Get("layers").As<Napi::Array>();
  for (uint32_t i = 0; i < layers.Length(); ++i) {
    const std::string p = "tensors.layers[" + std::to_string(i) + "].";
    if (!layers.Get(i).IsObject()) throw_js(env, ErrorCode::Argument, p.substr(0, p.size() - 1) + " must be an object");
    Napi::Object L = layers.Get(i).As<Napi::Object>();
    names.layers.push_back({tensor_ref(env, L.Get("attnNorm"), p + "attnNorm"), tensor_ref(env, L.Get("wq"), p + "wq"),
                            tensor_ref(env, L.Get("wk"), p + "wk"), tensor_ref(env, L.Get("wv"), p + "wv"), tensor_ref(env, L.Get("wo"), p + "wo"),
                            tensor_ref(env, L.Get("ffnNorm"), p + "ffnNorm"), tensor_ref(env, L.Get("wGate"), p + "wGate"),
                            tensor_ref(env, L.Get("wUp"), p + "wUp"), tensor_ref(env, L.Get("wDown"), p + "wDown")});
  }
  // optional LoRA: { scale, pairs: { [baseTensorName]: { a: [path, name], b: [path, name] } } }
  if (t.Get("lora").IsObject()) {
    Napi::Object lora = t.Get("lora").As<Napi::Object>();
    names.lora_scale = (float)config_number(env, lora, "scale");
    if (!lora.Get("pairs").IsObject()) throw_js(env, ErrorCode::Argument, "tensors.lora.pairs must be an object");
    Napi::Object pairs = lora.Get("pairs").As<Napi::Object>();
    Napi::Array keys = pairs.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      const std::string k = keys.Get(i).As<Napi::String>().Utf8Value();
      if (!pairs.Get(k).IsObject()) throw_js(env, ErrorCode::Argument, "tensors.lora.pairs['" + k + "'] must be {a, b}");
      Napi::Object pr = pairs.Get(k).As<Napi::Object>();
      names.lora[k] = {tensor_ref(env, pr.Get("a"), "lora a"), tensor_ref(env, pr.Get("b"), "lora b")};
    }
  }
}

}  // namespace napi
}  // namespace medllava
