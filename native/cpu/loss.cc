// The loss and the optimizer on the CPU (CUDA twins: native/cuda/loss.cuh): cross-entropy over the
// vocabulary with its gradient in place, AdamW, and a gradient's sum of squares (the global norm).
// defines: cross_entropy_cpu, adamw_cpu, sum_squares_cpu.
#include <cmath>
#include <string>
#include <vector>

#include "../core/cpu_features.h"
#include "../core/error.h"
#include "../core/thread_pool.h"
#include "../ops/ops.h"
#include "vec_avx2.h"  // defines: exp_avx2

namespace medllava {

namespace {
// One row's gradient: row ← k · softmax(row) (the caller subtracts k at the target); returns
// logsumexp(row). The scalar twin in double; AVX2: e^x on 8 lanes in float, the sum in double.
double ce_row_scalar(float* row, int64_t V, double k) {
  float m = -INFINITY;
  for (int64_t i = 0; i < V; ++i) m = row[i] > m ? row[i] : m;
  double z = 0;
  for (int64_t i = 0; i < V; ++i) z += std::exp((double)row[i] - m);
  const double lz = m + std::log(z);
  for (int64_t i = 0; i < V; ++i) row[i] = (float)(k * std::exp((double)row[i] - lz));
  return lz;
}
__attribute__((target("avx2,fma"))) double ce_row_avx2(float* row, int64_t V, double k) {
  __m256 m8 = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= V; i += 8) m8 = _mm256_max_ps(m8, _mm256_loadu_ps(row + i));
  alignas(32) float ml[8];
  _mm256_store_ps(ml, m8);
  float m = ml[0];
  for (int j = 1; j < 8; ++j) m = ml[j] > m ? ml[j] : m;
  for (; i < V; ++i) m = row[i] > m ? row[i] : m;
  const __m256 vm = _mm256_set1_ps(m);
  __m256d z4 = _mm256_setzero_pd();
  for (i = 0; i + 8 <= V; i += 8) {  // e^(x − m) in float, summed in double
    const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(row + i), vm));
    z4 = _mm256_add_pd(z4, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(e)), _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1))));
  }
  alignas(32) double zl[4];
  _mm256_store_pd(zl, z4);
  double z = zl[0] + zl[1] + zl[2] + zl[3];
  for (; i < V; ++i) z += std::exp((double)row[i] - m);
  const double lz = m + std::log(z);
  // e^((x − m) − log z) in float: the roundings are relative to the row's spread (x − m, log z ≤ log V),
  // not to |lse| (an f32 lse near 100 is already 4e-6 off, and so would be each p)
  const __m256 vlogz = _mm256_set1_ps((float)std::log(z)), vk = _mm256_set1_ps((float)k);
  for (i = 0; i + 8 <= V; i += 8)
    _mm256_storeu_ps(row + i, _mm256_mul_ps(vk, exp_avx2(_mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(row + i), vm), vlogz))));
  for (; i < V; ++i) row[i] = (float)(k * std::exp((double)row[i] - lz));
  return lz;
}
}  // namespace

void cross_entropy_cpu(float* logits, const int32_t* targets, const float* weights, float* loss, int64_t N, int64_t V, float scale) {
  for (int64_t n = 0; n < N; ++n)
    if (targets[n] >= V)
      throw Error(ErrorCode::Argument, "a label (" + std::to_string(targets[n]) + ") is outside the vocabulary of " + std::to_string(V));
  ThreadPool::instance().parallel_for((size_t)N, [&](size_t task, int) {
    const int64_t n = (int64_t)task;
    float* row = logits + n * V;
    const int32_t y = targets[n];
    if (y < 0) {  // ignored (−100): no loss, no gradient
      loss[n] = 0;
      for (int64_t i = 0; i < V; ++i) row[i] = 0;
      return;
    }
    const double w = weights ? weights[n] : 1.0, k = scale * w;
    const float target = row[y];
    const double lz = use_avx2() ? ce_row_avx2(row, V, k) : ce_row_scalar(row, V, k);
    loss[n] = (float)(w * (lz - target));
    row[y] -= (float)k;
  });
}

