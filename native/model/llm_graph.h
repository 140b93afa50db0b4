// The LLaMA / Mistral graph, written once: the layer order of the language model over an op set
// `Ops` — CpuOps (native/cpu/ops_cpu.h), CudaOps on a real device or on the SIMT-emulated one
// (native/cuda/ops_cuda.cuh) — which share names and signatures. defines: LlmConfig, LlmIds,
// LlmScratch, KvView, llm_linear, LlmLayerIO, llm_layer (one decoder layer: the layer order),
// llm_embed, llm_blocks (inference), LlmActivations (the activation table), llm_forward_train, llm_head,
// LlmGradScratch, llm_linear_backward, llm_layer_backward, LossHeadScratch, loss_head_rows,
// llm_loss_head (lm_head + cross-entropy, chunked), llm_backward_train (the backward pass).
//
// Parameters are read through their ids in the model's ParamTable (native/model/params.h), as
// WeightViews the caller resolved for its backend: host pointers for the CPU, device copies for CUDA.
#pragma once
#include <algorithm>
#include "../core/cancel.h"  // defines: CancelToken, check_cancel
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
  int64_t lora_rank = 0, lora_out = 0, lora_in = 0;  // the largest r, output and input widths among adapted linears (scratch sizes)
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
  float* lora_x = nullptr;                         // (T, lora_in): a LoRA branch's input after dropout
  // LoRA dropout on the adapters' input (training only; 0: off): linear l's mask is dropout.h's under
  // dropout_linear_seed(dropout_step, l.lora_a)
  float lora_dropout = 0;
  uint64_t dropout_step = 0;
  int64_t floats(const LlmConfig& c, const LlmIds& ids, int64_t T) const {
    const int64_t kvd = c.kv_heads * (c.hidden / c.heads);
    return T * (6 * c.hidden + 2 * kvd + 2 * c.ffn + ids.lora_rank + ids.lora_out + ids.lora_in);
  }
  // carves the buffers out of `p` (floats(c, ids, T) floats)
  void carve(float* p, const LlmConfig& c, const LlmIds& ids, int64_t T) {
    const int64_t D = c.hidden, kvd = c.kv_heads * (D / c.heads);
    auto take = [&](int64_t n) { float* r = p; p += n; return r; };
    x = take(T * D), h = take(T * D), q = take(T * D), k = take(T * kvd), v = take(T * kvd), att = take(T * D), o = take(T * D);
    g = take(T * c.ffn), u = take(T * c.ffn), lora = take(T * ids.lora_rank), lora_out = take(T * ids.lora_out);
    lora_x = take(T * ids.lora_in);
  }
};

// Image rows spliced into a forward: positions [at, at + count) take `rows` (count, hidden), host
// memory — one copy per span (a single upload on a device). Their tokens are < 0.
struct RowSpan {
  int64_t at = 0, count = 0;
  const float* rows = nullptr;
};
using RowSpans = std::vector<RowSpan>;

// The spans of a dense (T, hidden) embeddings array: each run of tokens < 0 takes its rows of it.
inline RowSpans spans_from_dense(const int32_t* tokens, int64_t T, const float* embeddings, int64_t hidden) {
  RowSpans out;
  if (!embeddings) return out;
  for (int64_t t = 0; t < T;) {
    if (tokens[t] >= 0) {
      ++t;
      continue;
    }
    int64_t e = t;
    while (e < T && tokens[e] < 0) ++e;
    out.push_back({t, e - t, embeddings + t * hidden});
    t = e;
  }
  return out;
}

// The spans of `spans` that fall in positions [t0, t0 + n), re-based to t0 (a chunk of a long prompt).
inline RowSpans spans_in(const RowSpans& spans, int64_t t0, int64_t n, int64_t hidden) {
  RowSpans out;
  for (const RowSpan& s : spans) {
    const int64_t a = s.at > t0 ? s.at : t0, b = s.at + s.count < t0 + n ? s.at + s.count : t0 + n;
    if (a < b) out.push_back({a - t0, b - a, s.rows + (a - s.at) * hidden});
  }
  return out;
}

// One sequence's f16 KV cache in the backend's memory: (layers, capacity, kv_heads · head_dim) each.
struct KvView {
  uint16_t *k = nullptr, *v = nullptr;
  int64_t capacity = 0, n_past = 0;
};

