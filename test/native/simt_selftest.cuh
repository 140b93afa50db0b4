// Kernels that exercise the SIMT emulator itself (test/simt/*.test.ts checks their outputs
// against expectations computed independently in TypeScript, and checks that the diagnostics
// fire). They live in namespace medllava::cuda so their __shared__ arrays are found and poisoned.
#pragma once
#include <cstdint>

#include "../../native/cuda/compat.cuh"

namespace medllava {
namespace cuda {
namespace simt_selftest {

using nvcuda::wmma::fragment;

// out[warp] = sum of in over the warp, by a butterfly of __shfl_xor_sync
__global__ void warp_sum(const float* in, void* out_raw, int, int) {
  float* out = static_cast<float*>(out_raw);
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  float v = in[t];
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) out[t / 32] = v;
}

// out[4 t + i] = shfl / up / down / xor of in[t] with operand p0 and width p1
__global__ void shfl_variants(const float* in, void* out_raw, int p0, int p1) {
  float* out = static_cast<float*>(out_raw);
  const int t = threadIdx.x;
  const float v = in[t];
  out[4 * t + 0] = __shfl_sync(0xffffffffu, v, p0, p1);
  out[4 * t + 1] = __shfl_up_sync(0xffffffffu, v, (unsigned)p0, p1);
  out[4 * t + 2] = __shfl_down_sync(0xffffffffu, v, (unsigned)p0, p1);
  out[4 * t + 3] = __shfl_xor_sync(0xffffffffu, v, p0, p1);
}

// out (uint32) [3 t + i] = ballot / any / all of (in[t] != 0)
__global__ void votes(const float* in, void* out_raw, int, int) {
  uint32_t* out = static_cast<uint32_t*>(out_raw);
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  const bool p = in[t] != 0.0f;
  out[3 * t + 0] = __ballot_sync(0xffffffffu, p);
  out[3 * t + 1] = (uint32_t)__any_sync(0xffffffffu, p);
  out[3 * t + 2] = (uint32_t)__all_sync(0xffffffffu, p);
}

// out[0] = Σ in (float atomicAdd), out[1] = max(0, in × 1000) (int atomicMax), over the grid;
// the output starts zeroed
__global__ void atomics(const float* in, void* out_raw, int, int) {
  float* out = static_cast<float*>(out_raw);
  int* iout = static_cast<int*>(out_raw);
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(&out[0], in[t]);
  atomicMax(&iout[1], (int)(in[t] * 1000.0f));
}

// Each block reverses its chunk of in through dynamic shared memory.
__global__ void reverse_dynamic(const float* in, void* out_raw, int, int) {
  float* out = static_cast<float*>(out_raw);
  MEDLLAVA_DYNAMIC_SHARED(float, buf);
  const int base = blockIdx.x * blockDim.x;
  buf[threadIdx.x] = in[base + threadIdx.x];
  __syncthreads();
  out[base + threadIdx.x] = buf[blockDim.x - 1 - threadIdx.x];
}

// out[block] = what thread 0 finds in a __shared__ word it writes only afterwards: the poison
// (NaN) every time, never the 1.0 the previous block left.
__global__ void read_before_write(const float*, void* out_raw, int, int) {
  float* out = static_cast<float*>(out_raw);
  __shared__ float s[4];
  if (threadIdx.x == 0) {
    out[blockIdx.x] = s[0];
    s[0] = 1.0f;
  }
}

// Block-wide tree sum in shared memory; p0 != 0 drops the barrier inside the loop (the bug the
// emulator must expose). out[block] = sum of the block's chunk.
__global__ void block_sum(const float* in, void* out_raw, int p0, int) {
  float* out = static_cast<float*>(out_raw);
  __shared__ float s[256];
  s[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if ((int)threadIdx.x < stride) s[threadIdx.x] += s[threadIdx.x + stride];
    if (!p0) __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = s[0];
}

// One warp: c(16×16) = a(16×16, row-major) · b(16×16, col-major), f16 inputs, f32 accumulate.
// in holds a then b as f32 values; they are rounded to f16 in shared memory first.
__global__ void wmma_tile(const float* in, void* out_raw, int, int) {
  float* out = static_cast<float*>(out_raw);
  __shared__ __align__(32) __half a[256];
  __shared__ __align__(32) __half b[256];
  for (int i = threadIdx.x; i < 256; i += 32) {
    a[i] = __float2half(in[i]);
    b[i] = __float2half(in[256 + i]);
  }
  __syncthreads();
  fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __half, nvcuda::wmma::row_major> fa;
  fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __half, nvcuda::wmma::col_major> fb;
  fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> fc;
  nvcuda::wmma::fill_fragment(fc, 0.0f);
  nvcuda::wmma::load_matrix_sync(fa, a, 16);
  nvcuda::wmma::load_matrix_sync(fb, b, 16);
  nvcuda::wmma::mma_sync(fc, fa, fb, fc);
  for (int i = 0; i < fc.num_elements; ++i) fc.x[i] *= 2.0f;  // elementwise ops on fragments work
  nvcuda::wmma::store_matrix_sync(out, fc, 16, nvcuda::wmma::mem_row_major);
}

// ---- kernels that must be diagnosed -------------------------------------------------------------
// Lane 5 returns early; the rest shuffle with a full mask that still names it.
__global__ void bad_exited_lane(const float* in, void* out_raw, int, int) {
  float* out = static_cast<float*>(out_raw);
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, in[threadIdx.x], 1);
}

// Half the block returns while the other half waits at a barrier.
__global__ void bad_divergent_barrier(const float*, void* out_raw, int, int) {
  float* out = static_cast<float*>(out_raw);
  if (threadIdx.x >= 16) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

// Odd and even threads wait at two different barriers.
__global__ void bad_barrier_sites(const float*, void* out_raw, int, int) {
  float* out = static_cast<float*>(out_raw);
  if (threadIdx.x % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

// Lane 0 waits in a full-mask shuffle while the other lanes wait at __syncthreads: no one can run.
__global__ void bad_deadlock(const float* in, void* out_raw, int, int) {
  float* out = static_cast<float*>(out_raw);
  float v = in[threadIdx.x];
  if (threadIdx.x == 0) v = __shfl_sync(0xffffffffu, v, 0);
  __syncthreads();
  out[threadIdx.x] = v;
}

// A 48-thread block: warp 1 has 16 lanes, and a full mask names 16 that do not exist.
__global__ void bad_missing_lanes(const float* in, void* out_raw, int, int) {
  float* out = static_cast<float*>(out_raw);
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, in[threadIdx.x], 1);
}

// Only half a warp takes part in a wmma load.
__global__ void bad_wmma_divergent(const float*, void* out_raw, int, int) {
  float* out = static_cast<float*>(out_raw);
  __shared__ __align__(32) __half a[256];
  for (int i = threadIdx.x; i < 256; i += 32) a[i] = __float2half(1.0f);
  __syncthreads();
  if (threadIdx.x < 16) {
    fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __half, nvcuda::wmma::row_major> fa;
    nvcuda::wmma::load_matrix_sync(fa, a, 16);
    out[threadIdx.x] = __half2float(fa.x[0]);
  }
}

}  // namespace simt_selftest
}  // namespace cuda
}  // namespace medllava
