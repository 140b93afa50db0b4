// THE list of ops. One declaration each, shapes in comments. Each op lives in exactly four places:
// this declaration, native/cpu/<family>.cc, native/cuda/<family>.cuh (+ launcher in .cu), and
// test/kernels/<family>.test.ts.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../core/dtype.h"
#include "activation.h"  // defines: Activation, apply_activation

namespace medllava {

// ---- matmul family: native/cpu/matmul.cc, native/cuda/matmul.cuh --------------------------
struct MatmulArgs {
  const float* a = nullptr;     // (M, K) row-major activations
  const void* w = nullptr;      // (N, K) row-major, as PyTorch's Linear stores it; dtype w_type
  DType w_type = DType::F32;
  const float* bias = nullptr;  // (N) or null
  float* out = nullptr;         // (M, N)
  int64_t M = 0, N = 0, K = 0;
  Activation act = Activation::None;
};

// out = act(a · wᵀ + bias). fp32 accumulation.
void matmul_cpu(const MatmulArgs& args);
// The plain scalar twin, always compiled (the fallback when AVX2/FMA/F16C are absent).
void matmul_cpu_scalar(const MatmulArgs& args);

// ---- roofline helpers used by bench/ ------------------------------------------------------
// Runs independent FMA chains on `threads` threads for about `ms` milliseconds; returns GFLOP/s.
double measure_fma_peak(int threads, int ms);

}  // namespace medllava
