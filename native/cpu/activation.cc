// The activation ops on the CPU (CUDA twins: native/cuda/activation.cuh): SiLU·mul (SwiGLU) and
// GELU / quick_gelu, and their backwards. defines: silu_mul_cpu, activation_cpu, silu_mul_backward_cpu,
// activation_backward_cpu.
#include <cmath>

#include "../ops/ops.h"

namespace medllava {

void silu_mul_cpu(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void activation_cpu(const float* x, float* out, int64_t n, Activation act) {
  for (int64_t i = 0; i < n; ++i) out[i] = apply_activation(x[i], act);
}

void silu_mul_backward_cpu(const float* dout, const float* gate, const float* up, float* dgate, float* dup, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i], sg = 1.0f / (1.0f + std::exp(-g));
    dgate[i] += dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
    dup[i] += dout[i] * g * sg;
  }
}

void activation_backward_cpu(const float* dout, const float* x, float* dx, int64_t n, Activation act) {
  switch (act) {
    case Activation::Gelu:  // Φ(x) + x·φ(x)
      for (int64_t i = 0; i < n; ++i) {
        const double v = x[i], cdf = 0.5 * (1.0 + std::erf(v * 0.70710678118654752)), pdf = 0.39894228040143268 * std::exp(-0.5 * v * v);
        dx[i] += (float)(dout[i] * (cdf + v * pdf));
      }
      break;
    case Activation::QuickGelu:  // σ(1.702x) + 1.702·x·σ·(1 − σ)
      for (int64_t i = 0; i < n; ++i) {
        const double v = x[i], sg = 1.0 / (1.0 + std::exp(-1.702 * v));
        dx[i] += (float)(dout[i] * (sg + 1.702 * v * sg * (1.0 - sg)));
      }
      break;
    default:
      for (int64_t i = 0; i < n; ++i) dx[i] += dout[i];
  }
}

}  // namespace medllava
