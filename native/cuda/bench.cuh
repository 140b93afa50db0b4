// GPU microbenchmarks of every CUDA kernel at the real shapes of bench/kernels/README.md, timed with
// CUDA events on device 0 (warm-up, then the median of 20 launches), plus the device's own peaks
// measured in the same run: HBM bandwidth (a device-to-device copy), fp32 FMA and tensor-core
// (wmma bf16) FLOP/s from register-resident loops. The kernels also run under the SIMT emulator in
// the tests; the timing host code (backend.cu) runs only on a GPU.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "compat.cuh"

namespace medllava {
namespace cuda {

struct KernelTiming {
  std::string kernel, shape;
  double ms = 0, bytes = 0, flops = 0;  // per launch
};

// fp32 FMA chains: 8 independent accumulators per thread. `write`: store each thread's sum (the
// tests run it under the emulator and check the value); the benchmark passes 0 and keeps the loop
// alive with a store that never happens.
__global__ void peak_fma_kernel(float* out, int iters, int write) {
  float a[8];
  for (int i = 0; i < 8; ++i) a[i] = threadIdx.x * 1e-3f + i;
  for (int it = 0; it < iters; ++it)
    for (int i = 0; i < 8; ++i) a[i] = fmaf(a[i], 0.999999f, 1e-7f);
  float s = 0;
  for (int i = 0; i < 8; ++i) s += a[i];
  if (write || s == 12345.0f) out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}

// bf16 mma on register-resident fragments: the tensor-core ceiling. Every element of each product
// is 16 · 0.25 · 0.25 = 1 (exact in bf16 and f32), so after `iters` rounds each accumulator holds
// iters; `write` stores lane 0's four accumulator elements of warp 0 per block.
__global__ void peak_wmma_kernel(float* out, int iters, int write) {
  using namespace nvcuda;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c[4];
  wmma::fill_fragment(a, __float2bfloat16(0.25f));
  wmma::fill_fragment(b, __float2bfloat16(0.25f));
  for (int j = 0; j < 4; ++j) wmma::fill_fragment(c[j], 0.0f);
  for (int it = 0; it < iters; ++it)
    for (int j = 0; j < 4; ++j) wmma::mma_sync(c[j], a, b, c[j]);
  const float s = c[0].x[0] + c[1].x[0] + c[2].x[0] + c[3].x[0];
  if ((write && threadIdx.x == 0) || s == 12345.0f) out[blockIdx.x] = s;
}

}  // namespace cuda
}  // namespace medllava