// The input a LoRA pair reads: x itself, or (training with dropout) x under the linear's mask in s.lora_x
template <class Ops>
const float* lora_input(Ops& ops, const LlmIds::Linear& l, const float* x, int64_t n, LlmScratch& s) {
  if (s.lora_dropout <= 0) return x;
  ops.dropout(x, s.lora_x, n, s.lora_dropout, dropout_linear_seed(s.dropout_step, l.lora_a));
  return s.lora_x;
}

// out(T, w.rows) = x · Wᵀ (+ scale · B (A dropout(x)))
template <class Ops>
void llm_linear(Ops& ops, const std::vector<WeightView>& W, const LlmIds& ids, const LlmIds::Linear& l, const float* x, int64_t T,
                float* out, LlmScratch& s) {
  const WeightView w = W[(size_t)l.w];
  ops.matmul(x, w, WeightView{}, out, T, Activation::None);
  if (l.lora_a < 0) return;
  const WeightView a = W[(size_t)l.lora_a], b = W[(size_t)l.lora_b];
  ops.matmul(lora_input(ops, l, x, T * a.cols, s), a, WeightView{}, s.lora, T, Activation::None);
  ops.matmul(s.lora, b, WeightView{}, s.lora_out, T, Activation::None);
  ops.residual(out, s.lora_out, nullptr, ids.lora_scale, T * w.rows, w.rows);
}

// Where one layer reads and writes. Inference passes one set for every layer, in place (x_in =
// x_mid = x_out, h1 = h2, gu = g, no statistics); a training forward passes the layer's own saved
// buffers (LlmActivations), so that backward finds what it needs.
struct LlmLayerIO {
  const float* x_in = nullptr;  // (N, hidden) the layer's input
  float* x_mid = nullptr;       // (N, hidden) after the attention residual
  float* x_out = nullptr;       // (N, hidden) after the MLP residual
  float *h1 = nullptr, *h2 = nullptr;      // (N, hidden) the RMSNorm outputs
  float *rstd1 = nullptr, *rstd2 = nullptr;  // (N) their 1/rms (null: not kept)
  float *q = nullptr, *k = nullptr, *v = nullptr, *att = nullptr;  // (N, ·) q, k, v after RoPE; attention output
  float *g = nullptr, *u = nullptr, *gu = nullptr;  // (N, ffn) gate (SiLU's pre-activation), up, silu(g)·u
  float* o = nullptr;           // (N, hidden) scratch: the o / down projections before their residual
};

// One decoder layer over N rows; `attend(q, k, v, att)` does RoPE, caching and attention (the only
// part inference and training do differently).
template <class Ops, class Attend>
void llm_layer(Ops& ops, const LlmConfig& c, const LlmIds& ids, const std::vector<WeightView>& W, const LlmIds::Layer& L, int64_t N,
               const LlmLayerIO& io, LlmScratch& s, Attend&& attend) {
  const int64_t D = c.hidden;
  ops.rmsnorm(io.x_in, W[(size_t)L.attn_norm], io.h1, N, D, c.rms_eps, io.rstd1);
  llm_linear(ops, W, ids, L.wq, io.h1, N, io.q, s);
  llm_linear(ops, W, ids, L.wk, io.h1, N, io.k, s);
  llm_linear(ops, W, ids, L.wv, io.h1, N, io.v, s);
  attend(io.q, io.k, io.v, io.att);
  llm_linear(ops, W, ids, L.wo, io.att, N, io.o, s);
  if (io.x_mid != io.x_in) ops.copy(io.x_mid, io.x_in, N * D);
  ops.residual(io.x_mid, io.o, nullptr, 1.0f, N * D, D);
  // SwiGLU MLP
  ops.rmsnorm(io.x_mid, W[(size_t)L.ffn_norm], io.h2, N, D, c.rms_eps, io.rstd2);
  llm_linear(ops, W, ids, L.w_gate, io.h2, N, io.g, s);
  llm_linear(ops, W, ids, L.w_up, io.h2, N, io.u, s);
  ops.silu_mul(io.g, io.u, io.gu, N * c.ffn);
  llm_linear(ops, W, ids, L.w_down, io.gu, N, io.o, s);
  if (io.x_out != io.x_mid) ops.copy(io.x_out, io.x_mid, N * D);
  ops.residual(io.x_out, io.o, nullptr, 1.0f, N * D, D);
}

