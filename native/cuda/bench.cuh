// GPU microbenchmarks of every CUDA kernel at the real shapes of bench/kernels/README.md, timed with
// CUDA events on device 0 (warm-up, then the median of 20 launches), plus the device's own peaks
// measured in the same run: HBM bandwidth (a device-to-device copy), fp32 FMA and tensor-core
// (wmma bf16) FLOP/s from register-resident loops. Compiled into the addon; runs only on a GPU.
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

#if !defined(MEDLLAVA_SIMT)
// fp32 FMA chains: 8 independent accumulators per thread
__global__ void peak_fma_kernel(float* out, int iters) {
  float a[8];
  for (int i = 0; i < 8; ++i) a[i] = threadIdx.x * 1e-3f + i;
  for (int it = 0; it < iters; ++it)
    for (int i = 0; i < 8; ++i) a[i] = fmaf(a[i], 0.999999f, 1e-7f);
  float s = 0;
  for (int i = 0; i < 8; ++i) s += a[i];
  if (s == 12345.0f) out[threadIdx.x] = s;  // keeps the loop alive
}

// bf16 mma on register-resident fragments: the tensor-core ceiling
__global__ void peak_wmma_kernel(float* out, int iters) {
  using namespace nvcuda;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c[4];
  wmma::fill_fragment(a, __float2bfloat16(0.001f));
  wmma::fill_fragment(b, __float2bfloat16(0.001f));
  for (int j = 0; j < 4; ++j) wmma::fill_fragment(c[j], 0.0f);
  for (int it = 0; it < iters; ++it)
    for (int j = 0; j < 4; ++j) wmma::mma_sync(c[j], a, b, c[j]);
  if (c[0].x[0] == 12345.0f) out[threadIdx.x] = c[0].x[0] + c[1].x[0] + c[2].x[0] + c[3].x[0];
}
#endif

}  // namespace cuda
}  // namespace medllava
