// The norm ops on CUDA (CPU twins: native/cpu/norm.cc): RMSNorm and LayerNorm, one block per row.
// defines: rmsnorm_kernel, layernorm_kernel, rmsnorm_backward_{dx,dw}_kernel,
// layernorm_backward_{dx,dwb}_kernel and their launchers.
#pragma once
#include <cstdint>

#include "compat.cuh"
#include "reduce.cuh"  // defines: block_sum, kRowThreads, grid_for

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

// Backward of rmsnorm_kernel, dx part (one block per row, +=): dx += r·dy·w − x·r³/D·Σ dy·w·x
__global__ void __launch_bounds__(kRowThreads)
    rmsnorm_backward_dx_kernel(const float* __restrict__ dy, const float* __restrict__ x, const float* __restrict__ w,
                               const float* __restrict__ rstd, float* __restrict__ dx, int D) {
  __shared__ float red[32];
  const int64_t row = (int64_t)blockIdx.x * D;
  float dot = 0.0f;
  for (int i = threadIdx.x; i < D; i += blockDim.x) dot += dy[row + i] * w[i] * x[row + i];
  dot = block_sum(dot, red);
  const float r = rstd[blockIdx.x], c = dot * r * r * r / (float)D;
  for (int i = threadIdx.x; i < D; i += blockDim.x) dx[row + i] += r * dy[row + i] * w[i] - c * x[row + i];
}
// dw part: one thread per column, summing the rows in order (deterministic, no atomics)
__global__ void rmsnorm_backward_dw_kernel(const float* __restrict__ dy, const float* __restrict__ x, const float* __restrict__ rstd,
                                           float* __restrict__ dw, int T, int D) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < D; i += gridDim.x * blockDim.x) {
    float acc = 0.0f;
    for (int t = 0; t < T; ++t) acc += dy[(int64_t)t * D + i] * x[(int64_t)t * D + i] * rstd[t];
    dw[i] += acc;
  }
}

// Backward of layernorm_kernel, dx part (one block per row, +=): with x̂ = (x − mean)·r, g = dy·w,
//   dx += r·(g − mean_d(g) − x̂·mean_d(g·x̂))
__global__ void __launch_bounds__(kRowThreads)
    layernorm_backward_dx_kernel(const float* __restrict__ dy, const float* __restrict__ x, const float* __restrict__ w,
                                 const float* __restrict__ mean, const float* __restrict__ rstd, float* __restrict__ dx, int D) {
  __shared__ float red[32];
  const int64_t row = (int64_t)blockIdx.x * D;
  const float mu = mean[blockIdx.x], r = rstd[blockIdx.x];
  float sg = 0.0f, sgx = 0.0f;
  for (int i = threadIdx.x; i < D; i += blockDim.x) {
    const float g = dy[row + i] * w[i], xh = (x[row + i] - mu) * r;
    sg += g;
    sgx += g * xh;
  }
  const float mg = block_sum(sg, red) / (float)D;
  const float mgx = block_sum(sgx, red) / (float)D;
  for (int i = threadIdx.x; i < D; i += blockDim.x) {
    const float g = dy[row + i] * w[i], xh = (x[row + i] - mu) * r;
    dx[row + i] += r * (g - mg - xh * mgx);
  }
}
// dw, db part: one thread per column, summing the rows in order (deterministic, no atomics);
// dw += Σ_t dy·x̂, db += Σ_t dy, each skipped when null
__global__ void layernorm_backward_dwb_kernel(const float* __restrict__ dy, const float* __restrict__ x, const float* __restrict__ mean,
                                              const float* __restrict__ rstd, float* __restrict__ dw, float* __restrict__ db, int T,
                                              int D) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < D; i += gridDim.x * blockDim.x) {
    float aw = 0.0f, ab = 0.0f;
    for (int t = 0; t < T; ++t) {
      const float g = dy[(int64_t)t * D + i];
      aw += g * ((x[(int64_t)t * D + i] - mean[t]) * rstd[t]);
      ab += g;
    }
    if (dw) dw[i] += aw;
    if (db) db[i] += ab;
  }
}

// ---- launchers (rstd, mean: the per-row statistics backward needs, when given)
inline void rmsnorm_launch(const float* x, const float* w, float* out, int T, int D, float eps, medllava_stream_t s,
                           float* rstd = nullptr) {
  if (T > 0) MEDLLAVA_LAUNCH(rmsnorm_kernel, dim3((unsigned)T), dim3(kRowThreads), 0, s, x, w, out, D, eps, rstd);
}
inline void rmsnorm_backward_launch(const float* dy, const float* x, const float* w, const float* rstd, float* dx, float* dw, int T, int D,
                                    medllava_stream_t s) {
  if (T <= 0) return;
  MEDLLAVA_LAUNCH(rmsnorm_backward_dx_kernel, dim3((unsigned)T), dim3(kRowThreads), 0, s, dy, x, w, rstd, dx, D);
  if (dw) MEDLLAVA_LAUNCH(rmsnorm_backward_dw_kernel, dim3(grid_for(D, 256)), dim3(256), 0, s, dy, x, rstd, dw, T, D);
}
inline void layernorm_launch(const float* x, const float* w, const float* b, float* out, int T, int D, float eps,
                             medllava_stream_t s, float* mean = nullptr, float* rstd = nullptr) {
  if (T > 0) MEDLLAVA_LAUNCH(layernorm_kernel, dim3((unsigned)T), dim3(kRowThreads), 0, s, x, w, b, out, D, eps, mean, rstd);
}
// dx(T, D) += …, dw(D) += …, db(D) += … (dw / db null: frozen); mean, rstd: the forward's
inline void layernorm_backward_launch(const float* dy, const float* x, const float* w, const float* mean, const float* rstd, float* dx,
                                      float* dw, float* db, int T, int D, medllava_stream_t s) {
  if (T <= 0 || D <= 0) return;
  MEDLLAVA_LAUNCH(layernorm_backward_dx_kernel, dim3((unsigned)T), dim3(kRowThreads), 0, s, dy, x, w, mean, rstd, dx, D);
  if (dw || db)
    MEDLLAVA_LAUNCH(layernorm_backward_dwb_kernel, dim3(grid_for(D, 256)), dim3(256), 0, s, dy, x, mean, rstd, dw, db, T, D);
}

}  // namespace cuda
}  // namespace medllava