// Embeds `tokens` (host) into x (N, hidden); the positions of `images` take their rows (spliced image
// features). Tokens and spans are valid here (the caller checked them).
template <class Ops>
void llm_embed(Ops& ops, const LlmConfig& c, const LlmIds& ids, const std::vector<WeightView>& W, const int32_t* tokens,
               const RowSpans& images, int64_t N, float* x) {
  std::vector<int32_t> rows((size_t)N);
  for (int64_t t = 0; t < N; ++t) rows[(size_t)t] = tokens[t] < 0 ? 0 : tokens[t];
  ops.embed(W[(size_t)ids.embed], rows.data(), x, N);
  for (const RowSpan& s : images) ops.from_host(x + s.at * c.hidden, s.rows, s.count * c.hidden);
}

// Inference: embeds `tokens` and runs every layer, appending K and V at kv.n_past. Leaves the
// residual stream in s.x.
template <class Ops>
void llm_blocks(Ops& ops, const LlmConfig& c, const LlmIds& ids, const std::vector<WeightView>& W, const int32_t* tokens,
                const RowSpans& images, int64_t T, LlmScratch& s, const KvView& kv) {
  const int64_t hd = c.hidden / c.heads, kvd = c.kv_heads * hd;
  llm_embed(ops, c, ids, W, tokens, images, T, s.x);
  LlmLayerIO io;
  io.x_in = io.x_mid = io.x_out = s.x;
  io.h1 = io.h2 = s.h;
  io.q = s.q, io.k = s.k, io.v = s.v, io.att = s.att, io.o = s.o;
  io.g = io.gu = s.g, io.u = s.u;  // SiLU·mul in place
  const size_t layer_stride = (size_t)(kv.capacity * kvd);
  for (int64_t l = 0; l < c.layers; ++l) {
    uint16_t* kc = kv.k + (size_t)l * layer_stride;
    uint16_t* vc = kv.v + (size_t)l * layer_stride;
    llm_layer(ops, c, ids, W, ids.layers[(size_t)l], T, io, s, [&](float* q, float* k, float* v, float* att) {
      ops.rope(q, T, c.heads, hd, kv.n_past, c.rope_theta, c.rope_mode);
      ops.rope(k, T, c.kv_heads, hd, kv.n_past, c.rope_theta, c.rope_mode);
      ops.kv_append(k, kc, kv.n_past, T, kvd);
      ops.kv_append(v, vc, kv.n_past, T, kvd);
      ops.attention_cached(q, kc, vc, att, T, kv.n_past, c.heads, c.kv_heads, hd);
    });
  }
}

// ---- training forward -----------------------------------------------------------------------------
// The activation table of a training forward over B sequences of T positions (N = B·T rows; padded
// sequences are causal within themselves, their padding masked by the labels), sized up front from
// (B, T, layers). Per layer it keeps what backward needs: the layer input, both RMSNorm statistics,
// q / k / v after RoPE, the attention output and its log-sum-exp, the MLP's gate and up (SiLU's
// pre-activations) and silu(g)·u. A layer marked `recompute` (activation checkpointing) keeps only
// its input; its other buffers alias one shared set, which backward refills by running the layer
// again. The residual stream after the last layer and the final norm close the table (the logits are
// never kept whole: llm_loss_head makes them chunk by chunk).
struct LlmActivations {
  struct Layer {
    LlmLayerIO io;     // x_in is the layer's saved input; x_mid, …, gu: its saved activations
    float* lse = nullptr;  // (B, heads, T)
    bool recompute = false;
  };
  int64_t B = 0, T = 0;
  std::vector<Layer> layers;
  float *x_final = nullptr, *rstd_final = nullptr, *h_final = nullptr;  // (N, hidden), (N), (N, hidden)
  LlmScratch s;             // LoRA scratch (its other buffers unused)
  const CancelToken* cancel = nullptr;  // checked before each layer, forward and backward (null: none)

