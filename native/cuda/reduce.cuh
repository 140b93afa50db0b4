// Building blocks of the row kernels: warp and block reductions, the row block size, the grid of a
// grid-stride loop. defines: warp_sum, warp_max, block_sum, kRowThreads, grid_for.
#pragma once
#include <cstdint>

#include "compat.cuh"

namespace medllava {
namespace cuda {

// ---- reductions -----------------------------------------------------------------------------------
// float or double (the loss's Σ x² sums in double)
template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Sum over the block (blockDim.x a multiple of 32) in a fixed tree; every thread gets it. `red`: 32
// shared values of T (float or double).
template <class T>
__device__ __forceinline__ T block_sum(T v, T* red) {
  v = warp_sum(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  if (lane == 0) red[warp] = v;
  __syncthreads();  // every warp's partial is in `red`
  v = lane < warps ? red[lane] : T(0);
  v = warp_sum(v);
  __syncthreads();  // `red` may be written again by the next call
  return v;
}

constexpr int kRowThreads = 256;


inline unsigned grid_for(int64_t n, int threads) {
  const int64_t g = (n + threads - 1) / threads;
  return (unsigned)(g < 1 ? 1 : g > 65535 ? 65535 : g);
}

}  // namespace cuda
}  // namespace medllava
