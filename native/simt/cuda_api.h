// The CUDA device surface for kernels compiled by the host compiler under the SIMT emulator.
// Include this (through native/cuda/compat.cuh) instead of the CUDA device headers.
//
// Order matters: __global__/__device__/__host__/__shared__ are defined BEFORE any CUDA header,
// otherwise crt/host_defines.h defines __shared__ as nothing and shared arrays silently become
// per-thread locals.
#pragma once

#define __global__
#define __device__
#define __host__
#define __shared__ static

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "simt.h"

#ifndef __forceinline__
#define __forceinline__ inline __attribute__((always_inline))
#endif
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#ifndef __align__
#define __align__(n) alignas(n)
#endif

#define threadIdx (::simt::detail::thread_idx())
#define blockIdx (::simt::detail::block_idx())
#define blockDim (::simt::detail::block_dim())
#define gridDim (::simt::detail::grid_dim())
#define warpSize 32

#define __syncthreads() ::simt::detail::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) \
  ((void)::simt::detail::warp_collective(::simt::detail::WarpOp::SyncWarp, ::simt::sync_mask(__VA_ARGS__), 0, 0, 32, __FILE__, __LINE__))
#define __shfl_sync(mask, var, ...) ::simt::shfl(::simt::detail::WarpOp::Shfl, mask, var, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(mask, var, ...) ::simt::shfl(::simt::detail::WarpOp::ShflUp, mask, var, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(mask, var, ...) ::simt::shfl(::simt::detail::WarpOp::ShflDown, mask, var, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(mask, var, ...) ::simt::shfl(::simt::detail::WarpOp::ShflXor, mask, var, __FILE__, __LINE__, __VA_ARGS__)
#define __ballot_sync(mask, pred) \
  ((unsigned)::simt::detail::warp_collective(::simt::detail::WarpOp::Ballot, mask, (pred) ? 1 : 0, 0, 32, __FILE__, __LINE__))
#define __any_sync(mask, pred) \
  ((int)::simt::detail::warp_collective(::simt::detail::WarpOp::Any, mask, (pred) ? 1 : 0, 0, 32, __FILE__, __LINE__))
#define __all_sync(mask, pred) \
  ((int)::simt::detail::warp_collective(::simt::detail::WarpOp::All, mask, (pred) ? 1 : 0, 0, 32, __FILE__, __LINE__))

namespace simt {
inline unsigned sync_mask() { return 0xffffffffu; }
inline unsigned sync_mask(unsigned m) { return m; }

template <class T>
T shfl(detail::WarpOp op, unsigned mask, T var, const char* file, int line, int arg, int width = 32) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type wider than 8 bytes");
  uint64_t raw = 0;
  std::memcpy(&raw, &var, sizeof(T));
  raw = detail::warp_collective(op, mask, raw, arg, width, file, line);
  T out;
  std::memcpy(&out, &raw, sizeof(T));
  return out;
}
}  // namespace simt

// Atomics: fibers never run concurrently, so a plain read-modify-write is atomic.
template <class T>
inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <class T>
inline T atomicSub(T* p, T v) { T old = *p; *p = old - v; return old; }
template <class T>
inline T atomicMax(T* p, T v) { T old = *p; if (v > old) *p = v; return old; }
template <class T>
inline T atomicMin(T* p, T v) { T old = *p; if (v < old) *p = v; return old; }
template <class T>
inline T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
template <class T>
inline T atomicCAS(T* p, T compare, T v) { T old = *p; if (old == compare) *p = v; return old; }
inline void __threadfence() {}
inline void __threadfence_block() {}

// Device math that the host library lacks under these names.
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
template <class T>
inline T __ldg(const T* p) { return *p; }

// CUDA's device min/max overloads (host C++ has no unqualified min/max).
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }

#include "wmma.h"
