// The op set the model graphs (native/model/*_graph.h) run on the CPU: each method calls the op of
// native/ops/ops.h it is named after. native/cuda/ops_cuda.cuh has the same methods for a CUDA device.
// defines: CpuOps.
#pragma once
#include <cstdint>
#include <algorithm>
#include <cstring>

#include "../model/params.h"  // defines: WeightView
#include "../ops/ops.h"

namespace medllava {

struct CpuOps {
  // out(T, w.rows) = act(x(T, w.cols) · wᵀ + bias)
  void matmul(const float* x, const WeightView& w, const WeightView& bias, float* out, int64_t T, Activation act) {
    MatmulArgs a;
    a.a = x;
    a.w = w.data;
    a.w_type = w.type;
    a.w_x16 = w.x16;
    a.bias = bias ? bias.f32() : nullptr;
    a.out = out;
    a.M = T;
    a.N = w.rows;
    a.K = w.cols;
    a.act = act;
    matmul_cpu(a);
  }
  // C = alpha · op(A) · op(B) + beta · C (ops.h: GemmArgs)
  void gemm(const GemmArgs& g) { gemm_cpu(g); }
  // rstd(T) / mean(T), when given: the per-row statistics backward needs
  void rmsnorm(const float* x, const WeightView& w, float* out, int64_t T, int64_t D, float eps, float* rstd = nullptr) {
    rmsnorm_cpu(x, w.f32(), out, T, D, eps, rstd);
  }
  void rmsnorm_backward(const float* dy, const float* x, const WeightView& w, const float* rstd, float* dx, float* dw, int64_t T, int64_t D) {
    rmsnorm_backward_cpu(dy, x, w.f32(), rstd, dx, dw, T, D);
  }
  void layernorm(const float* x, const WeightView& w, const WeightView& b, float* out, int64_t T, int64_t D, float eps,
                 float* mean = nullptr, float* rstd = nullptr) {
    layernorm_cpu(x, w.f32(), b.f32(), out, T, D, eps, mean, rstd);
  }
  void layernorm_backward(const float* dy, const float* x, const WeightView& w, const float* mean, const float* rstd, float* dx, float* dw,
                          float* db, int64_t T, int64_t D) {
    layernorm_backward_cpu(dy, x, w.f32(), mean, rstd, dx, dw, db, T, D);
  }
  void rope(float* x, int64_t T, int64_t heads, int64_t hd, int64_t pos0, float theta, RopeMode mode) {
    rope_cpu(x, T, heads, hd, pos0, theta, mode);
  }
  void rope_backward(float* dx, int64_t T, int64_t heads, int64_t hd, int64_t pos0, float theta, RopeMode mode) {
    rope_backward_cpu(dx, T, heads, hd, pos0, theta, mode);
  }
  void silu_mul(const float* gate, const float* up, float* out, int64_t n) { silu_mul_cpu(gate, up, out, n); }
  void silu_mul_backward(const float* dout, const float* gate, const float* up, float* dgate, float* dup, int64_t n) {
    silu_mul_backward_cpu(dout, gate, up, dgate, dup, n);
  }
  void activation(const float* x, float* out, int64_t n, Activation act) { activation_cpu(x, out, n, act); }
  void activation_backward(const float* dout, const float* x, float* dx, int64_t n, Activation act) {
    activation_backward_cpu(dout, x, dx, n, act);
  }
  void residual(float* h, const float* a, const float* gamma, float scale, int64_t n, int64_t D) { residual_cpu(h, a, gamma, scale, n, D); }
  void residual_backward(const float* dh, const float* a, const float* gamma, float scale, float* da, float* dgamma, int64_t n, int64_t D) {
    residual_backward_cpu(dh, a, gamma, scale, da, dgamma, n, D);
  }
  void bias_backward(const float* dy, float* db, int64_t M, int64_t N) { bias_backward_cpu(dy, db, M, N); }
  // dtable rows ids(T, host) += dout(T, D)
  void embed_backward(const float* dout, const int32_t* ids, float* dtable, int64_t T, int64_t D) { embed_backward_cpu(dout, ids, dtable, T, D); }
  // targets(N, host); loss(N) and the logits' gradient in place (ops.h: cross_entropy_cpu)
  void cross_entropy(float* logits, const int32_t* targets, const float* weights, float* loss, int64_t N, int64_t V, float scale) {
    cross_entropy_cpu(logits, targets, weights, loss, N, V, scale);
  }
  void adamw(float* p, const float* grad, float* m, float* v, int64_t n, const AdamWArgs& a) { adamw_cpu(p, grad, m, v, n, a); }
  // Σ x², added to *acc (host)
  void sum_squares(const float* x, int64_t n, double* acc) {
    double s = 0;
    sum_squares_cpu(x, n, &s);
    *acc += s;
  }
  // out(T, table.cols) = rows ids(T, host) of table
  void embed(const WeightView& table, const int32_t* ids, float* out, int64_t T) { embed_cpu(table.data, table.type, ids, out, T, table.cols); }
  void from_host(float* dst, const float* src, int64_t n) { std::memcpy(dst, src, (size_t)n * 4); }
  void to_host(float* dst, const float* src, int64_t n) { std::memcpy(dst, src, (size_t)n * 4); }
  void copy(float* dst, const float* src, int64_t n) { std::memcpy(dst, src, (size_t)n * 4); }
  void fill(float* dst, float value, int64_t n) { std::fill(dst, dst + n, value); }
  void dropout(const float* x, float* out, int64_t n, float p, uint64_t seed) { dropout_cpu(x, out, n, p, seed); }
  void kv_append(const float* src, uint16_t* cache, int64_t pos, int64_t T, int64_t width) { kv_append_cpu(src, cache, pos, T, width); }
  void attention_cached(const float* q, const uint16_t* k, const uint16_t* v, float* out, int64_t T, int64_t n_past, int64_t H,
                        int64_t KVH, int64_t hd) {
    attention_cached_cpu(q, k, v, out, T, n_past, H, KVH, hd);
  }
  // lse(H, T), when given: each query row's log-sum-exp (what backward needs)
  void attention_full(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t H, int64_t hd, float* lse = nullptr) {
    attention_full_cpu(q, k, v, out, T, H, hd, lse);
  }
  void attention_causal(const float* q, const float* k, const float* v, float* out, float* lse, int64_t T, int64_t H, int64_t KVH,
                        int64_t hd) {
    attention_causal_cpu(q, k, v, out, lse, T, H, KVH, hd);
  }
  void attention_backward(const float* q, const float* k, const float* v, const float* out, const float* lse, const float* dout, float* dq,
                          float* dk, float* dv, int64_t T, int64_t H, int64_t KVH, int64_t hd, bool causal) {
    attention_backward_cpu(q, k, v, out, lse, dout, dq, dk, dv, T, H, KVH, hd, causal);
  }
  // idx(k), val(k): the k largest of x(n)
  void topk(const float* x, int64_t n, int64_t k, int32_t* idx, float* val) { topk_cpu(x, n, k, idx, val); }
};

}  // namespace medllava
