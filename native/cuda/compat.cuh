// What a kernel file includes instead of the CUDA headers. Under nvcc it is CUDA; in test builds
// (MEDLLAVA_SIMT) it is the SIMT emulator, which runs the same kernel source on the CPU.
#pragma once

#if defined(MEDLLAVA_SIMT)
#include "../simt/cuda_api.h"
using medllava_stream_t = void*;
// Dynamic shared memory: one macro, because `extern __shared__ T name[]` has no host meaning.
#define MEDLLAVA_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(::simt::detail::dynamic_shared())
// Replaces <<<>>>. `kernel` must be a single token (take a pointer to a template instance first).
#define MEDLLAVA_LAUNCH(kernel, grid, block, smem, stream, ...) ::simt::launch(grid, block, smem, kernel, __VA_ARGS__)
#define MEDLLAVA_LAUNCH_CHECK() ((void)0)
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>
using medllava_stream_t = cudaStream_t;
#define MEDLLAVA_DYNAMIC_SHARED(type, name)                    \
  extern __shared__ __align__(16) unsigned char name##_raw[]; \
  type* name = reinterpret_cast<type*>(name##_raw)
#define MEDLLAVA_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#endif
