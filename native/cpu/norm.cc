// The norm ops on the CPU (CUDA twins: native/cuda/norm.cuh): RMSNorm and LayerNorm, a row per
// task, double sums; the RMSNorm backward. defines: rmsnorm_cpu, layernorm_cpu, rmsnorm_backward_cpu,
// layernorm_backward_cpu.
#include <cmath>

#include "../core/thread_pool.h"
#include "../ops/ops.h"

namespace medllava {

void rmsnorm_cpu(const float* x, const float* w, float* out, int64_t T, int64_t D, float eps, float* rstd) {
  ThreadPool::instance().parallel_for((size_t)T, [&](size_t t, int) {
    const float* row = x + (int64_t)t * D;
    double ss = 0;  // a double sum keeps the norm exact to fp32 for any D
    for (int64_t i = 0; i < D; ++i) ss += (double)row[i] * row[i];
    const float k = (float)(1.0 / std::sqrt(ss / (double)D + eps));
    if (rstd) rstd[t] = k;
    float* o = out + (int64_t)t * D;
    for (int64_t i = 0; i < D; ++i) o[i] = row[i] * k * w[i];
  });
}

void layernorm_cpu(const float* x, const float* w, const float* b, float* out, int64_t T, int64_t D, float eps, float* mean_out,
                   float* rstd) {
  ThreadPool::instance().parallel_for((size_t)T, [&](size_t t, int) {
    const float* row = x + (int64_t)t * D;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < D; ++i) mean += row[i];
    mean /= (double)D;
    for (int64_t i = 0; i < D; ++i) var += ((double)row[i] - mean) * ((double)row[i] - mean);
    const float k = (float)(1.0 / std::sqrt(var / (double)D + eps));
    const float m = (float)mean;
    if (mean_out) mean_out[t] = m;
    if (rstd) rstd[t] = k;
    float* o = out + (int64_t)t * D;
    for (int64_t i = 0; i < D; ++i) o[i] = (row[i] - m) * k * w[i] + b[i];
  });
}

void rmsnorm_backward_cpu(const float* dy, const float* x, const float* w, const float* rstd, float* dx, float* dw, int64_t T, int64_t D) {
  ThreadPool::instance().parallel_for((size_t)T, [&](size_t t, int) {
    const float *dyr = dy + (int64_t)t * D, *xr = x + (int64_t)t * D;
    const double r = rstd[t];
    double dot = 0;  // Σ dy·w·x, in double as the forward's sum
    for (int64_t i = 0; i < D; ++i) dot += (double)dyr[i] * w[i] * xr[i];
    const double c = dot * r * r * r / (double)D;
    float* o = dx + (int64_t)t * D;
    for (int64_t i = 0; i < D; ++i) o[i] += (float)(r * dyr[i] * w[i] - c * xr[i]);
  });
  if (!dw) return;
  // columns in parallel: each dw element is one task's sum over the rows (no races, a fixed order)
  ThreadPool::instance().parallel_for((size_t)((D + 63) / 64), [&](size_t task, int) {
    const int64_t d0 = (int64_t)task * 64, d1 = d0 + 64 < D ? d0 + 64 : D;
    for (int64_t i = d0; i < d1; ++i) {
      double acc = 0;
      for (int64_t t = 0; t < T; ++t) acc += (double)dy[t * D + i] * x[t * D + i] * rstd[t];
      dw[i] += (float)acc;
    }
  });
}

void layernorm_backward_cpu(const float* dy, const float* x, const float* w, const float* mean, const float* rstd, float* dx, float* dw,
                            float* db, int64_t T, int64_t D) {
  ThreadPool::instance().parallel_for((size_t)T, [&](size_t t, int) {
    const float *dyr = dy + (int64_t)t * D, *xr = x + (int64_t)t * D;
    const double m = mean[t], r = rstd[t];
    double sg = 0, sgx = 0;  // Σ g and Σ g·x̂ with g = dy ⊙ w
    for (int64_t i = 0; i < D; ++i) {
      const double g = (double)dyr[i] * w[i];
      sg += g;
      sgx += g * ((xr[i] - m) * r);
    }
    sg /= (double)D, sgx /= (double)D;
    float* o = dx + (int64_t)t * D;
    for (int64_t i = 0; i < D; ++i) o[i] += (float)(r * ((double)dyr[i] * w[i] - sg - (xr[i] - m) * r * sgx));
  });
  if (!dw && !db) return;
  ThreadPool::instance().parallel_for((size_t)((D + 63) / 64), [&](size_t task, int) {
    const int64_t d0 = (int64_t)task * 64, d1 = d0 + 64 < D ? d0 + 64 : D;
    for (int64_t i = d0; i < d1; ++i) {
      double aw = 0, ab = 0;
      for (int64_t t = 0; t < T; ++t) {
        const double g = dy[t * D + i];
        aw += g * (((double)x[t * D + i] - mean[t]) * rstd[t]);
        ab += g;
      }
      if (dw) dw[i] += (float)aw;
      if (db) db[i] += (float)ab;
    }
  });
}

}  // namespace medllava
