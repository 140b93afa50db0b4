// The element-wise and gather ops on CUDA (CPU twins: native/cpu/elements.cc): the residual add
// (LayerScale, scale), the embedding gather of any stored type, the f16 KV-cache append, and the
// backwards of the residual add, a bias and the gather (column sums in a fixed order, no atomics).
// defines: residual_kernel, dropout_kernel, fill_kernel, to_bf16_kernel, embed_kernel, kv_append_kernel, residual_backward_kernel,
// residual_backward_dgamma_kernel, bias_backward_kernel, embed_backward_kernel and their launchers.
#pragma once
#include <cstdint>

#include "../core/dtype.h"
#include "compat.cuh"
#include "dtype.cuh"   // defines: load_element, f32_half_bits
#include "reduce.cuh"  // defines: grid_for, kRowThreads

namespace medllava {
namespace cuda {

// h(n) += scale · γ ⊙ a, γ (D) the LayerScale broadcast over rows (null: 1)
__global__ void residual_kernel(float* __restrict__ h, const float* __restrict__ a, const float* __restrict__ gamma,
                                float scale, int64_t n, int D) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    h[i] += scale * (gamma ? gamma[i % D] : 1.0f) * a[i];
}

// out(n) = x / (1 − p) where dropout_keep(seed, i), else 0 (out may alias x)
__global__ void dropout_kernel(const float* x, float* out, int64_t n, float p, uint64_t seed) {
  const float k = 1.0f / (1.0f - p);
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = dropout_keep(seed, (uint64_t)i, p) ? x[i] * k : 0.0f;
}

// x(n) = value
__global__ void fill_kernel(float* __restrict__ x, float value, int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) x[i] = value;
}

// out(n) = x rounded to bf16 (to nearest, ties to even): a trainable matrix's compute copy of its fp32 master
__global__ void to_bf16_kernel(const float* __restrict__ x, __nv_bfloat16* __restrict__ out, int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = __float2bfloat16(x[i]);
}

// out(T, D) = rows ids[t] of table (vocab, D) stored as `type`
__global__ void embed_kernel(const uint8_t* __restrict__ table, int type, const int32_t* __restrict__ ids,
                             float* __restrict__ out, int D) {
  const uint8_t* row = table + dtype_bytes((DType)type, (int64_t)ids[blockIdx.x] * D);
  for (int d = threadIdx.x; d < D; d += blockDim.x) out[(int64_t)blockIdx.x * D + d] = load_element(row, (DType)type, d);
}

// cache rows [pos, pos + T) ← f16(src (T, width))
__global__ void kv_append_kernel(const float* __restrict__ src, uint16_t* __restrict__ cache, int64_t pos, int64_t n,
                                 int width) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    cache[pos * width + i] = f32_half_bits(src[i]);
}

// Backward of residual_kernel for its branch (+=): da += scale · γ ⊙ dh (γ null: 1)
__global__ void residual_backward_kernel(const float* __restrict__ dh, const float* __restrict__ gamma, float scale, float* __restrict__ da,
                                         int64_t n, int D) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    da[i] += scale * (gamma ? gamma[i % D] : 1.0f) * dh[i];
}
// dgamma(D) += scale · Σ_rows dh ⊙ a: one thread per column, the rows in order
__global__ void residual_backward_dgamma_kernel(const float* __restrict__ dh, const float* __restrict__ a, float scale,
                                                float* __restrict__ dgamma, int64_t rows, int D) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < D; i += gridDim.x * blockDim.x) {
    float acc = 0.0f;
    for (int64_t r = 0; r < rows; ++r) acc += dh[r * D + i] * a[r * D + i];
    dgamma[i] += scale * acc;
  }
}

