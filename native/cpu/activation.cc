// The activation ops on the CPU (CUDA twins: native/cuda/activation.cuh): SiLU·mul (SwiGLU) and
// GELU / quick_gelu, and SiLU·mul's backward. defines: silu_mul_cpu, activation_cpu, silu_mul_backward_cpu.
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

}  // namespace medllava
