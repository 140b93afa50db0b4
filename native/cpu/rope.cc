// RoPE on the CPU (CUDA twin: native/cuda/rope.cuh): angles in double. defines: rope_cpu, rope_backward_cpu.
#include <cmath>
#include <vector>

#include "../ops/ops.h"

namespace medllava {

namespace {
// rotates each pair by sign · angle (the forward: +1; its transpose, the backward: −1)
void rotate(float* x, int64_t T, int64_t heads, int64_t hd, int64_t pos0, float theta, RopeMode mode, float sign) {
  std::vector<double> inv(hd / 2);
  for (int64_t i = 0; i < hd / 2; ++i) inv[i] = std::pow((double)theta, -2.0 * (double)i / (double)hd);
  for (int64_t t = 0; t < T; ++t) {
    const double pos = (double)(pos0 + t);
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * hd;
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double a = pos * inv[i];
        const float c = (float)std::cos(a), s = sign * (float)std::sin(a);
        const int64_t i0 = mode == RopeMode::Half ? i : 2 * i;
        const int64_t i1 = mode == RopeMode::Half ? i + hd / 2 : 2 * i + 1;
        const float x0 = v[i0], x1 = v[i1];
        v[i0] = x0 * c - x1 * s;
        v[i1] = x1 * c + x0 * s;
      }
    }
  }
}

}  // namespace

void rope_cpu(float* x, int64_t T, int64_t heads, int64_t hd, int64_t pos0, float theta, RopeMode mode) {
  rotate(x, T, heads, hd, pos0, theta, mode, 1.0f);
}

void rope_backward_cpu(float* dx, int64_t T, int64_t heads, int64_t hd, int64_t pos0, float theta, RopeMode mode) {
  rotate(dx, T, heads, hd, pos0, theta, mode, -1.0f);
}

}  // namespace medllava