namespace {
// AdamW over [i0, i1): the scalar twin and 8 lanes of AVX2
struct AdamWStep {
  float b1, b2, decay, lr, eps, gs, ib1, ib2;
};
void adamw_range(float* p, const float* grad, float* m, float* v, int64_t i0, int64_t i1, const AdamWStep& s) {
  for (int64_t i = i0; i < i1; ++i) {
    const float g = grad[i] * s.gs;
    m[i] = s.b1 * m[i] + (1.0f - s.b1) * g;
    v[i] = s.b2 * v[i] + (1.0f - s.b2) * g * g;
    p[i] -= s.decay * p[i];
    p[i] -= s.lr * (m[i] * s.ib1) / (std::sqrt(v[i] * s.ib2) + s.eps);
  }
}
// the same operations in the same order on 8 lanes (no FMA: each product rounded as the scalar twin's)
__attribute__((target("avx2"))) void adamw_range_avx2(float* p, const float* grad, float* m, float* v, int64_t i0, int64_t i1,
                                                      const AdamWStep& s) {
  const __m256 b1 = _mm256_set1_ps(s.b1), c1 = _mm256_set1_ps(1.0f - s.b1), b2 = _mm256_set1_ps(s.b2), c2 = _mm256_set1_ps(1.0f - s.b2);
  const __m256 gs = _mm256_set1_ps(s.gs), decay = _mm256_set1_ps(s.decay), lr = _mm256_set1_ps(s.lr), eps = _mm256_set1_ps(s.eps);
  const __m256 ib1 = _mm256_set1_ps(s.ib1), ib2 = _mm256_set1_ps(s.ib2);
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) {
    const __m256 g = _mm256_mul_ps(_mm256_loadu_ps(grad + i), gs);
    const __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(c1, g));
    const __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(_mm256_mul_ps(c2, g), g));
    __m256 pi = _mm256_loadu_ps(p + i);
    pi = _mm256_sub_ps(pi, _mm256_mul_ps(decay, pi));
    const __m256 den = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(vi, ib2)), eps);
    pi = _mm256_sub_ps(pi, _mm256_div_ps(_mm256_mul_ps(lr, _mm256_mul_ps(mi, ib1)), den));
    _mm256_storeu_ps(m + i, mi), _mm256_storeu_ps(v + i, vi), _mm256_storeu_ps(p + i, pi);
  }
  adamw_range(p, grad, m, v, i, i1, s);
}
}  // namespace

void adamw_cpu(float* p, const float* grad, float* m, float* v, int64_t n, const AdamWArgs& a) {
  const double bc1 = 1.0 - std::pow((double)a.beta1, (double)a.step), bc2 = 1.0 - std::pow((double)a.beta2, (double)a.step);
  AdamWStep s{a.beta1, a.beta2, a.lr * a.weight_decay, a.lr, a.eps, a.grad_scale, (float)(1.0 / bc1), (float)(1.0 / bc2)};
  const bool avx2 = use_avx2();
  constexpr int64_t kChunk = 1 << 14;
  ThreadPool::instance().parallel_for((size_t)((n + kChunk - 1) / kChunk), [&](size_t task, int) {
    const int64_t i0 = (int64_t)task * kChunk, i1 = i0 + kChunk < n ? i0 + kChunk : n;
    if (avx2) adamw_range_avx2(p, grad, m, v, i0, i1, s);
    else adamw_range(p, grad, m, v, i0, i1, s);
  });
}

void sum_squares_cpu(const float* x, int64_t n, double* out) {
  // fixed chunks, each summed in double, the chunks' sums added in order: the same result on any
  // number of threads
  constexpr int64_t kChunk = 1 << 16;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part((size_t)chunks, 0.0);
  ThreadPool::instance().parallel_for((size_t)chunks, [&](size_t c, int) {
    const int64_t i0 = (int64_t)c * kChunk, i1 = i0 + kChunk < n ? i0 + kChunk : n;
    double s = 0;
    for (int64_t i = i0; i < i1; ++i) s += (double)x[i] * x[i];
    part[c] = s;
  });
  double s = 0;
  for (double v : part) s += v;
  *out = s;
}

}  // namespace medllava
