// Element-wise and gather ops on the CPU (CUDA twins: native/cuda/elements.cuh, same names without
// _launch, same arguments): the residual add, the embedding gather of every stored type, the f16 KV
// append. defines: residual_cpu, embed_cpu, kv_append_cpu.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "../core/error.h"
#include "../formats/ggml_types.h"
#include "../ops/ops.h"

namespace medllava {

void residual_cpu(float* h, const float* a, const float* gamma, float scale, int64_t n, int64_t D) {
  if (!gamma) {
    if (scale == 1.0f)
      for (int64_t i = 0; i < n; ++i) h[i] += a[i];
    else
      for (int64_t i = 0; i < n; ++i) h[i] += scale * a[i];
    return;
  }
  // row by row (no per-element modulo: this runs on every ViT layer's residuals)
  int64_t i = 0;
  for (; i + D <= n; i += D)
    for (int64_t d = 0; d < D; ++d) h[i + d] += scale * gamma[d] * a[i + d];
  for (int64_t d = 0; i < n; ++i, ++d) h[i] += scale * gamma[d] * a[i];
}

void embed_cpu(const void* table, DType type, const int32_t* ids, float* out, int64_t T, int64_t D) {
  for (int64_t t = 0; t < T; ++t) {
    const uint8_t* row = static_cast<const uint8_t*>(table) + dtype_bytes(type, (int64_t)ids[t] * D);
    float* o = out + t * D;
    switch (type) {
      case DType::F32: std::memcpy(o, row, (size_t)D * 4); break;
      case DType::F16: for (int64_t i = 0; i < D; ++i) o[i] = f16_to_f32(reinterpret_cast<const uint16_t*>(row)[i]); break;
      case DType::BF16: for (int64_t i = 0; i < D; ++i) o[i] = bf16_to_f32(reinterpret_cast<const uint16_t*>(row)[i]); break;
      case DType::Q8_0: ggml::dequantize(ggml::Q8_0, row, o, D); break;
      case DType::Q4_0: ggml::dequantize(ggml::Q4_0, row, o, D); break;
      case DType::Q4_K: ggml::dequantize(ggml::Q4_K, row, o, D); break;
      case DType::Q6_K: ggml::dequantize(ggml::Q6_K, row, o, D); break;
    }
  }
}

void kv_append_cpu(const float* src, uint16_t* cache, int64_t pos, int64_t T, int64_t width) {
  uint16_t* dst = cache + pos * width;
  for (int64_t i = 0; i < T * width; ++i) dst[i] = f32_to_f16(src[i]);
}

}  // namespace medllava
