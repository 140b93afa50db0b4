// The loss and the optimizer on CUDA (CPU twins: native/cpu/loss.cc): cross-entropy with its
// gradient in place (one block per row), AdamW (element-wise, the CPU's order of operations), and
// Σ x² in double (per-block partials summed by one block, in a fixed order: deterministic).
// defines: loss_block_max, cross_entropy_kernel, adamw_kernel,
// sum_squares_partial_kernel, sum_squares_final_kernel, cross_entropy_launch, adamw_launch,
// sum_squares_blocks, sum_squares_launch.
#pragma once
#include <cmath>
#include <cstdint>

#include "../ops/ops.h"  // defines: AdamWArgs
#include "compat.cuh"
#include "reduce.cuh"  // defines: warp_max, block_sum (float and double), kRowThreads, grid_for

namespace medllava {
namespace cuda {

// ---- reductions the loss needs beyond reduce.cuh's
// Max over the block (blockDim.x a multiple of 32); every thread gets it. `red`: 32 shared floats.
__device__ __forceinline__ float loss_block_max(float v, float* red) {
  v = warp_max(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  if (lane == 0) red[warp] = v;
  __syncthreads();  // every warp's partial is in `red`
  v = lane < warps ? red[lane] : -INFINITY;
  v = warp_max(v);
  __syncthreads();  // `red` may be written again by the next call
  return v;
}

// ---- cross-entropy
// One block per row of logits(N, V), in place: loss[row] = w·(logsumexp − x[target]); the row becomes
// scale·w·(softmax − onehot(target)). target < 0: loss 0, gradient 0. Targets are checked (< V) on
// the host before the launch. weights, loss: null for none.
__global__ void __launch_bounds__(kRowThreads)
    cross_entropy_kernel(float* __restrict__ logits, const int32_t* __restrict__ targets, const float* __restrict__ weights,
                         float* __restrict__ loss, int V, float scale) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  float* x = logits + row * V;
  const int target = targets[row];
  if (target < 0) {  // ignored: the same for the whole block
    for (int i = threadIdx.x; i < V; i += blockDim.x) x[i] = 0.0f;
    if (loss && threadIdx.x == 0) loss[row] = 0.0f;
    return;
  }
  const float xt = x[target];  // read by every thread before the barriers of the reductions below
  float m = -INFINITY;
  for (int i = threadIdx.x; i < V; i += blockDim.x) m = fmaxf(m, x[i]);
  m = loss_block_max(m, red);
  float z = 0.0f;
  for (int i = threadIdx.x; i < V; i += blockDim.x) z += expf(x[i] - m);
  z = block_sum(z, red);  // its barriers: every read of the row (xt included) precedes the writes below
  // lse = m + log z, kept as its two parts: every rounding is then relative to the row's spread (x − m,
  // log z ≤ log V), not to |lse| (an f32 lse near 100 is already 4e-6 off, and so would be each p)
  const float logz = logf(z);
  const float w = weights ? weights[row] : 1.0f;
  if (loss && threadIdx.x == 0) loss[row] = w * ((m - xt) + logz);
  const float k = scale * w;
  for (int i = threadIdx.x; i < V; i += blockDim.x) x[i] = k * (expf((x[i] - m) - logz) - (i == target ? 1.0f : 0.0f));
}

// ---- AdamW: PyTorch's order, element-wise, as adamw_cpu: ib1 = 1 / (1 − β1^t), ib2 = 1 / (1 − β2^t)
// (from the host: computed in double, rounded to float), p −= lr·(m·ib1) / (√(v·ib2) + eps).
__global__ void adamw_kernel(float* __restrict__ p, const float* __restrict__ grad, float* __restrict__ m, float* __restrict__ v, int64_t n,
                             float lr, float b1, float b2, float eps, float wd, float grad_scale, float ib1, float ib2) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float g = grad[i] * grad_scale;
    const float mi = b1 * m[i] + (1.0f - b1) * g;
    const float vi = b2 * v[i] + (1.0f - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float pi = p[i];
    pi -= lr * wd * pi;
    pi -= lr * (mi * ib1) / (sqrtf(vi * ib2) + eps);
    p[i] = pi;
  }
}

// ---- Σ x² in double
constexpr int kSumSquaresThreads = 256, kSumSquaresMaxBlocks = 1024;
// partial[block] = Σ x² over this block's grid-stride share (each thread in order, then a fixed tree)
__global__ void __launch_bounds__(kSumSquaresThreads)
    sum_squares_partial_kernel(const float* __restrict__ x, int64_t n, double* __restrict__ partial) {
  __shared__ double red[32];
  double acc = 0.0;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    acc += (double)x[i] * (double)x[i];
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
// out[0] = Σ partial(count): one block
__global__ void __launch_bounds__(kSumSquaresThreads)
    sum_squares_final_kernel(const double* __restrict__ partial, int count, double* __restrict__ out) {
  __shared__ double red[32];
  double acc = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) out[0] = acc;
}

// ---- launchers
// logits(N, V) in place; targets(N) device ints, each < V; weights(N)?, loss(N)?
inline void cross_entropy_launch(float* logits, const int32_t* targets, const float* weights, float* loss, int N, int V, float scale,
                                 medllava_stream_t s) {
  if (N <= 0 || V <= 0) return;
  MEDLLAVA_LAUNCH(cross_entropy_kernel, dim3((unsigned)N), dim3(kRowThreads), 0, s, logits, targets, weights, loss, V, scale);
}
inline void adamw_launch(float* p, const float* grad, float* m, float* v, int64_t n, const AdamWArgs& a, medllava_stream_t s) {
  if (n <= 0) return;
  const double bc1 = 1.0 - std::pow((double)a.beta1, (double)a.step), bc2 = 1.0 - std::pow((double)a.beta2, (double)a.step);
  const float ib1 = (float)(1.0 / bc1), ib2 = (float)(1.0 / bc2);
  MEDLLAVA_LAUNCH(adamw_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, p, grad, m, v, n, a.lr, a.beta1, a.beta2, a.eps,
                  a.weight_decay, a.grad_scale, ib1, ib2);
}
// the partial sums sum_squares_launch needs for n values (a function of n alone: the same n sums
// in the same order on every device)
inline int sum_squares_blocks(int64_t n) {
  const int g = (int)grid_for(n, kSumSquaresThreads);
  return g < kSumSquaresMaxBlocks ? g : kSumSquaresMaxBlocks;
}
// out[0] (device double) = Σ x(n)²; partial: sum_squares_blocks(n) device doubles of scratch
// (n ≤ 0: nothing is launched and out is left as it was)
inline void sum_squares_launch(const float* x, int64_t n, double* partial, double* out, medllava_stream_t s) {
  if (n <= 0) return;
  const int blocks = sum_squares_blocks(n);
  MEDLLAVA_LAUNCH(sum_squares_partial_kernel, dim3((unsigned)blocks), dim3(kSumSquaresThreads), 0, s, x, n, partial);
  MEDLLAVA_LAUNCH(sum_squares_final_kernel, dim3(1), dim3(kSumSquaresThreads), 0, s, partial, blocks, out);
}

}  // namespace cuda
}  // namespace medllava
