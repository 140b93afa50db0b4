// Top-k on CUDA (CPU twin: native/cpu/topk.cc): k block-wide argmax passes; k = 1 is greedy's argmax.
// defines: topk_kernel, topk_launch.
#pragma once
#include <cstdint>

#include "compat.cuh"
#include "reduce.cuh"  // defines: kRowThreads

namespace medllava {
namespace cuda {

// The k largest of x(n), in descending order (ties: the lower index first), by k block-wide argmax
// passes each excluding what came before — (value, index) pairs compared lexicographically, so no
// marks are needed. k = 1 is greedy's argmax. One block of kRowThreads; k ≤ a few hundred.
__device__ __forceinline__ bool before(float va, int ia, float vb, int ib) { return va > vb || (va == vb && ia < ib); }

__global__ void __launch_bounds__(kRowThreads)
    topk_kernel(const float* __restrict__ x, int n, int k, int32_t* __restrict__ idx, float* __restrict__ val) {
  __shared__ float sv[kRowThreads / 32];
  __shared__ int si[kRowThreads / 32];
  float pv = INFINITY;  // the previous pick: take only what comes after it in the order
  int pi = -1;
  for (int r = 0; r < k; ++r) {
    float bv = -INFINITY;
    int bi = -1;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const float xi = x[i] != x[i] ? -INFINITY : x[i];  // NaN ranks last
      if (before(pv, pi, xi, i) && (bi < 0 || before(xi, i, bv, bi))) {
        bv = xi;
        bi = i;
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (oi >= 0 && (bi < 0 || before(ov, oi, bv, bi))) {
        bv = ov;
        bi = oi;
      }
    }
    if (threadIdx.x % 32 == 0) {
      sv[threadIdx.x / 32] = bv;
      si[threadIdx.x / 32] = bi;
    }
    __syncthreads();  // every warp's best is in sv / si
    bv = -INFINITY;
    bi = -1;
    for (int w = 0; w < (int)(blockDim.x / 32); ++w)
      if (si[w] >= 0 && (bi < 0 || before(sv[w], si[w], bv, bi))) {
        bv = sv[w];
        bi = si[w];
      }
    __syncthreads();  // sv / si are read by all before the next pass writes them
    if (threadIdx.x == 0) {
      idx[r] = bi;
      val[r] = bv;
    }
    pv = bv;
    pi = bi;
  }
}

// ---- launchers
inline void topk_launch(const float* x, int n, int k, int32_t* idx, float* val, medllava_stream_t s) {
  if (k > 0) MEDLLAVA_LAUNCH(topk_kernel, dim3(1), dim3(kRowThreads), 0, s, x, n, k, idx, val);
}

}  // namespace cuda
}  // namespace medllava
