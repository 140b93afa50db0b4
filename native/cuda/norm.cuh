// The norm ops on CUDA (CPU twins: native/cpu/norm.cc): RMSNorm and LayerNorm, one block per row.
// defines: rmsnorm_kernel, layernorm_kernel, rmsnorm_launch, layernorm_launch.
#pragma once
#include <cstdint>

#include "compat.cuh"
#include "reduce.cuh"  // defines: block_sum, kRowThreads

namespace medllava {
namespace cuda {

__global__ void __launch_bounds__(kRowThreads)
    rmsnorm_kernel(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ out, int D, float eps,
                   float* __restrict__ rstd) {
  __shared__ float red[32];
  const float* row = x + (int64_t)blockIdx.x * D;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < D; i += blockDim.x) ss += row[i] * row[i];
  ss = block_sum(ss, red);
  const float k = rsqrtf(ss / (float)D + eps);
  if (rstd && threadIdx.x == 0) rstd[blockIdx.x] = k;
  float* o = out + (int64_t)blockIdx.x * D;
  for (int i = threadIdx.x; i < D; i += blockDim.x) o[i] = row[i] * k * w[i];
}

__global__ void __launch_bounds__(kRowThreads)
    layernorm_kernel(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
                     float* __restrict__ out, int D, float eps, float* __restrict__ mean_out, float* __restrict__ rstd) {
  __shared__ float red[32];
  const float* row = x + (int64_t)blockIdx.x * D;
  float s = 0.0f;
  for (int i = threadIdx.x; i < D; i += blockDim.x) s += row[i];
  const float mean = block_sum(s, red) / (float)D;
  float v = 0.0f;
  for (int i = threadIdx.x; i < D; i += blockDim.x) v += (row[i] - mean) * (row[i] - mean);
  const float k = rsqrtf(block_sum(v, red) / (float)D + eps);
  if (threadIdx.x == 0) {
    if (mean_out) mean_out[blockIdx.x] = mean;
    if (rstd) rstd[blockIdx.x] = k;
  }
  float* o = out + (int64_t)blockIdx.x * D;
  for (int i = threadIdx.x; i < D; i += blockDim.x) o[i] = (row[i] - mean) * k * w[i] + b[i];
}

// ---- launchers (rstd, mean: the per-row statistics backward needs, when given)
inline void rmsnorm_launch(const float* x, const float* w, float* out, int T, int D, float eps, medllava_stream_t s,
                           float* rstd = nullptr) {
  if (T > 0) MEDLLAVA_LAUNCH(rmsnorm_kernel, dim3((unsigned)T), dim3(kRowThreads), 0, s, x, w, out, D, eps, rstd);
}
inline void layernorm_launch(const float* x, const float* w, const float* b, float* out, int T, int D, float eps,
                             medllava_stream_t s, float* mean = nullptr, float* rstd = nullptr) {
  if (T > 0) MEDLLAVA_LAUNCH(layernorm_kernel, dim3((unsigned)T), dim3(kRowThreads), 0, s, x, w, b, out, D, eps, mean, rstd);
}

}  // namespace cuda
}  // namespace medllava
