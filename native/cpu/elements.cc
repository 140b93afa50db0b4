// Element-wise and gather ops on the CPU (CUDA twins: native/cuda/elements.cuh, same names without
// _launch, same arguments): the residual add, the embedding gather of every stored type, the f16 KV
// append, and the backwards of the residual, a bias and the gather. defines: residual_cpu, embed_cpu,
// kv_append_cpu, residual_backward_cpu, bias_backward_cpu, embed_backward_cpu, dropout_cpu.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "../core/error.h"
#include "../core/thread_pool.h"
#include "../formats/ggml_types.h"
#include "../ops/ops.h"

namespace medllava {

void residual_cpu(float* h, const float* a, const float* gamma, float scale, int64_t n, int64_t D) {
  if (!gamma) {
    if (scale == 1.0f)
      for (int64_t i = 0; i < n; ++i) h[i] += a[i];
    else
      for (int64_t i = 0; i < n; ++i) h[i] += scale * a[i];
    return;
  }
  // row by row (no per-element modulo: this runs on every ViT layer's residuals)
  int64_t i = 0;
  for (; i + D <= n; i += D)
    for (int64_t d = 0; d < D; ++d) h[i + d] += scale * gamma[d] * a[i + d];
  for (int64_t d = 0; i < n; ++i, ++d) h[i] += scale * gamma[d] * a[i];
}

void embed_cpu(const void* table, DType type, const int32_t* ids, float* out, int64_t T, int64_t D) {
  for (int64_t t = 0; t < T; ++t) {
    const uint8_t* row = static_cast<const uint8_t*>(table) + dtype_bytes(type, (int64_t)ids[t] * D);
    float* o = out + t * D;
    switch (type) {
      case DType::F32: std::memcpy(o, row, (size_t)D * 4); break;
      case DType::F16: for (int64_t i = 0; i < D; ++i) o[i] = f16_to_f32(reinterpret_cast<const uint16_t*>(row)[i]); break;
      case DType::BF16: for (int64_t i = 0; i < D; ++i) o[i] = bf16_to_f32(reinterpret_cast<const uint16_t*>(row)[i]); break;
      case DType::Q8_0: ggml::dequantize(ggml::Q8_0, row, o, D); break;
      case DType::Q4_0: ggml::dequantize(ggml::Q4_0, row, o, D); break;
      case DType::Q4_K: ggml::dequantize(ggml::Q4_K, row, o, D); break;
      case DType::Q6_K: ggml::dequantize(ggml::Q6_K, row, o, D); break;
    }
  }
}

void kv_append_cpu(const float* src, uint16_t* cache, int64_t pos, int64_t T, int64_t width) {
  uint16_t* dst = cache + pos * width;
  for (int64_t i = 0; i < T * width; ++i) dst[i] = f32_to_f16(src[i]);
}

namespace {
// out(N) += Σ_m f(m, n) for each column n, columns in parallel, rows in order (a fixed summation order)
template <class F>
void column_sums(int64_t M, int64_t N, float* out, F&& f) {
  ThreadPool::instance().parallel_for((size_t)((N + 63) / 64), [&](size_t task, int) {
    const int64_t n0 = (int64_t)task * 64, n1 = n0 + 64 < N ? n0 + 64 : N;
    double acc[64] = {};
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = n0; n < n1; ++n) acc[n - n0] += f(m, n);
    for (int64_t n = n0; n < n1; ++n) out[n] += (float)acc[n - n0];
  });
}
}  // namespace

void residual_backward_cpu(const float* dh, const float* a, const float* gamma, float scale, float* da, float* dgamma, int64_t n, int64_t D) {
  if (!gamma) {
    for (int64_t i = 0; i < n; ++i) da[i] += scale * dh[i];
  } else {
    for (int64_t i = 0; i < n; ++i) da[i] += scale * gamma[i % D] * dh[i];
  }
  if (dgamma) column_sums(n / D, D, dgamma, [&](int64_t m, int64_t d) { return (double)scale * dh[m * D + d] * a[m * D + d]; });
}

void dropout_cpu(const float* x, float* out, int64_t n, float p, uint64_t seed) {
  const float k = 1.0f / (1.0f - p);
  for (int64_t i = 0; i < n; ++i) out[i] = dropout_keep(seed, (uint64_t)i, p) ? x[i] * k : 0.0f;
}

void bias_backward_cpu(const float* dy, float* db, int64_t M, int64_t N) {
  column_sums(M, N, db, [&](int64_t m, int64_t n) { return (double)dy[m * N + n]; });
}

void embed_backward_cpu(const float* dout, const int32_t* ids, float* dtable, int64_t T, int64_t D) {
  for (int64_t t = 0; t < T; ++t) {
    if (ids[t] < 0) continue;
    float* row = dtable + (int64_t)ids[t] * D;
    const float* g = dout + t * D;
    for (int64_t d = 0; d < D; ++d) row[d] += g[d];
  }
}

}  // namespace medllava
