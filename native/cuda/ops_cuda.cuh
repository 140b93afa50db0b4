// The op set the model graphs (native/model/*_graph.h) run on a CUDA device — the same methods as
// CpuOps (native/cpu/ops_cpu.h), each launching the kernel of native/cuda/*.cuh it is named after on
// one stream. Buffers are device memory; arguments named "host" are host memory. defines: CudaOps.
#pragma once
#include <cstdint>
#include <vector>

#include "../model/params.h"  // defines: WeightView
#include "../ops/ops.h"
#include "compat.cuh"
#include "device.cuh"       // defines: DeviceMemory
#include "matmul.cuh"       // defines: matmul_launch
#include "kernels.cuh"      // defines: every op launcher

namespace medllava {
namespace cuda {

struct CudaOps {
  DeviceMemory& dev;
  medllava_stream_t st;
  int32_t* ids = nullptr;        // device scratch for embed's ids: at least T of them
  float* partial = nullptr;      // decode attention's split scratch: heads · kMaxSplits · head_dim
  float* ml = nullptr;           //   and heads · kMaxSplits · 2
  static constexpr int kMaxSplits = 64;
  // the floats of scratch a CudaOps over `heads` heads of `hd` needs beyond the ids
  static int64_t scratch_floats(int64_t heads, int64_t hd) { return heads * kMaxSplits * (hd + 2); }