// db(N) += Σ_m dy(m, N): one thread per column, the rows in order
__global__ void bias_backward_kernel(const float* __restrict__ dy, float* __restrict__ db, int M, int N) {
  for (int n = blockIdx.x * blockDim.x + threadIdx.x; n < N; n += gridDim.x * blockDim.x) {
    float acc = 0.0f;
    for (int m = 0; m < M; ++m) acc += dy[(int64_t)m * N + n];
    db[n] += acc;
  }
}

// Backward of the gather: dtable rows ids[t] += dout(t), one thread per column walking the tokens
// in order (a row hit twice sums in token order; ids < 0 skipped)
__global__ void embed_backward_kernel(const float* __restrict__ dout, const int32_t* __restrict__ ids, float* __restrict__ dtable, int T,
                                      int D) {
  for (int d = blockIdx.x * blockDim.x + threadIdx.x; d < D; d += gridDim.x * blockDim.x)
    for (int t = 0; t < T; ++t) {
      const int32_t id = ids[t];
      if (id >= 0) dtable[(int64_t)id * D + d] += dout[(int64_t)t * D + d];
    }
}

// ---- launchers
inline void residual_launch(float* h, const float* a, const float* gamma, float scale, int64_t n, int D, medllava_stream_t s) {
  if (n > 0) MEDLLAVA_LAUNCH(residual_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, h, a, gamma, scale, n, D);
}
inline void dropout_launch(const float* x, float* out, int64_t n, float p, uint64_t seed, medllava_stream_t s) {
  if (n > 0) MEDLLAVA_LAUNCH(dropout_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, x, out, n, p, seed);
}
inline void fill_launch(float* x, float value, int64_t n, medllava_stream_t s) {
  if (n > 0) MEDLLAVA_LAUNCH(fill_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, x, value, n);
}
inline void to_bf16_launch(const float* x, void* out, int64_t n, medllava_stream_t s) {
  if (n > 0) MEDLLAVA_LAUNCH(to_bf16_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, x, static_cast<__nv_bfloat16*>(out), n);
}
inline void embed_launch(const void* table, DType type, const int32_t* ids, float* out, int T, int D, medllava_stream_t s) {
  if (T > 0)
    MEDLLAVA_LAUNCH(embed_kernel, dim3((unsigned)T), dim3(kRowThreads), 0, s, static_cast<const uint8_t*>(table), (int)type, ids,
                    out, D);
}
inline void kv_append_launch(const float* src, uint16_t* cache, int64_t pos, int T, int width, medllava_stream_t s) {
  const int64_t n = (int64_t)T * width;
  if (n > 0) MEDLLAVA_LAUNCH(kv_append_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, src, cache, pos, n, width);
}
// da(n) += scale·(γ ⊙) dh, when da is given; dgamma(D) += scale·Σ_rows dh ⊙ a, when given
inline void residual_backward_launch(const float* dh, const float* a, const float* gamma, float scale, float* da, float* dgamma, int64_t n,
                                     int D, medllava_stream_t s) {
  if (n <= 0) return;
  if (da) MEDLLAVA_LAUNCH(residual_backward_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, dh, gamma, scale, da, n, D);
  if (dgamma && D > 0)
    MEDLLAVA_LAUNCH(residual_backward_dgamma_kernel, dim3(grid_for(D, 256)), dim3(256), 0, s, dh, a, scale, dgamma, n / D, D);
}
inline void bias_backward_launch(const float* dy, float* db, int M, int N, medllava_stream_t s) {
  if (M > 0 && N > 0) MEDLLAVA_LAUNCH(bias_backward_kernel, dim3(grid_for(N, 256)), dim3(256), 0, s, dy, db, M, N);
}
// ids: T device ints
inline void embed_backward_launch(const float* dout, const int32_t* ids, float* dtable, int T, int D, medllava_stream_t s) {
  if (T > 0 && D > 0) MEDLLAVA_LAUNCH(embed_backward_kernel, dim3(grid_for(D, 256)), dim3(256), 0, s, dout, ids, dtable, T, D);
}

}  // namespace cuda
}  // namespace medllava