  // floats of the table for this shape; recompute[l] marks the checkpointed layers (empty: none)
  static int64_t floats(const LlmConfig& c, const LlmIds& ids, int64_t B, int64_t T, const std::vector<bool>& recompute) {
    const int64_t N = B * T, kept = per_layer(c, B, T);
    int64_t n = 0, shared = 0;
    for (int64_t l = 0; l < c.layers; ++l) {
      n += N * c.hidden;  // the input, always
      if (is_recompute(recompute, l)) shared = kept; else n += kept;
    }
    return n + shared + N * (2 * c.hidden + 1) + N * c.hidden + N * (ids.lora_rank + ids.lora_out + ids.lora_in);
  }
  // carves the table out of `p` (floats(…) floats); returns the end of what it used
  float* carve(float* p, const LlmConfig& c, const LlmIds& ids, int64_t B_, int64_t T_, const std::vector<bool>& recompute) {
    B = B_, T = T_;
    const int64_t N = B * T, D = c.hidden, kvd = c.kv_heads * (D / c.heads);
    auto take = [&](int64_t n) { float* r = p; p += n; return r; };
    auto fill = [&](Layer& y) {  // every saved buffer but the input
      LlmLayerIO& io = y.io;
      io.x_mid = take(N * D), io.h1 = take(N * D), io.h2 = take(N * D), io.rstd1 = take(N), io.rstd2 = take(N);
      io.q = take(N * D), io.k = take(N * kvd), io.v = take(N * kvd), io.att = take(N * D);
      io.g = take(N * c.ffn), io.u = take(N * c.ffn), io.gu = take(N * c.ffn);
      y.lse = take(B * c.heads * T);
    };
    layers.assign((size_t)c.layers, Layer{});
    Layer shared;
    bool have_shared = false;
    for (int64_t l = 0; l < c.layers; ++l) {
      Layer& y = layers[(size_t)l];
      y.io.x_in = take(N * D);
      y.recompute = is_recompute(recompute, l);
      if (!y.recompute) {
        const float* x_in = y.io.x_in;
        fill(y);
        y.io.x_in = x_in;
      }
    }
    for (int64_t l = 0; l < c.layers; ++l) {
      Layer& y = layers[(size_t)l];
      if (!y.recompute) continue;
      if (!have_shared) fill(shared), have_shared = true;
      const float* x_in = y.io.x_in;
      y.io = shared.io;
      y.io.x_in = x_in;
      y.lse = shared.lse;
    }
    x_final = take(N * D), rstd_final = take(N), h_final = take(N * D);
    float* o = take(N * D);  // the o / down projections before their residual: scratch, not kept
    s.lora = take(N * ids.lora_rank), s.lora_out = take(N * ids.lora_out), s.lora_x = take(N * ids.lora_in);
    for (Layer& y : layers) y.io.o = o;
    // each layer writes its output into the next one's input; the last into x_final
    for (int64_t l = 0; l < c.layers; ++l)
      layers[(size_t)l].io.x_out = l + 1 < c.layers ? const_cast<float*>(layers[(size_t)l + 1].io.x_in) : x_final;
    return p;
  }

 private:
  // what a kept layer stores besides its input
  static int64_t per_layer(const LlmConfig& c, int64_t B, int64_t T) {
    const int64_t N = B * T, D = c.hidden, kvd = c.kv_heads * (D / c.heads);
    return N * (3 * D + 2 + D + 2 * kvd + D + 3 * c.ffn) + B * c.heads * T;
  }
  static bool is_recompute(const std::vector<bool>& r, int64_t l) { return (size_t)l < r.size() && r[(size_t)l]; }
};

// A training forward's attention (llm_layer's `attend`): each of the B sequences on its own, RoPE from
// position 0 and causal within it over f32 K, V, keeping each row's log-sum-exp in lse (B, heads, T).
template <class Ops>
auto llm_train_attend(Ops& ops, const LlmConfig& c, int64_t B, int64_t T, float* lse) {
  return [&ops, &c, B, T, lse](float* q, float* k, float* v, float* att) {
    const int64_t D = c.hidden, hd = D / c.heads, kvd = c.kv_heads * hd;
    for (int64_t b = 0; b < B; ++b) {
      float *qb = q + b * T * D, *kb = k + b * T * kvd;
      ops.rope(qb, T, c.heads, hd, 0, c.rope_theta, c.rope_mode);
      ops.rope(kb, T, c.kv_heads, hd, 0, c.rope_theta, c.rope_mode);
      ops.attention_causal(qb, kb, v + b * T * kvd, att + b * T * D, lse + b * c.heads * T, T, c.heads, c.kv_heads, hd);
    }
  };
}

