// The LLaMA / Mistral language model: RMSNorm, RoPE, grouped-query attention with an f16 KV
// cache, SwiGLU, (un)tied lm_head. Loads and checks the weights into its parameter table (they stay
// where the file maps them, in their stored type) and runs the graph of llm_graph.h on the CPU or
// on the device attached to it. defines: LlmTensorNames, LlmDeviceRunner, Llm.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../ops/ops.h"
#include "llm_graph.h"  // defines: LlmConfig, LlmIds, the layer order
#include "params.h"     // defines: ParamTable
#include "weights.h"

namespace medllava {

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

// Where the forward pass runs instead of the CPU: the CUDA backend (cuda_backend::load_llm) holds
// the weights on the device and one KV cache per sequence there. Thread-safe.
class LlmDeviceRunner {
 public:
  virtual ~LlmDeviceRunner() = default;
  // a sequence whose KV cache holds `capacity` positions (≤ the model's context)
  virtual std::shared_ptr<void> new_sequence(int64_t capacity) = 0;
  // As Llm::forward, for the sequence's positions from n_past on
  virtual void forward(void* sequence, int64_t n_past, const int32_t* tokens, int64_t T, bool all, float* out,
                       const RowSpans& images) = 0;
};

class Llm {
 public:
  Llm(const LlmConfig& cfg, const LlmTensorNames& names);
  const LlmConfig& config() const { return cfg_; }

  // From now on forward() runs on `runner` (its caches are the device's); set once, before any cache.
  void attach_device(std::shared_ptr<LlmDeviceRunner> runner) { device_ = std::move(runner); }
  bool on_device() const { return device_ != nullptr; }
  LlmDeviceRunner* device_runner() const { return device_.get(); }

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
  // `images` give the rows of the positions whose token is < 0 (spliced image features): every such
  // position is covered by exactly one span, and spans cover nothing else (E_ARGUMENT otherwise).
  void forward(Cache& cache, const int32_t* tokens, int64_t T, bool all, float* out, const RowSpans& images = {}) const;
  // E_ARGUMENT unless `images` covers exactly the positions of `tokens` that are < 0, once each
  static void check_spans(const int32_t* tokens, int64_t T, const RowSpans& images);

  // The parameter table (HF names; LoRA pairs under PEFT's names) and where the graph finds each one.
  // Change values only through the table, under its exclusive lock.
  ParamTable& params() { return params_; }
  const ParamTable& params() const { return params_; }
  const LlmIds& ids() const { return ids_; }

  // New PEFT LoRA adapters on the `targets` linears (q_proj, k_proj, v_proj, o_proj, gate_proj,
  // up_proj, down_proj) of every layer: A (r, in) drawn uniform in ±1/√in (PEFT's default,
  // kaiming_uniform with a = √5) from `seed`, B (out, r) zero — so the model computes what it did —
  // scale alpha / r, under PEFT's names. E_ARGUMENT when the model has adapters already. On a device
  // the runner uploads them with its next forward (and widens its chats' LoRA scratch). Takes the
  // table's exclusive lock. Returns the number of pairs.
  int add_lora(const std::vector<std::string>& targets, int64_t r, float alpha, uint64_t seed);

 private:
  LlmConfig cfg_;
  std::shared_ptr<LlmDeviceRunner> device_;
  WeightStore store_;
  ParamTable params_;
  LlmIds ids_;
};

}  // namespace medllava
