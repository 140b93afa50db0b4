// The element-wise and gather ops on CUDA (CPU twins: native/cpu/elements.cc): the residual add
// (LayerScale, scale), the embedding gather of any stored type, the f16 KV-cache append.
// defines: residual_kernel, embed_kernel, kv_append_kernel and their launchers.
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

// ---- launchers
inline void residual_launch(float* h, const float* a, const float* gamma, float scale, int64_t n, int D, medllava_stream_t s) {
  if (n > 0) MEDLLAVA_LAUNCH(residual_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, h, a, gamma, scale, n, D);
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

}  // namespace cuda
}  // namespace medllava