// The training forward: B sequences of T tokens (host, (B, T); the positions of `images`, counted
// over all B·T, take those rows) through the same layer code as inference, each sequence causal over
// its own positions 0 … T−1 with f32 K and V, filling the activation table up to the final norm.
template <class Ops>
void llm_forward_train(Ops& ops, const LlmConfig& c, const LlmIds& ids, const std::vector<WeightView>& W, const int32_t* tokens,
                       const RowSpans& images, LlmActivations& A) {
  const int64_t B = A.B, T = A.T, N = B * T, D = c.hidden;
  llm_embed(ops, c, ids, W, tokens, images, N, const_cast<float*>(A.layers[0].io.x_in));
  for (int64_t l = 0; l < c.layers; ++l) {
    check_cancel(A.cancel);
    LlmActivations::Layer& y = A.layers[(size_t)l];
    llm_layer(ops, c, ids, W, ids.layers[(size_t)l], N, y.io, A.s, llm_train_attend(ops, c, B, T, y.lse));
  }
  ops.rmsnorm(A.x_final, W[(size_t)ids.norm], A.h_final, N, D, c.rms_eps, A.rstd_final);
}

// logits(rows, vocab) of the residual stream's rows [first, first + rows) after llm_blocks
template <class Ops>
void llm_head(Ops& ops, const LlmConfig& c, const LlmIds& ids, const std::vector<WeightView>& W, int64_t first, int64_t rows,
              LlmScratch& s, float* logits) {
  ops.rmsnorm(s.x + first * c.hidden, W[(size_t)ids.norm], s.h, rows, c.hidden, c.rms_eps);
  llm_linear(ops, W, ids, ids.lm_head, s.h, rows, logits, s);
}

// ---- backward --------------------------------------------------------------------------------------
// Gradients of the parameters, indexed by id like the views: where backward accumulates (+=) each
// trainable parameter's gradient, in the backend's memory; null for a frozen one (no dW computed).
using GradViews = std::vector<float*>;

// The gradient buffers of the LLM's backward over N rows (backend memory), each (N, width).
struct LlmGradScratch {
  float *dx = nullptr;   // the residual stream's gradient (N, hidden)
  float *dh = nullptr;   // a sub-block's normed input (N, hidden)
  float *dq = nullptr, *dk = nullptr, *dv = nullptr, *datt = nullptr;  // (N, hidden), (N, kv) ×2, (N, hidden)
  float *dg = nullptr, *du = nullptr, *dgu = nullptr;                   // (N, ffn)
  float *dlora = nullptr;                                               // (N, lora_rank)
  float *dlora_x = nullptr;                                             // (N, lora_in): d(dropout(x)) of a LoRA branch
  static int64_t floats(const LlmConfig& c, const LlmIds& ids, int64_t N) {
    const int64_t kvd = c.kv_heads * (c.hidden / c.heads);
    return N * (4 * c.hidden + 2 * kvd + 3 * c.ffn + ids.lora_rank + ids.lora_in);
  }
  float* carve(float* p, const LlmConfig& c, const LlmIds& ids, int64_t N) {
    const int64_t D = c.hidden, kvd = c.kv_heads * (D / c.heads);
    auto take = [&](int64_t n) { float* r = p; p += n; return r; };
    dx = take(N * D), dh = take(N * D), dq = take(N * D), dk = take(N * kvd), dv = take(N * kvd), datt = take(N * D);
    dg = take(N * c.ffn), du = take(N * c.ffn), dgu = take(N * c.ffn), dlora = take(N * ids.lora_rank), dlora_x = take(N * ids.lora_in);
    return p;
  }
};

// C(M, N) = alpha · op(A) · op(B) + beta · C over f32 / stored-type operands (ops.h: GemmArgs)
template <class Ops>
void llm_gemm(Ops& ops, const float* a, bool ta, const void* b, DType bt, bool tb, float* c, int64_t M, int64_t N, int64_t K, float alpha,
              float beta) {
  GemmArgs g;
  g.a = a, g.trans_a = ta, g.lda = ta ? M : K;
  g.b = b, g.b_type = bt, g.trans_b = tb, g.ldb = tb ? K : N;
  g.c = c, g.ldc = N, g.M = M, g.N = N, g.K = K, g.alpha = alpha, g.beta = beta;
  ops.gemm(g);
}

