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
  cfg.hidden = (int64_t)config_number(env, c, "hidden");
  cfg.layers = (int64_t)config_number(env, c, "layers");
  cfg.heads = (int64_t)config_number(env, c, "heads");
  cfg.kv_heads = (int64_t)config_number(env, c, "kvHeads");
  cfg.ffn = (int64_t)config_number(env, c, "ffn");
  cfg.vocab = (int64_t)config_number(env, c, "vocab");
  cfg.context = (int64_t)config_number(env, c, "contextLength");
  cfg.rope_theta = (float)config_number(env, c, "ropeTheta");
  cfg.rms_eps = (float)config_number(env, c, "rmsEps");
  const std::string mode = c.Get("ropeMode").IsString() ? c.Get("ropeMode").As<Napi::String>().Utf8Value() : "";
  if (mode != "half" && mode != "adjacent") throw_js(env, ErrorCode::Argument, "config.ropeMode must be 'half' or 'adjacent'");
  cfg.rope_mode = mode == "half" ? RopeMode::Half : RopeMode::Adjacent;
  names.embed = tensor_ref(env, t.Get("embed"), "tensors.embed");
  names.norm = tensor_ref(env, t.Get("norm"), "tensors.norm");
  names.lm_head = tensor_ref(env, t.Get("lmHead"), "tensors.lmHead");
  if (!t.Get("layers").IsArray()) throw_js(env, ErrorCode::Argument, "tensors.layers must be an array");
  Napi::Array layers = t.Get("layers").As<Napi::Array>();
  for (uint32_t i = 0; i < layers.Length(); ++i) {
    Napi::Object L = layers.Get(i).As<Napi::Object>();
    const std::string p = "tensors.layers[" + std::to_string(i) + "].";
    names.layers.push_back({tensor_ref(env, L.Get("attnNorm"), p + "attnNorm"), tensor_ref(env, L.Get("wq"), p + "wq"),
                            tensor_ref(env, L.Get("wk"), p + "wk"), tensor_ref(env, L.Get("wv"), p + "wv"), tensor_ref(env, L.Get("wo"), p + "wo"),
                            tensor_ref(env, L.Get("ffnNorm"), p + "ffnNorm"), tensor_ref(env, L.Get("wGate"), p + "wGate"),
                            tensor_ref(env, L.Get("wUp"), p + "wUp"), tensor_ref(env, L.Get("wDown"), p + "wDown")});
  }
  // optional LoRA: { scale, pairs: { [baseTensorName]: { a: [path, name], b: [path, name] } } }
  if (t.Get("lora").IsObject()) {
    Napi::Object lora = t.Get("lora").As<Napi::Object>();
    names.lora_scale = (float)config_number(env, lora, "scale");
    Napi::Object pairs = lora.Get("pairs").As<Napi::Object>();
    Napi::Array keys = pairs.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      const std::string k = keys.Get(i).As<Napi::String>().Utf8Value();
      Napi::Object pr = pairs.Get(k).As<Napi::Object>();
      names.lora[k] = {tensor_ref(env, pr.Get("a"), "lora a"), tensor_ref(env, pr.Get("b"), "lora b")};
    }
  }
}

}  // namespace napi
}  // namespace medllava
