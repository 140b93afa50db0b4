// The activation ops on CUDA (CPU twins: native/cpu/activation.cc): SiLU·mul (SwiGLU) and GELU /
// quick_gelu, and their backwards. defines: silu_mul_kernel, activation_kernel, activation_grad,
// silu_mul_backward_kernel, activation_backward_kernel, silu_mul_launch, silu_mul_backward_launch,
// activation_launch, activation_backward_launch.
#pragma once
#include <cstdint>

#include "../ops/activation.h"
#include "compat.cuh"
#include "reduce.cuh"  // defines: grid_for

namespace medllava {
namespace cuda {

__global__ void silu_mul_kernel(const float* __restrict__ gate, const float* __restrict__ up, float* __restrict__ out,
                                int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

__global__ void activation_kernel(const float* __restrict__ x, float* __restrict__ out, int64_t n, int act) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = apply_activation(x[i], (Activation)act);
}


// Backward of silu_mul_kernel (+=): dg += dout·u·silu'(g), du += dout·silu(g)
__global__ void silu_mul_backward_kernel(const float* __restrict__ dout, const float* __restrict__ gate, const float* __restrict__ up,
                                         float* __restrict__ dgate, float* __restrict__ dup, int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float g = gate[i], sg = 1.0f / (1.0f + expf(-g));
    dgate[i] += dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
    dup[i] += dout[i] * g * sg;
  }
}

// act'(x): exact GELU Φ(x) + x·φ(x); quick_gelu σ + 1.702·x·σ·(1 − σ) with σ = σ(1.702x); None 1
__device__ __forceinline__ float activation_grad(float x, int act) {
  if (act == (int)Activation::Gelu) {
    const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    const float pdf = 0.39894228040143268f * expf(-0.5f * x * x);  // 1/√(2π) · e^(−x²/2)
    return cdf + x * pdf;
  }
  if (act == (int)Activation::QuickGelu) {
    const float sg = 1.0f / (1.0f + expf(-1.702f * x));
    return sg + 1.702f * x * sg * (1.0f - sg);
  }
  return 1.0f;
}

// Backward of activation_kernel (+=): dx += dout·act'(x)
__global__ void activation_backward_kernel(const float* __restrict__ dout, const float* __restrict__ x, float* __restrict__ dx, int64_t n,
                                           int act) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dx[i] += dout[i] * activation_grad(x[i], act);
}

// ---- launchers
inline void silu_mul_launch(const float* gate, const float* up, float* out, int64_t n, medllava_stream_t s) {
  if (n > 0) MEDLLAVA_LAUNCH(silu_mul_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, gate, up, out, n);
}
inline void silu_mul_backward_launch(const float* dout, const float* gate, const float* up, float* dgate, float* dup, int64_t n,
                                     medllava_stream_t s) {
  if (n > 0) MEDLLAVA_LAUNCH(silu_mul_backward_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, dout, gate, up, dgate, dup, n);
}
inline void activation_launch(const float* x, float* out, int64_t n, Activation act, medllava_stream_t s) {
  if (n > 0) MEDLLAVA_LAUNCH(activation_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, x, out, n, (int)act);
}
inline void activation_backward_launch(const float* dout, const float* x, float* dx, int64_t n, Activation act, medllava_stream_t s) {
  if (n > 0) MEDLLAVA_LAUNCH(activation_backward_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, dout, x, dx, n, (int)act);
}

}  // namespace cuda
}  // namespace medllava