// Backward of one linear out = x · Wᵀ (+ bias) over T rows: dx (T, w.cols) += dy · W (dx null: not
// needed), dW += dyᵀ · x and db += Σ dy where those parameters train. W may be any stored type (a
// frozen quantized / f16 / bf16 base: only dx is computed through it).
template <class Ops>
void linear_backward(Ops& ops, const WeightView& w, float* dw, float* db, const float* x, const float* dy, float* dx, int64_t T) {
  if (dw) llm_gemm(ops, dy, true, x, DType::F32, false, dw, w.rows, w.cols, T, 1.0f, 1.0f);
  if (db) ops.bias_backward(dy, db, T, w.rows);
  if (dx) llm_gemm(ops, dy, false, w.data, w.type, false, dx, T, w.cols, w.rows, 1.0f, 1.0f);
}

// Backward of llm_linear: the base weight and, for a LoRA pair, out += scale · B (A x̃) with x̃ = x or
// dropout(x) (its mask regenerated from the same seed): A x̃ is recomputed (rank r is small),
// dB += scale · dyᵀ (A x̃), d(Ax̃) = scale · dy B, dA += d(Ax̃)ᵀ x̃, dx += dropout(d(Ax̃) A) (the mask is
// its own transpose).
template <class Ops>
void llm_linear_backward(Ops& ops, const std::vector<WeightView>& W, const GradViews& G, const LlmIds& ids, const LlmIds::Linear& l,
                         const float* x, const float* dy, float* dx, int64_t T, LlmScratch& s, LlmGradScratch& gs) {
  const WeightView w = W[(size_t)l.w];
  linear_backward(ops, w, G[(size_t)l.w], nullptr, x, dy, dx, T);
  if (l.lora_a < 0) return;
  const WeightView a = W[(size_t)l.lora_a], b = W[(size_t)l.lora_b];
  float *ga = G[(size_t)l.lora_a], *gb = G[(size_t)l.lora_b];
  const int64_t r = a.rows;
  const float* xa = lora_input(ops, l, x, T * a.cols, s);
  ops.matmul(xa, a, WeightView{}, s.lora, T, Activation::None);  // A x̃ (T, r)
  if (gb) llm_gemm(ops, dy, true, s.lora, DType::F32, false, gb, b.rows, r, T, ids.lora_scale, 1.0f);
  if (!ga && !dx) return;
  llm_gemm(ops, dy, false, b.data, b.type, false, gs.dlora, T, r, b.rows, ids.lora_scale, 0.0f);  // d(Ax̃) (T, r)
  if (ga) llm_gemm(ops, gs.dlora, true, xa, DType::F32, false, ga, r, a.cols, T, 1.0f, 1.0f);
  if (!dx) return;
  if (s.lora_dropout <= 0) return llm_gemm(ops, gs.dlora, false, a.data, a.type, false, dx, T, a.cols, r, 1.0f, 1.0f);
  llm_gemm(ops, gs.dlora, false, a.data, a.type, false, gs.dlora_x, T, a.cols, r, 1.0f, 0.0f);  // d x̃
  ops.dropout(gs.dlora_x, gs.dlora_x, T * a.cols, s.lora_dropout, dropout_linear_seed(s.dropout_step, l.lora_a));
  ops.residual(dx, gs.dlora_x, nullptr, 1.0f, T * a.cols, a.cols);
}

