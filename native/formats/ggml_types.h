// GGML tensor types as GGUF stores them: ids, block sizes and bytes per block (ggml.h's table),
// and conversion of rows to and from f32 with the exact block layouts of ggml-quants.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace medllava {
namespace ggml {

enum Type : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10, Q3_K = 11,
  Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20,
  IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35,
};

struct TypeInfo {
  const char* name;
  uint32_t block_elems;  // elements per block
  uint32_t block_bytes;  // bytes per block
};

// Null for an id GGUF does not define.
const TypeInfo* type_info(uint32_t type);
// Whether dequantize()/quantize() support it.
bool can_dequantize(uint32_t type);
bool can_quantize(uint32_t type);

// n elements (a multiple of the block size) from `src` of `type` to f32. E_UNSUPPORTED otherwise.
void dequantize(uint32_t type, const void* src, float* dst, int64_t n);
// f32 to `type`, as llama.cpp's reference quantizers do (f32, f16, bf16, q8_0, q4_0).
void quantize(uint32_t type, const float* src, void* dst, int64_t n);

}  // namespace ggml
}  // namespace medllava
