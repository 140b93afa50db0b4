// The list of ops: one declaration each, shapes in comments. An op of stem S lives in four places —
// this declaration, its CPU code in native/cpu/S.cc, its CUDA kernel and launcher in
// native/cuda/S.cuh, and its entry in native/ops/op_list.h, through which the one test harness
// (native/napi/op_harness.h) runs it on every backend. The graphs call ops through CpuOps
// (native/cpu/ops_cpu.h) and CudaOps (native/cuda/ops_cuda.cuh), which have the same methods.
// defines: MatmulArgs, GemmArgs, RopeMode, SampleOptions, SampleResult and every <op>_cpu, by stem:
// matmul (+ gemm, repack), norm, rope, activation, attention, elements, topk, the roofline, sampling.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "../core/dtype.h"
#include "activation.h"  // defines: Activation, apply_activation
#include "dropout.h"     // defines: dropout_keep, dropout_linear_seed

namespace medllava {

// ---- matmul: native/cpu/matmul.cc (float paths, dispatch) + matmul_quant.cc (GGML blocks), native/cuda/matmul.cuh
struct MatmulArgs {
  const float* a = nullptr;     // (M, K) row-major activations
  const void* w = nullptr;      // (N, K) row-major, as PyTorch's Linear stores it; dtype w_type
  DType w_type = DType::F32;
  const uint8_t* w_x16 = nullptr;  // optional: w (Q8_0 / Q4_0) repacked by repack_x16, used where AVX-512 VNNI is
  const float* bias = nullptr;  // (N) or null
  float* out = nullptr;         // (M, N)
  int64_t M = 0, N = 0, K = 0;
  Activation act = Activation::None;
  // The GEMM's general forms (gemm_cpu), read by the blocked AVX2 / AVX-512 kernel only, so that a
  // backward's transposed operands are read in place instead of copied: a_t — a is stored (K, M);
  // lda — a's row stride (0: its row length); w_t — w (f32) is stored (K, N); ldw — w's row stride
  // (0: its row length); ldc — out's row stride (0: N); accumulate — out += a · wᵀ.
  bool a_t = false, w_t = false, accumulate = false;
  int64_t lda = 0, ldw = 0, ldc = 0;
};

// out = act(a · wᵀ + bias). fp32 accumulation.
void matmul_cpu(const MatmulArgs& args);

// The general GEMM that backward passes need: C(M, N) = alpha · op(A) · op(B) + beta · C.
//   op(A) is (M, K): A stored (M, K) with rows lda apart, or (K, M) when trans_a (A's rows are then
//   K of length ≥ M). op(B) is (K, N): B stored (K, N) with rows ldb apart, or (N, K) when trans_b —
//   PyTorch's Linear weight, so a forward is trans_b = true. B is f32 / f16 / bf16 or GGML blocks
//   (block types: B's rows are whole blocks). beta = 0 ignores what C held (NaN included).
//   dX = dY · W:  A = dY (M, N_out), B = W (N_out, K_in), no transposes
//   dW += dYᵀ · X: A = dY (M, N_out) trans_a, B = X (M, K_in), beta = 1
struct GemmArgs {
  const float* a = nullptr;
  int64_t lda = 0;
  bool trans_a = false;
  const void* b = nullptr;
  DType b_type = DType::F32;
  int64_t ldb = 0;
  bool trans_b = false;
  float* c = nullptr;
  int64_t ldc = 0;
  int64_t M = 0, N = 0, K = 0;
  float alpha = 1, beta = 0;
};
void gemm_cpu(const GemmArgs& g);
// E_SHAPE unless the strides and block alignment fit the shapes (shared by both backends).
void gemm_check(const GemmArgs& g);

// GGML block weights (N, K) — Q8_0, Q4_0, Q4_K, Q6_K — interleaved for AVX-512 VNNI: per group of
// 16 rows and per 32-value block, f16 scale vectors (Q4_K: d·sc and dmin·m; Q6_K: the two per-16
// scales), then the unsigned values as 4-byte runs of the 16 rows (what one vpdpbusd multiplies
// against one broadcast run of activations): Q8_0 as q + 128, the 4-bit types as nibble pairs, Q6_K
// as its 6-bit values. As many bytes as the blocks for Q8_0 / Q4_0, 11 % more for Q4_K, 37 % more
// for Q6_K. Null when this CPU has no AVX-512 VNNI or the type is another; matmul_cpu then reads w.
// A buffer of repacked weights (64-byte aligned; transparent huge pages were tried: compaction stalls
// made loading slower on average); null when not repacked.
using PackedWeights = std::shared_ptr<const uint8_t>;
PackedWeights repack_x16(const void* w, DType type, int64_t N, int64_t K);
bool cpu_has_vnni();
// The plain scalar twin, always compiled (the fallback when AVX2/FMA/F16C are absent).
void matmul_cpu_scalar(const MatmulArgs& args);

// ---- norm: native/cpu/norm.cc, native/cuda/norm.cuh ----------------------------------------------
// out(T, D) = x(T, D) / sqrt(mean(x²) + eps) · w(D)     (LLaMA's RMSNorm; out may alias x)
//   rstd(T), when given, keeps 1 / sqrt(mean(x²) + eps) per row (what backward needs)
void rmsnorm_cpu(const float* x, const float* w, float* out, int64_t T, int64_t D, float eps, float* rstd = nullptr);

// out(T, D) = (x − mean) / sqrt(var + eps) · w + b   (LayerNorm; out may alias x)
// Backward of rmsnorm_cpu, accumulating (+=): dy(T, D), the forward's x(T, D), w(D) and rstd(T) →
//   dx(T, D) += r·(dy ⊙ w) − x·r³/D·Σ_d(dy ⊙ w ⊙ x), dw(D) += Σ_t dy ⊙ x·r (dw null: w is frozen)
void rmsnorm_backward_cpu(const float* dy, const float* x, const float* w, const float* rstd, float* dx, float* dw, int64_t T, int64_t D);
//   mean(T), rstd(T), when given, keep each row's mean and 1 / sqrt(var + eps)
void layernorm_cpu(const float* x, const float* w, const float* b, float* out, int64_t T, int64_t D, float eps, float* mean = nullptr,
                   float* rstd = nullptr);
// Backward of layernorm_cpu, accumulating (+=): with x̂ = (x − mean)·rstd and g = dy ⊙ w,
//   dx(T, D) += rstd·(g − mean_d(g) − x̂·mean_d(g ⊙ x̂)), dw(D) += Σ_t dy ⊙ x̂, db(D) += Σ_t dy
//   (dw / db null: frozen)
void layernorm_backward_cpu(const float* dy, const float* x, const float* w, const float* mean, const float* rstd, float* dx, float* dw,
                            float* db, int64_t T, int64_t D);

// ---- rope: native/cpu/rope.cc, native/cuda/rope.cuh -----------------------------------------------
enum class RopeMode {
  Half,      // HF / GPT-NeoX: rotates the pairs (i, i + d/2) of each head
  Adjacent,  // llama.cpp on GGUF weights (whose q/k rows are permuted): pairs (2i, 2i + 1)
};
// x(T, heads, head_dim) rotated in place; token t is at position pos0 + t; frequency θ^(-2i/d).
void rope_cpu(float* x, int64_t T, int64_t heads, int64_t head_dim, int64_t pos0, float theta, RopeMode mode);
// Backward of rope_cpu: the gradient dx(T, heads, head_dim) rotated back in place (the transpose of
// a rotation is the rotation by −angle).
void rope_backward_cpu(float* dx, int64_t T, int64_t heads, int64_t head_dim, int64_t pos0, float theta, RopeMode mode);

// ---- activation: native/cpu/activation.cc, native/cuda/activation.cuh ------------------------------
// out(T, D) = silu(gate(T, D)) · up(T, D)
void silu_mul_cpu(const float* gate, const float* up, float* out, int64_t n);
// Backward of silu_mul_cpu, accumulating (+=): dg(n) += dout·u·silu'(g), du(n) += dout·silu(g)
void silu_mul_backward_cpu(const float* dout, const float* gate, const float* up, float* dgate, float* dup, int64_t n);

// out(n) = act(x(n))                                (GELU / quick_gelu; out may alias x)
void activation_cpu(const float* x, float* out, int64_t n, Activation act);
// Backward of activation_cpu, accumulating: dx(n) += dout(n) · act'(x(n))
void activation_backward_cpu(const float* dout, const float* x, float* dx, int64_t n, Activation act);

// ---- attention: native/cpu/attention.cc, native/cuda/attention.cuh ---------------------------------
// Causal attention of T new queries against a cache holding n_past + T positions (f16).
//   q(T, H, hd); k_cache, v_cache (ctx, KVH, hd) f16 rows; out(T, H, hd). Query head h reads KV
//   head h / (H / KVH) (grouped-query attention). Query t sees positions 0 … n_past + t.
void attention_cached_cpu(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, float* out, int64_t T,
                          int64_t n_past, int64_t H, int64_t KVH, int64_t hd);
// The plain scalar twin (the fallback, and the reference the fast one is tested against).
void attention_cached_scalar(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, float* out, int64_t T,
                             int64_t n_past, int64_t H, int64_t KVH, int64_t hd);

// One sequence's causal attention over its own f32 keys and values (a training forward: no cache).
//   q(T, H, hd), k, v (T, KVH, hd), out(T, H, hd); query t sees keys 0 … t; query head h reads KV head
//   h / (H / KVH). lse(H, T), when given: log Σ_{s ≤ t} exp(q_t·k_s / √hd), what backward needs.
void attention_causal_cpu(const float* q, const float* k, const float* v, float* out, float* lse, int64_t T, int64_t H, int64_t KVH,
                          int64_t hd);

// Full (non-causal) attention, as a ViT's: q, k, v (T, H, hd) → out (T, H, hd).
//   lse(H, T), when given: each query row's log Σ exp(q·k / √hd), what backward needs
void attention_full_cpu(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t H, int64_t hd, float* lse = nullptr);

// Backward of attention_causal_cpu (causal = true) or attention_full_cpu (causal = false, KVH = H),
// accumulating into dq(T, H, hd), dk, dv (T, KVH, hd): the probabilities are recomputed from q, k
// and the forward's lse(H, T) (no T×T matrix kept), D_t = Σ dout_t ⊙ out_t per query row, and
//   dS = P ⊙ (dout·vᵀ − D),  dq += dS·k/√hd,  dk += dSᵀ·q/√hd,  dv += Pᵀ·dout
// summed over the query heads of each KV head group.
void attention_backward_cpu(const float* q, const float* k, const float* v, const float* out, const float* lse, const float* dout, float* dq,
                            float* dk, float* dv, int64_t T, int64_t H, int64_t KVH, int64_t hd, bool causal);

// ---- elements: native/cpu/elements.cc, native/cuda/elements.cuh -------------------------------------
// h(n) += scale · (gamma ? gamma[i % D] : 1) · a(n)   (the residual add; gamma: timm's LayerScale (D);
//                                                       scale: LoRA's alpha / r, else 1)
void residual_cpu(float* h, const float* a, const float* gamma, float scale, int64_t n, int64_t D);
// Backward of residual_cpu for its added branch, accumulating: da(n) += scale·(γ ⊙) dh(n);
//   dgamma(D) += scale · Σ_rows dh ⊙ a (null: no LayerScale or frozen). dh itself flows on unchanged.
void residual_backward_cpu(const float* dh, const float* a, const float* gamma, float scale, float* da, float* dgamma, int64_t n, int64_t D);
// out(n) = keep(seed, i) ? x(n) / (1 − p) : 0 (dropout.h's mask; out may alias x). Its own backward:
// the same call on the gradient.
void dropout_cpu(const float* x, float* out, int64_t n, float p, uint64_t seed);
// db(N) += Σ_m dy(m, N): a bias's gradient (the column sums, in a fixed order)
void bias_backward_cpu(const float* dy, float* db, int64_t M, int64_t N);
// out(T, D) = rows ids(T) of table (vocab, D) stored as `type`, decoded to f32
void embed_cpu(const void* table, DType type, const int32_t* ids, float* out, int64_t T, int64_t D);
// Backward of the gather: dtable(vocab, D) rows ids(T) += dout(T, D), in token order (ids < 0:
// spliced image rows, skipped). A tied lm_head's gradient lands in the same rows.
void embed_backward_cpu(const float* dout, const int32_t* ids, float* dtable, int64_t T, int64_t D);

// ---- the loss and the optimizer: native/cpu/loss.cc, native/cuda/loss.cuh ------------------------------
// Cross-entropy of logits(N, V) against targets(N) (−100 or any id < 0: ignored), in place:
//   loss(N) = weight_n · (logsumexp(logits_n) − logits_n[target_n]) (0 where ignored), and logits
//   become their gradient scale · weight_n · (softmax(logits_n) − onehot(target_n)) (0 where ignored).
//   weights(N): per-row weights (null: 1). E_ARGUMENT when a target is ≥ V.
void cross_entropy_cpu(float* logits, const int32_t* targets, const float* weights, float* loss, int64_t N, int64_t V, float scale);
// AdamW on n fp32 parameters, PyTorch's torch.optim.AdamW order: g = grad·grad_scale (the clipping
// coefficient), m = β1·m + (1−β1)·g, v = β2·v + (1−β2)·g², p −= lr·wd·p, then
// p −= lr · (m / bc1) / (√(v / bc2) + eps) with bc1 = 1 − β1^t, bc2 = 1 − β2^t.
struct AdamWArgs {
  float lr = 0, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0, grad_scale = 1;
  int64_t step = 1;  // t, from 1
};
void adamw_cpu(float* p, const float* grad, float* m, float* v, int64_t n, const AdamWArgs& a);
// Σ x² of x(n) in double (a gradient's share of the global norm); written to out[0] as a float64.
void sum_squares_cpu(const float* x, int64_t n, double* out);
// cache rows [pos, pos + T) of width `width` ← f16(src (T, width))
void kv_append_cpu(const float* src, uint16_t* cache, int64_t pos, int64_t T, int64_t width);

// ---- topk: native/cpu/topk.cc, native/cuda/topk.cuh --------------------------------------------------
// idx(k), val(k): the k largest of x(n) in order, lower index first among equals, NaN ranked as −inf
void topk_cpu(const float* x, int64_t n, int64_t k, int32_t* idx, float* val);

// ---- the roofline, measured by bench/: native/core/roofline.cc --------------------------------------
// Runs independent FMA chains on `threads` threads for about `ms` milliseconds; returns GFLOP/s.
double measure_fma_peak(int threads, int ms);
// Streams through `bytes` of memory (larger than any cache) on `threads` threads; returns GB/s read.
double measure_read_bandwidth(int threads, int64_t bytes);

// ---- sampling: native/cpu/sample.cc ------------------------------------------------------------------
struct SampleOptions {
  double temperature = 0;         // 0: greedy (the penalised argmax; the filters below are not applied)
  int64_t top_k = 0;              // 0: off
  double top_p = 1;               // 1: off
  double min_p = 0;               // 0: off
  double repetition_penalty = 1;  // 1: off
};
struct SampleResult {
  int32_t token;
  double logprob;  // of `token` under the raw logits' softmax (untempered, unfiltered)
};
// The next token from logits(V): history(H) is what the repetition penalty sees (each token once;
// ids outside [0, V) ignored). `rng` is the mulberry32 state, advanced once per non-greedy draw.
SampleResult sample_cpu(const float* logits, int64_t V, const SampleOptions& o, const int32_t* history, int64_t H, uint32_t* rng);
// mulberry32: the next uniform in [0, 1), advancing *state
double sample_next_uniform(uint32_t* state);

}  // namespace medllava