  void matmul(const float* x, const WeightView& w, const WeightView& bias, float* out, int64_t T, Activation act) {
    matmul_launch(x, w.data, w.type, bias ? bias.f32() : nullptr, out, (int)T, (int)w.rows, (int)w.cols, act, MatmulKernel::Auto, st);
  }
  // C = alpha · op(A) · op(B) + beta · C (ops.h: GemmArgs), with scratch from the device for the call
  void gemm(const GemmArgs& g) {
    gemm_check(g);
    float* scratch = static_cast<float*>(dev.alloc((size_t)gemm_scratch_floats(g) * 4));
    gemm_launch(g, scratch, st);
    dev.sync(st);  // the scratch is read until the launches finish
    dev.release(scratch);
  }
  void rmsnorm(const float* x, const WeightView& w, float* out, int64_t T, int64_t D, float eps, float* rstd = nullptr) {
    rmsnorm_launch(x, w.f32(), out, (int)T, (int)D, eps, st, rstd);
  }
  void rmsnorm_backward(const float* dy, const float* x, const WeightView& w, const float* rstd, float* dx, float* dw, int64_t T, int64_t D) {
    rmsnorm_backward_launch(dy, x, w.f32(), rstd, dx, dw, (int)T, (int)D, st);
  }
  void layernorm(const float* x, const WeightView& w, const WeightView& b, float* out, int64_t T, int64_t D, float eps,
                 float* mean = nullptr, float* rstd = nullptr) {
    layernorm_launch(x, w.f32(), b.f32(), out, (int)T, (int)D, eps, st, mean, rstd);
  }
  void layernorm_backward(const float* dy, const float* x, const WeightView& w, const float* mean, const float* rstd, float* dx, float* dw,
                          float* db, int64_t T, int64_t D) {
    layernorm_backward_launch(dy, x, w.f32(), mean, rstd, dx, dw, db, (int)T, (int)D, st);
  }
  void rope(float* x, int64_t T, int64_t heads, int64_t hd, int64_t pos0, float theta, RopeMode mode) {
    rope_launch(x, (int)T, (int)heads, (int)hd, (int)pos0, theta, mode == RopeMode::Adjacent, st);
  }
  void rope_backward(float* dx, int64_t T, int64_t heads, int64_t hd, int64_t pos0, float theta, RopeMode mode) {
    rope_backward_launch(dx, (int)T, (int)heads, (int)hd, (int)pos0, theta, mode == RopeMode::Adjacent, st);
  }
  void silu_mul(const float* gate, const float* up, float* out, int64_t n) { silu_mul_launch(gate, up, out, n, st); }
  void silu_mul_backward(const float* dout, const float* gate, const float* up, float* dgate, float* dup, int64_t n) {
    silu_mul_backward_launch(dout, gate, up, dgate, dup, n, st);
  }
  void activation(const float* x, float* out, int64_t n, Activation act) { activation_launch(x, out, n, act, st); }
  void activation_backward(const float* dout, const float* x, float* dx, int64_t n, Activation act) {
    activation_backward_launch(dout, x, dx, n, act, st);
  }
  void residual(float* h, const float* a, const float* gamma, float scale, int64_t n, int64_t D) {
    residual_launch(h, a, gamma, scale, n, (int)D, st);
  }
  void residual_backward(const float* dh, const float* a, const float* gamma, float scale, float* da, float* dgamma, int64_t n, int64_t D) {
    residual_backward_launch(dh, a, gamma, scale, da, dgamma, n, (int)D, st);
  }
  void bias_backward(const float* dy, float* db, int64_t M, int64_t N) { bias_backward_launch(dy, db, (int)M, (int)N, st); }
  // dtable rows ids(T, host) += dout(T, D), the ids in device scratch for the call
  void embed_backward(const float* dout, const int32_t* host_ids, float* dtable, int64_t T, int64_t D) {
    if (T <= 0 || D <= 0) return;
    int32_t* dev_ids = static_cast<int32_t*>(dev.alloc((size_t)T * 4));
    dev.upload(dev_ids, host_ids, (size_t)T * 4, st);
    embed_backward_launch(dout, dev_ids, dtable, (int)T, (int)D, st);
    dev.sync(st);  // the ids are read until the kernel finishes
    dev.release(dev_ids);
  }
  // targets(N, host), each < V (else E_ARGUMENT, checked here before anything runs, as the CPU does);
  // loss(N) and the logits' gradient in place (ops.h: cross_entropy_cpu)
  void cross_entropy(float* logits, const int32_t* targets, const float* weights, float* loss, int64_t N, int64_t V, float scale) {
    for (int64_t n = 0; n < N; ++n)
      if (targets[n] >= V)
        throw Error(ErrorCode::Argument, "a label (" + std::to_string(targets[n]) + ") is outside the vocabulary of " + std::to_string(V));
    if (N <= 0 || V <= 0) return;
    int32_t* dev_targets = static_cast<int32_t*>(dev.alloc((size_t)N * 4));
    dev.upload(dev_targets, targets, (size_t)N * 4, st);
    cross_entropy_launch(logits, dev_targets, weights, loss, (int)N, (int)V, scale, st);
    dev.sync(st);  // the targets are read until the kernel finishes
    dev.release(dev_targets);
  }
  void adamw(float* p, const float* grad, float* m, float* v, int64_t n, const AdamWArgs& a) { adamw_launch(p, grad, m, v, n, a, st); }
  // Σ x², added to *acc (host): summed on the device in double (a fixed order), then downloaded
  void sum_squares(const float* x, int64_t n, double* acc) {
    if (n <= 0) return;
    const int blocks = sum_squares_blocks(n);
    double* scratch = static_cast<double*>(dev.alloc((size_t)(blocks + 1) * sizeof(double)));  // the partials, then the sum
    sum_squares_launch(x, n, scratch, scratch + blocks, st);
    double sum = 0;
    dev.download(&sum, scratch + blocks, sizeof(double), st);
    dev.sync(st);
    dev.release(scratch);
    *acc += sum;
  }
  // out(T, table.cols) = rows ids(T, host) of table
  void embed(const WeightView& table, const int32_t* host_ids, float* out, int64_t T) {
    dev.upload(ids, host_ids, (size_t)T * 4, st);
    embed_launch(table.data, table.type, ids, out, (int)T, (int)table.cols, st);
  }
  void from_host(float* dst, const float* src, int64_t n) { dev.upload(dst, src, (size_t)n * 4, st); }
  // device → host after everything queued; returns when the floats are there
  void to_host(float* dst, const float* src, int64_t n) { dev.download(dst, src, (size_t)n * 4, st); }
  void copy(float* dst, const float* src, int64_t n) { dev.copy(dst, src, (size_t)n * 4, st); }
  void fill(float* dst, float value, int64_t n) { fill_launch(dst, value, n, st); }
  void dropout(const float* x, float* out, int64_t n, float p, uint64_t seed) { dropout_launch(x, out, n, p, seed, st); }
  void kv_append(const float* src, uint16_t* cache, int64_t pos, int64_t T, int64_t width) {
    kv_append_launch(src, cache, pos, (int)T, (int)width, st);
  }
  // T == 1 (decode): split-K over the cache and a combine; else flash attention, causal from n_past
  void attention_cached(const float* q, const uint16_t* k, const uint16_t* v, float* out, int64_t T, int64_t n_past, int64_t H,
                        int64_t KVH, int64_t hd) {
    check_hd(hd);
    const int n_kv = (int)(n_past + T);
    if (T == 1) {
      int splits = decode_splits(n_kv);
      if (splits > kMaxSplits) splits = kMaxSplits;
      attention_decode_launch<uint16_t>(q, k, v, out, partial, ml, (int)H, (int)KVH, (int)hd, n_kv, splits, st);
    } else {
      flash_attention_launch<uint16_t>(q, k, v, out, (int)T, (int)H, (int)KVH, (int)hd, n_kv, (int)n_past, true, st);
    }
  }
  void attention_full(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t H, int64_t hd, float* lse = nullptr) {
    check_hd(hd);
    flash_attention_launch<float>(q, k, v, out, (int)T, (int)H, (int)H, (int)hd, (int)T, 0, false, st, lse);
  }
  // one sequence's causal attention over its own f32 K, V, with each query row's log-sum-exp
  void attention_causal(const float* q, const float* k, const float* v, float* out, float* lse, int64_t T, int64_t H, int64_t KVH,
                        int64_t hd) {
    check_hd(hd);
    flash_attention_launch<float>(q, k, v, out, (int)T, (int)H, (int)KVH, (int)hd, (int)T, 0, true, st, lse);
  }
  // backward of attention_causal (causal) / attention_full (KVH = H): += into dq, dk, dv, recomputing
  // the probabilities from the forward's lse(H, T); D = Σ dout ⊙ out per row in device scratch for the call
  void attention_backward(const float* q, const float* k, const float* v, const float* out, const float* lse, const float* dout, float* dq,
                          float* dk, float* dv, int64_t T, int64_t H, int64_t KVH, int64_t hd, bool causal) {
    check_hd(hd);
    if (T <= 0 || H <= 0 || hd <= 0) return;
    if (KVH <= 0 || H % KVH != 0)
      throw Error(ErrorCode::Shape, "attention_backward: " + std::to_string(H) + " heads do not split into groups over " + std::to_string(KVH) +
                                        " KV heads");
    float* Dt = static_cast<float*>(dev.alloc((size_t)(H * T) * 4));
    attention_backward_launch(q, k, v, out, lse, dout, dq, dk, dv, Dt, (int)T, (int)H, (int)KVH, (int)hd, causal, st);
    dev.sync(st);  // Dt is read until the launches finish
    dev.release(Dt);
  }
  // idx(k), val(k): the k largest of x(n), on the device
  void topk(const float* x, int64_t n, int64_t k, int32_t* idx, float* val) { topk_launch(x, (int)n, (int)k, idx, val, st); }
  static void check_hd(int64_t hd) {
    if (hd > kMaxHd) throw Error(ErrorCode::Unsupported, "CUDA attention supports head dims up to " + std::to_string(kMaxHd) + ", not " + std::to_string(hd));
  }
};

}  // namespace cuda
}  // namespace medllava
