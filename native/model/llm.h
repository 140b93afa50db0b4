// The LLaMA / Mistral language model: RMSNorm, RoPE, grouped-query attention with an f16 KV
// cache, SwiGLU, (un)tied lm_head. Weights stay where the file maps them, in their stored type.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "../ops/ops.h"
#include "weights.h"

namespace medllava {

struct LlmConfig {
  int64_t hidden = 0, layers = 0, heads = 0, kv_heads = 0, ffn = 0, vocab = 0, context = 0;
  float rope_theta = 10000, rms_eps = 1e-5f;
  RopeMode rope_mode = RopeMode::Half;
};

// Where each tensor lives: (file, name) pairs, PyTorch shapes expected.
struct LlmTensorNames {
  std::pair<std::string, std::string> embed, norm, lm_head;
  struct Layer {
    std::pair<std::string, std::string> attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down;
  };
  std::vector<Layer> layers;
  // LoRA kept separate (W x + scale · B (A x)), as PEFT adapters store it: keyed by the base weight's
  // tensor name, the adapter's (A (r, in), B (out, r)) tensors.
  struct Lora {
    std::pair<std::string, std::string> a, b;
  };
  std::map<std::string, Lora> lora;
  float lora_scale = 0;  // alpha / r
};

struct LinearWeight {
  TensorRef t;  // (out, in)
  bool has_lora = false;
  TensorRef lora_a, lora_b;  // (r, in), (out, r)
};

class Llm {
 public:
  Llm(const LlmConfig& cfg, const LlmTensorNames& names);
  const LlmConfig& config() const { return cfg_; }

  struct Cache {
    std::vector<uint16_t> k, v;  // (layers, context, kv_heads, head_dim) f16
    int64_t n_past = 0;
  };
  Cache new_cache() const;

  // Runs `tokens` after the cache's n_past positions; writes logits for every token (all = true)
  // or the last one: out (all ? T : 1, vocab). E_CONTEXT_FULL when the cache would overflow.
  // `embeddings`, when given, replaces the rows of tokens < 0 (spliced image features, (T, hidden)).
  void forward(Cache& cache, const int32_t* tokens, int64_t T, bool all, float* out, const float* embeddings = nullptr) const;

 private:
  void linear(const LinearWeight& w, const float* x, int64_t T, float* out) const;
  void embed_row(int32_t token, float* out) const;

  LlmConfig cfg_;
  float lora_scale_ = 0;
  WeightStore store_;
  TensorRef embed_;
  LinearWeight lm_head_;
  std::vector<float> norm_;
  struct Layer {
    std::vector<float> attn_norm, ffn_norm;
    LinearWeight wq, wk, wv, wo, w_gate, w_up, w_down;
  };
  std::vector<Layer> layers_;
};

}  // namespace medllava
