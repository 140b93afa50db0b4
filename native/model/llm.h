// The LLaMA / Mistral language model: RMSNorm, RoPE, grouped-query attention with an f16 KV
// cache, SwiGLU, (un)tied lm_head. Weights stay where the file maps them, in their stored type.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../ops/ops.h"
#include "weights.h"

namespace medllava {

namespace cuda {
class LlmDevice;  // native/cuda/llm_device.cuh: the same model on a CUDA device, from these weights
}

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
  PackedWeights x16;  // GGML blocks repacked for AVX-512 VNNI (repack_x16), where the CPU has it
  bool has_lora = false;
  TensorRef lora_a, lora_b;  // (r, in), (out, r)
};

// Where the forward pass runs instead of the CPU: the CUDA backend (cuda_backend::load_llm) holds
// the weights on the device and one KV cache per sequence there. Thread-safe.
class LlmDeviceRunner {
 public:
  virtual ~LlmDeviceRunner() = default;
  // a sequence whose KV cache holds `capacity` positions (≤ the model's context)
  virtual std::shared_ptr<void> new_sequence(int64_t capacity) = 0;
  // As Llm::forward, for the sequence's positions from n_past on
  virtual void forward(void* sequence, int64_t n_past, const int32_t* tokens, int64_t T, bool all, float* out,
                       const float* embeddings) = 0;
};

class Llm {
 public:
  Llm(const LlmConfig& cfg, const LlmTensorNames& names);
  const LlmConfig& config() const { return cfg_; }

  // From now on forward() runs on `runner` (its caches are the device's); set once, before any cache.
  void attach_device(std::shared_ptr<LlmDeviceRunner> runner) { device_ = std::move(runner); }
  bool on_device() const { return device_ != nullptr; }

  struct Cache {
    std::vector<uint16_t> k, v;  // (layers, capacity, kv_heads, head_dim) f16 — on the CPU
    std::shared_ptr<void> device;  // the device's KV cache, when the model runs there
    int64_t capacity = 0;          // positions it holds (≤ the model's context)
    int64_t n_past = 0;
    size_t bytes = 0;              // host bytes it holds (K + V), for the JS heap's external-memory count
  };
  // A cache of `capacity` positions (0, or more than the context: the whole context). Allocates and
  // zeroes it: call it off the JS thread.
  Cache new_cache(int64_t capacity = 0) const;

  // Runs `tokens` after the cache's n_past positions; writes logits for every token (all = true)
  // or the last one: out (all ? T : 1, vocab). E_CONTEXT_FULL when the cache's capacity would overflow.
  // `embeddings`, when given, replaces the rows of tokens < 0 (spliced image features, (T, hidden)).
  void forward(Cache& cache, const int32_t* tokens, int64_t T, bool all, float* out, const float* embeddings = nullptr) const;

 private:
  friend class cuda::LlmDevice;
  void linear(const LinearWeight& w, const float* x, int64_t T, float* out) const;
  void embed_row(int32_t token, float* out) const;

  LlmConfig cfg_;
  std::shared_ptr<LlmDeviceRunner> device_;
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
