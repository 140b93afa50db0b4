// The norm ops on the CPU (CUDA twins: native/cuda/norm.cuh): RMSNorm and LayerNorm, a row per
// task, double sums. defines: rmsnorm_cpu, layernorm_cpu.
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

}  // namespace medllava
