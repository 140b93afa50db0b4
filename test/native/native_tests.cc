// Standalone native tests, built with ASan + UBSan by `npm run test:asan` (scripts/asan.mjs).
// They drive the same code as the vitest suites — CPU matmul (AVX2 and scalar), the CUDA matmul
// kernels under the SIMT emulator, the emulator's own kernels and diagnostics — so the sanitizers
// see every path, including the fiber stack switches.
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../../native/core/cpu_features.h"
#include "../../native/core/error.h"
#include "../../native/cuda/matmul.cuh"
#include "../../native/ops/ops.h"
#include "simt_selftest.cuh"

using namespace medllava;

static int g_failed = 0, g_passed = 0;
static void check(bool ok, const std::string& what) {
  if (ok) ++g_passed;
  else { ++g_failed; std::printf("FAIL %s\n", what.c_str()); }
}

// relative norm error of got against a float64 reference
static double rel_err(const std::vector<float>& got, const std::vector<double>& ref) {
  double e = 0, n = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    e += (got[i] - ref[i]) * (got[i] - ref[i]);
    n += ref[i] * ref[i];
  }
  return std::sqrt(e / (n > 0 ? n : 1));
}

static void matmul_case(int M, int N, int K, DType wt, Activation act, std::mt19937& rng) {
  std::normal_distribution<float> d;
  std::vector<float> a((size_t)M * K), w32((size_t)N * K), bias((size_t)N);
  for (auto& x : a) x = d(rng);
  for (auto& x : w32) x = d(rng) / std::sqrt((float)K);
  for (auto& x : bias) x = d(rng);
  std::vector<uint16_t> w16((size_t)N * K);
  for (size_t i = 0; i < w32.size(); ++i) {
    if (wt == DType::F16) { w16[i] = f32_to_f16(w32[i]); w32[i] = f16_to_f32(w16[i]); }
    if (wt == DType::BF16) { w16[i] = f32_to_bf16(w32[i]); w32[i] = bf16_to_f32(w16[i]); }
  }
  const void* w = wt == DType::F32 ? (const void*)w32.data() : (const void*)w16.data();
  std::vector<double> ref((size_t)M * N), ref_rounded((size_t)M * N);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = bias[n], sr = bias[n];
      for (int k = 0; k < K; ++k) {
        s += (double)a[(size_t)m * K + k] * w32[(size_t)n * K + k];
        const float ar = wt == DType::F16 ? f16_to_f32(f32_to_f16(a[(size_t)m * K + k]))
                         : wt == DType::BF16 ? bf16_to_f32(f32_to_bf16(a[(size_t)m * K + k])) : a[(size_t)m * K + k];
        sr += (double)ar * w32[(size_t)n * K + k];
      }
      ref[(size_t)m * N + n] = apply_activation((float)s, act);
      ref_rounded[(size_t)m * N + n] = apply_activation((float)sr, act);
    }
  const std::string name = std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K) + " " + dtype_name(wt) +
                           " act" + std::to_string((int)act);
  std::vector<float> out((size_t)M * N, NAN);
  MatmulArgs p;
  p.a = a.data(); p.w = w; p.w_type = wt; p.bias = bias.data(); p.out = out.data(); p.M = M; p.N = N; p.K = K; p.act = act;
  for (CpuDispatch disp : {CpuDispatch::Auto, CpuDispatch::Scalar}) {
    set_cpu_dispatch(disp);
    std::fill(out.begin(), out.end(), NAN);
    matmul_cpu(p);
    check(rel_err(out, ref) < 1e-5, "cpu " + name + (disp == CpuDispatch::Scalar ? " scalar" : " auto"));
  }
  set_cpu_dispatch(CpuDispatch::Auto);
  for (cuda::MatmulKernel which : {cuda::MatmulKernel::Tiled, cuda::MatmulKernel::TensorCore}) {
    if (which == cuda::MatmulKernel::TensorCore && wt == DType::F32) continue;
    std::fill(out.begin(), out.end(), NAN);
    cuda::matmul_launch(a.data(), w, wt, bias.data(), out.data(), M, N, K, act, which, nullptr);
    const auto& r = which == cuda::MatmulKernel::TensorCore ? ref_rounded : ref;
    check(rel_err(out, r) < 1e-5, "simt " + name + (which == cuda::MatmulKernel::Tiled ? " tiled" : " wmma"));
  }
}

static void expect_error(const std::string& name, const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    check(false, name + ": no error");
  } catch (const Error& e) {
    check(std::string(e.what()).find(needle) != std::string::npos, name + ": got '" + e.what() + "'");
  }
}

int main() {
  std::mt19937 rng(42);
  const int shapes[][3] = {{1, 7, 33}, {7, 33, 129}, {33, 1, 7}, {70, 65, 64}, {129, 130, 257}};
  for (auto& s : shapes)
    for (DType wt : {DType::F32, DType::F16, DType::BF16})
      matmul_case(s[0], s[1], s[2], wt, wt == DType::F32 ? Activation::Gelu : Activation::QuickGelu, rng);

  namespace st = cuda::simt_selftest;
  std::vector<float> in(512), out(1024);
  for (size_t i = 0; i < in.size(); ++i) in[i] = (float)i;
  simt::launch(dim3(2), dim3(64), 0, st::warp_sum, (const float*)in.data(), (void*)out.data(), 0, 0);
  check(out[0] == 496 && out[3] == 96 * 32 + 496, "warp_sum");
  simt::launch(dim3(1), dim3(32), 0, st::wmma_tile, (const float*)in.data(), (void*)out.data(), 0, 0);
  check(std::isfinite(out[0]), "wmma_tile");
  expect_error("bad_exited_lane", [&] { simt::launch(dim3(1), dim3(32), 0, st::bad_exited_lane, (const float*)in.data(), (void*)out.data(), 0, 0); }, "exited");
  expect_error("bad_divergent_barrier", [&] { simt::launch(dim3(1), dim3(32), 0, st::bad_divergent_barrier, (const float*)in.data(), (void*)out.data(), 0, 0); }, "divergent __syncthreads");
  expect_error("bad_barrier_sites", [&] { simt::launch(dim3(1), dim3(32), 0, st::bad_barrier_sites, (const float*)in.data(), (void*)out.data(), 0, 0); }, "divergent __syncthreads");
  expect_error("bad_deadlock", [&] { simt::launch(dim3(1), dim3(64), 0, st::bad_deadlock, (const float*)in.data(), (void*)out.data(), 0, 0); }, "deadlock");
  expect_error("bad_missing_lanes", [&] { simt::launch(dim3(1), dim3(48), 0, st::bad_missing_lanes, (const float*)in.data(), (void*)out.data(), 0, 0); }, "do not exist");
  expect_error("bad_wmma_divergent", [&] { simt::launch(dim3(1), dim3(32), 0, st::bad_wmma_divergent, (const float*)in.data(), (void*)out.data(), 0, 0); }, "exited");
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
