// The LLaMA / Mistral graph, written once: the layer order of the language model over an op set
// `Ops` — CpuOps (native/cpu/ops_cpu.h), CudaOps on a real device or on the SIMT-emulated one
// (native/cuda/ops_cuda.cuh) — which share names and signatures. defines: LlmConfig, LlmIds,
// LlmScratch, KvView, llm_linear, llm_blocks, llm_head.
//
// Parameters are read through their ids in the model's ParamTable (native/model/params.h), as
// WeightViews the caller resolved for its backend: host pointers for the CPU, device copies for CUDA.
#pragma once
#include <cstdint>
#include <vector>

#include "../ops/ops.h"
#include "params.h"  // defines: WeightView

namespace medllava {

struct LlmConfig {
  int64_t hidden = 0, layers = 0, heads = 0, kv_heads = 0, ffn = 0, vocab = 0, context = 0;
  float rope_theta = 10000, rms_eps = 1e-5f;
  RopeMode rope_mode = RopeMode::Half;
};

// Where each parameter sits in the table. A linear may carry a PEFT LoRA pair (a: (r, in), b: (out, r)),
// applied as W x + scale · B (A x).
struct LlmIds {
  struct Linear {
    int w = -1, lora_a = -1, lora_b = -1;
  };
  struct Layer {
    int attn_norm = -1, ffn_norm = -1;
    Linear wq, wk, wv, wo, w_gate, w_up, w_down;
  };
  int embed = -1, norm = -1;
  Linear lm_head;
  std::vector<Layer> layers;
  float lora_scale = 0;  // alpha / r
  int64_t lora_rank = 0, lora_out = 0;  // the largest r and output width among adapted linears (scratch sizes)
};

// Activations of one forward over T tokens, in the backend's memory. Inference reuses them from
// layer to layer; each is (T, width).
struct LlmScratch {
  float *x = nullptr;    // the residual stream (T, hidden)
  float *h = nullptr;    // normed input of a sub-block (T, hidden)
  float *q = nullptr, *k = nullptr, *v = nullptr;  // (T, hidden), (T, kv), (T, kv)
  float *att = nullptr, *o = nullptr;              // (T, hidden)
  float *g = nullptr, *u = nullptr;                // (T, ffn)
  float *lora = nullptr, *lora_out = nullptr;      // (T, lora_rank), (T, lora_out)
  int64_t floats(const LlmConfig& c, const LlmIds& ids, int64_t T) const {
    const int64_t kvd = c.kv_heads * (c.hidden / c.heads);
    return T * (6 * c.hidden + 2 * kvd + 2 * c.ffn + ids.lora_rank + ids.lora_out);
  }
  // carves the buffers out of `p` (floats(c, ids, T) floats)
  void carve(float* p, const LlmConfig& c, const LlmIds& ids, int64_t T) {
    const int64_t D = c.hidden, kvd = c.kv_heads * (D / c.heads);
    auto take = [&](int64_t n) { float* r = p; p += n; return r; };
    x = take(T * D), h = take(T * D), q = take(T * D), k = take(T * kvd), v = take(T * kvd), att = take(T * D), o = take(T * D);
    g = take(T * c.ffn), u = take(T * c.ffn), lora = take(T * ids.lora_rank), lora_out = take(T * ids.lora_out);
  }
};

// One sequence's f16 KV cache in the backend's memory: (layers, capacity, kv_heads · head_dim) each.
struct KvView {
  uint16_t *k = nullptr, *v = nullptr;
  int64_t capacity = 0, n_past = 0;
};

// out(T, w.rows) = x · Wᵀ (+ scale · B (A x))
template <class Ops>
void llm_linear(Ops& ops, const std::vector<WeightView>& W, const LlmIds& ids, const LlmIds::Linear& l, const float* x, int64_t T,
                float* out, LlmScratch& s) {
  const WeightView w = W[(size_t)l.w];
  ops.matmul(x, w, WeightView{}, out, T, Activation::None);
  if (l.lora_a < 0) return;
  const WeightView a = W[(size_t)l.lora_a], b = W[(size_t)l.lora_b];
  ops.matmul(x, a, WeightView{}, s.lora, T, Activation::None);
  ops.matmul(s.lora, b, WeightView{}, s.lora_out, T, Activation::None);
  ops.residual(out, s.lora_out, nullptr, ids.lora_scale, T * w.rows, w.rows);
}

// Embeds `tokens` (host; a token < 0 takes its row from `embeddings` (T, hidden), host) and runs every
// layer, appending K and V at kv.n_past. Leaves the residual stream in s.x. Tokens are valid here
// (the caller checked them).
template <class Ops>
void llm_blocks(Ops& ops, const LlmConfig& c, const LlmIds& ids, const std::vector<WeightView>& W, const int32_t* tokens,
                const float* embeddings, int64_t T, LlmScratch& s, const KvView& kv) {
  const int64_t D = c.hidden, hd = D / c.heads, kvd = c.kv_heads * hd;
  std::vector<int32_t> rows((size_t)T);
  for (int64_t t = 0; t < T; ++t) rows[(size_t)t] = tokens[t] < 0 ? 0 : tokens[t];
  ops.embed(W[(size_t)ids.embed], rows.data(), s.x, T);
  if (embeddings) ops.rows_from_host(s.x, embeddings, tokens, T, D);  // spliced image features
  const size_t layer_stride = (size_t)(kv.capacity * kvd);
  for (int64_t l = 0; l < c.layers; ++l) {
    const LlmIds::Layer& L = ids.layers[(size_t)l];
    uint16_t* kc = kv.k + (size_t)l * layer_stride;
    uint16_t* vc = kv.v + (size_t)l * layer_stride;
    // attention
    ops.rmsnorm(s.x, W[(size_t)L.attn_norm], s.h, T, D, c.rms_eps);
    llm_linear(ops, W, ids, L.wq, s.h, T, s.q, s);
    llm_linear(ops, W, ids, L.wk, s.h, T, s.k, s);
    llm_linear(ops, W, ids, L.wv, s.h, T, s.v, s);
    ops.rope(s.q, T, c.heads, hd, kv.n_past, c.rope_theta, c.rope_mode);
    ops.rope(s.k, T, c.kv_heads, hd, kv.n_past, c.rope_theta, c.rope_mode);
    ops.kv_append(s.k, kc, kv.n_past, T, kvd);
    ops.kv_append(s.v, vc, kv.n_past, T, kvd);
    ops.attention_cached(s.q, kc, vc, s.att, T, kv.n_past, c.heads, c.kv_heads, hd);
    llm_linear(ops, W, ids, L.wo, s.att, T, s.o, s);
    ops.residual(s.x, s.o, nullptr, 1.0f, T * D, D);
    // SwiGLU MLP
    ops.rmsnorm(s.x, W[(size_t)L.ffn_norm], s.h, T, D, c.rms_eps);
    llm_linear(ops, W, ids, L.w_gate, s.h, T, s.g, s);
    llm_linear(ops, W, ids, L.w_up, s.h, T, s.u, s);
    ops.silu_mul(s.g, s.u, s.g, T * c.ffn);
    llm_linear(ops, W, ids, L.w_down, s.g, T, s.o, s);
    ops.residual(s.x, s.o, nullptr, 1.0f, T * D, D);
  }
}

// logits(rows, vocab) of the residual stream's rows [first, first + rows) after llm_blocks
template <class Ops>
void llm_head(Ops& ops, const LlmConfig& c, const LlmIds& ids, const std::vector<WeightView>& W, int64_t first, int64_t rows,
              LlmScratch& s, float* logits) {
  ops.rmsnorm(s.x + first * c.hidden, W[(size_t)ids.norm], s.h, rows, c.hidden, c.rms_eps);
  llm_linear(ops, W, ids, ids.lm_head, s.h, rows, logits, s);
}

}  // namespace medllava