// Backward of one decoder layer (llm_layer) over B sequences of T rows: gs.dx holds the gradient of
// the layer's output on entry and of its input on exit; the layer's parameter gradients accumulate
// into G. `io` / `lse` are the layer's saved activations (refilled first when it was checkpointed).
template <class Ops>
void llm_layer_backward(Ops& ops, const LlmConfig& c, const LlmIds& ids, const std::vector<WeightView>& W, const GradViews& G,
                        const LlmIds::Layer& L, int64_t B, int64_t T, const LlmLayerIO& io, const float* lse, LlmScratch& s,
                        LlmGradScratch& gs) {
  const int64_t N = B * T, D = c.hidden, hd = D / c.heads, kvd = c.kv_heads * hd, F = c.ffn;
  auto zero = [&](float* p, int64_t n) { ops.fill(p, 0.0f, n); };
  // the MLP: x_out = x_mid + down(silu(gate h2) · up h2), h2 = rmsnorm(x_mid)
  zero(gs.dgu, N * F);
  llm_linear_backward(ops, W, G, ids, L.w_down, io.gu, gs.dx, gs.dgu, N, s, gs);
  zero(gs.dg, N * F), zero(gs.du, N * F);
  ops.silu_mul_backward(gs.dgu, io.g, io.u, gs.dg, gs.du, N * F);
  zero(gs.dh, N * D);
  llm_linear_backward(ops, W, G, ids, L.w_gate, io.h2, gs.dg, gs.dh, N, s, gs);
  llm_linear_backward(ops, W, G, ids, L.w_up, io.h2, gs.du, gs.dh, N, s, gs);
  ops.rmsnorm_backward(gs.dh, io.x_mid, W[(size_t)L.ffn_norm], io.rstd2, gs.dx, G[(size_t)L.ffn_norm], N, D);
  // attention: x_mid = x_in + o(attention(rope(q h1), rope(k h1), v h1)), h1 = rmsnorm(x_in)
  zero(gs.datt, N * D);
  llm_linear_backward(ops, W, G, ids, L.wo, io.att, gs.dx, gs.datt, N, s, gs);
  zero(gs.dq, N * D), zero(gs.dk, N * kvd), zero(gs.dv, N * kvd);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t qo = b * T * D, ko = b * T * kvd;
    ops.attention_backward(io.q + qo, io.k + ko, io.v + ko, io.att + qo, lse + b * c.heads * T, gs.datt + qo, gs.dq + qo, gs.dk + ko,
                           gs.dv + ko, T, c.heads, c.kv_heads, hd, true);
    ops.rope_backward(gs.dq + qo, T, c.heads, hd, 0, c.rope_theta, c.rope_mode);
    ops.rope_backward(gs.dk + ko, T, c.kv_heads, hd, 0, c.rope_theta, c.rope_mode);
  }
  zero(gs.dh, N * D);
  llm_linear_backward(ops, W, G, ids, L.wq, io.h1, gs.dq, gs.dh, N, s, gs);
  llm_linear_backward(ops, W, G, ids, L.wk, io.h1, gs.dk, gs.dh, N, s, gs);
  llm_linear_backward(ops, W, G, ids, L.wv, io.h1, gs.dv, gs.dh, N, s, gs);
  ops.rmsnorm_backward(gs.dh, io.x_in, W[(size_t)L.attn_norm], io.rstd1, gs.dx, G[(size_t)L.attn_norm], N, D);
}

// ---- the loss head -------------------------------------------------------------------------------
// The lm_head and the cross-entropy fused, chunk by chunk over only the rows that have a target: the
// rows of each chunk (packed when they are not one contiguous run) go through the lm_head, the
// cross-entropy op turns their logits into the loss's gradient in place, and the lm_head's backward
// runs at once (dh rows += dlogits · W, dW += dlogitsᵀ · h when it trains). So the (N, vocab) logits
// never exist, and prompt / image / padding rows (label −100) cost no vocabulary GEMM at all.
struct LossHeadScratch {
  int64_t rows = 0;  // rows per chunk
  float *h = nullptr, *dh = nullptr, *logits = nullptr, *weights = nullptr, *losses = nullptr;
  static int64_t floats(const LlmConfig& c, int64_t rows) { return rows * (2 * c.hidden + c.vocab + 2); }
  float* carve(float* p, const LlmConfig& c, int64_t rows_) {
    rows = rows_;
    auto take = [&](int64_t n) { float* r = p; p += n; return r; };
    h = take(rows * c.hidden), dh = take(rows * c.hidden), logits = take(rows * c.vocab), weights = take(rows), losses = take(rows);
    return p;
  }
};

// Rows per loss-head chunk: `requested` when > 0, else as many as keep a chunk's logits within
// 8 Mi floats (32 MiB); never more than the `count` rows that have a target.
inline int64_t loss_head_rows(const LlmConfig& c, int64_t count, int64_t requested) {
  if (count <= 0) return 0;
  const int64_t r = requested > 0 ? requested : std::max<int64_t>(1, (int64_t(1) << 23) / std::max<int64_t>(1, c.vocab));
  return std::min(r, count);
}

