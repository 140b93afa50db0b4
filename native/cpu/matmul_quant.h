// The quantized matmul paths of native/cpu/matmul_quant.cc, for matmul.cc's dispatch.
// defines: gemv_q_avx2, matmul_vnni_x16, kquant_block.
#pragma once
#include "../formats/ggml_types.h"
#include "../ops/ops.h"

namespace medllava {
// Super-block b of row n of a K-quant weight, as f32 (256 values).
inline void kquant_block(const MatmulArgs& p, int64_t n, int64_t b, float* out) {
  const size_t bb = dtype_block_bytes(p.w_type);
  const uint8_t* src = static_cast<const uint8_t*>(p.w) + ((size_t)n * (size_t)(p.K / kQKBlock) + (size_t)b) * bb;
  ggml::dequantize(p.w_type == DType::Q4_K ? ggml::Q4_K : ggml::Q6_K, src, out, kQKBlock);
}

// decode (M ≤ 2) on block weights: Q8_0 / Q4_0 as int8 dots against Q8_0 activations, K-quants in fp32
void gemv_q_avx2(const MatmulArgs& p);
// block weights repacked by repack_x16, on AVX-512 VNNI
void matmul_vnni_x16(const MatmulArgs& p);
}  // namespace medllava
