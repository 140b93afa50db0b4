// The activation epilogues, one definition for every backend (CPU, CUDA, and CUDA kernels
// running under the SIMT emulator).
#pragma once
#include <cmath>

#include "../core/hd.h"  // defines: MEDLLAVA_HD

namespace medllava {

// Epilogue applied to each output element after the bias add.
enum class Activation : int {
  None = 0,
  Gelu = 1,       // exact GELU, x/2 · (1 + erf(x/√2))  (nn.GELU(): LLaVA's mlp2x_gelu projector)
  QuickGelu = 2,  // x · sigmoid(1.702 x)               (OpenAI CLIP's MLP)
};

MEDLLAVA_HD inline float apply_activation(float x, Activation act) {
  switch (act) {
    case Activation::Gelu: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case Activation::QuickGelu: return x / (1.0f + expf(-1.702f * x));
    default: return x;
  }
}

}  // namespace medllava