// The loss head after llm_forward_train over N = B·T rows: targets (host, N; −100 ignored) and their
// weights (host, N); each target's loss gradient is scaled by `scale`. Leaves gs.dh holding
// d(h_final) (zero on rows without a target) for llm_backward_train; returns the sum of the targets'
// weighted losses, in row order.
template <class Ops>
double llm_loss_head(Ops& ops, const LlmConfig& c, const LlmIds& ids, const std::vector<WeightView>& W, const GradViews& G,
                     LlmActivations& A, const int32_t* targets, const float* weights, float scale, LossHeadScratch& ls,
                     LlmGradScratch& gs) {
  const int64_t N = A.B * A.T, D = c.hidden;
  ops.fill(gs.dh, 0.0f, N * D);
  struct Run {
    int64_t row = 0, len = 0, at = 0;  // rows [row, row + len) of the batch, packed at `at` in the chunk
  };
  std::vector<Run> runs;  // the rows that have a target, as contiguous runs
  for (int64_t n = 0; n < N; ++n)
    if (targets[n] >= 0) {
      if (!runs.empty() && runs.back().row + runs.back().len == n) ++runs.back().len;
      else runs.push_back({n, 1, 0});
    }
  double sum = 0;
  std::vector<int32_t> tg;
  std::vector<float> wt, loss;
  size_t ri = 0;
  int64_t off = 0;  // rows of runs[ri] already done
  while (ri < runs.size() && ls.rows > 0) {
    check_cancel(A.cancel);
    std::vector<Run> chunk;
    int64_t n = 0;
    while (ri < runs.size() && n < ls.rows) {
      const int64_t len = std::min(runs[ri].len - off, ls.rows - n);
      chunk.push_back({runs[ri].row + off, len, n});
      n += len, off += len;
      if (off == runs[ri].len) ++ri, off = 0;
    }
    tg.resize((size_t)n), wt.resize((size_t)n), loss.resize((size_t)n);
    for (const Run& r : chunk)
      for (int64_t i = 0; i < r.len; ++i) tg[(size_t)(r.at + i)] = targets[r.row + i], wt[(size_t)(r.at + i)] = weights[r.row + i];
    const bool one = chunk.size() == 1;  // one contiguous run: read h_final and write dh in place
    const float* h = one ? A.h_final + chunk[0].row * D : ls.h;
    float* dh = one ? gs.dh + chunk[0].row * D : ls.dh;
    if (!one) {
      for (const Run& r : chunk) ops.copy(ls.h + r.at * D, A.h_final + r.row * D, r.len * D);
      ops.fill(ls.dh, 0.0f, n * D);
    }
    llm_linear(ops, W, ids, ids.lm_head, h, n, ls.logits, A.s);
    ops.from_host(ls.weights, wt.data(), n);
    ops.cross_entropy(ls.logits, tg.data(), ls.weights, ls.losses, n, c.vocab, scale);
    ops.to_host(loss.data(), ls.losses, n);
    for (float x : loss) sum += x;
    llm_linear_backward(ops, W, G, ids, ids.lm_head, h, ls.logits, dh, n, A.s, gs);
    if (!one)
      for (const Run& r : chunk) ops.copy(gs.dh + r.row * D, ls.dh + r.at * D, r.len * D);
  }
  return sum;
}

// The backward pass after llm_forward_train and llm_loss_head (gs.dh holds d(h_final)): the final
// norm, then the layers from the last down to `lowest` (layers below it have nothing that trains and
// nothing below them needs a gradient; 0: all), re-running a checkpointed layer's forward first. Then
// the embedding gather's gradient (when embed_tokens trains; a tied lm_head's lands in the same rows)
// — gs.dx is left holding d(input rows): the rows of spliced images are what the projector's backward
// reads.
template <class Ops>
void llm_backward_train(Ops& ops, const LlmConfig& c, const LlmIds& ids, const std::vector<WeightView>& W, const GradViews& G,
                        const int32_t* tokens, LlmActivations& A, LlmGradScratch& gs, int64_t lowest) {
  const int64_t B = A.B, T = A.T, N = B * T, D = c.hidden;
  ops.fill(gs.dx, 0.0f, N * D);
  ops.rmsnorm_backward(gs.dh, A.x_final, W[(size_t)ids.norm], A.rstd_final, gs.dx, G[(size_t)ids.norm], N, D);
  for (int64_t l = c.layers - 1; l >= lowest && l >= 0; --l) {
    check_cancel(A.cancel);
    LlmActivations::Layer& y = A.layers[(size_t)l];
    if (y.recompute) {  // refill the shared buffers: the same forward, writing the same next input
      llm_layer(ops, c, ids, W, ids.layers[(size_t)l], N, y.io, A.s, llm_train_attend(ops, c, B, T, y.lse));
    }
    llm_layer_backward(ops, c, ids, W, G, ids.layers[(size_t)l], B, T, y.io, y.lse, A.s, gs);
  }
  if (lowest <= 0 && G[(size_t)ids.embed]) ops.embed_backward(gs.dx, tokens, G[(size_t)ids.embed], N, D);
}

}  // namespace medllava
