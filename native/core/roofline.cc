// The machine's roofline, measured in the run that reports against it (bench/): the FMA peak and the
// memory read bandwidth. defines: measure_fma_peak, measure_read_bandwidth.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "../ops/ops.h"
#include "cpu_features.h"
#include "error.h"

namespace medllava {

namespace {
__attribute__((target("avx2,fma"))) double fma_chains(int64_t iters) {
  // 12 independent accumulators cover FMA latency (4-5 cycles) × 2 FMA ports.
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(0.001f * (float)i);
  const __m256 mul = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], mul, add);
  }
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  return out[0];
}
// The same with 512-bit registers: twice the lanes per instruction.
__attribute__((target("avx512f"))) double fma_chains_512(int64_t iters) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(0.001f * (float)i);
  const __m512 mul = _mm512_set1_ps(0.999999f), add = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], mul, add);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float out[16];
  _mm512_store_ps(out, s);
  return out[0];
}
}  // namespace

double measure_fma_peak(int threads, int ms) {
  if (!cpu_features().avx2 || !cpu_features().fma)
    throw Error(ErrorCode::Unsupported, "measure_fma_peak needs AVX2+FMA");
  if (threads < 1) throw Error(ErrorCode::Argument, "measure_fma_peak: threads must be >= 1");
  // Calibrate iterations on one thread, then run one OS thread per requested thread for ~ms.
  // Dedicated threads (not the pool's dynamic hand-out) so each thread runs exactly one chain.
  // the widest FMA the CPU has: the peak the kernels are judged against
  const bool wide = cpu_features().avx512f;
  double (*chains)(int64_t) = wide ? fma_chains_512 : fma_chains;
  const int lanes = wide ? 16 : 8;
  auto t0 = std::chrono::steady_clock::now();
  volatile double sink = chains(1 << 20);
  double calib = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t iters = (int64_t)((double)(1 << 20) * (ms / 1000.0) / std::max(calib, 1e-6));
  std::vector<std::thread> pool;
  std::vector<double> results((size_t)threads);
  t0 = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { results[(size_t)t] = chains(iters); });
  for (auto& t : pool) t.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (double r : results) sink = sink + r;
  (void)sink;
  return (double)iters * 12 * lanes * 2 * threads / secs / 1e9;
}

namespace {
__attribute__((target("avx2,fma"))) float sum_floats(const float* p, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_add_ps(s0, _mm256_load_ps(p + i));
    s1 = _mm256_add_ps(s1, _mm256_load_ps(p + i + 8));
    s2 = _mm256_add_ps(s2, _mm256_load_ps(p + i + 16));
    s3 = _mm256_add_ps(s3, _mm256_load_ps(p + i + 24));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}
}  // namespace

double measure_read_bandwidth(int threads, int64_t bytes) {
  if (!cpu_features().avx2) throw Error(ErrorCode::Unsupported, "measure_read_bandwidth needs AVX2");
  if (threads < 1 || bytes < (1 << 20)) throw Error(ErrorCode::Argument, "measure_read_bandwidth: threads >= 1, bytes >= 1 MiB");
  const int64_t n = bytes / 4 / threads / 32 * 32;
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::vector<std::unique_ptr<float, Free>> bufs;
  for (int t = 0; t < threads; ++t) {
    float* p = static_cast<float*>(std::aligned_alloc(64, (size_t)n * 4));
    if (!p) throw Error(ErrorCode::OOM, "measure_read_bandwidth: cannot allocate its buffers");
    bufs.emplace_back(p);
    std::fill(bufs.back().get(), bufs.back().get() + n, 1.0f);  // touch: real pages, not the zero page
  }
  std::vector<float> sinks((size_t)threads);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {  // best of 3: the machine is shared
    std::vector<std::thread> pool;
    const auto t0 = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { sinks[(size_t)t] += sum_floats(bufs[(size_t)t].get(), n); });
    for (auto& th : pool) th.join();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, (double)n * 4 * threads / secs / 1e9);
  }
  volatile float keep = sinks[0];
  (void)keep;
  return best;
}

}  // namespace medllava
