// Element types the core computes with, and exact scalar conversions between them.
// The conversions are bit-exact IEEE (round-to-nearest-even), so the CPU reference, the AVX2
// path (F16C) and CUDA's __float2half agree on every value.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#include "error.h"
#include "hd.h"  // defines: MEDLLAVA_HD

namespace medllava {

// Weight types. Q8_0 / Q4_0 are GGML's 32-element blocks (an f16 scale + int8 / 4-bit values);
// Q4_K / Q6_K its 256-element super-blocks. A row of them must hold whole blocks.
enum class DType { F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K };

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::Q8_0: return "q8_0";
    case DType::Q4_0: return "q4_0";
    case DType::Q4_K: return "q4_k";
    case DType::Q6_K: return "q6_k";
  }
  return "?";
}

inline DType parse_dtype(const std::string& s) {
  if (s == "f32") return DType::F32;
  if (s == "f16") return DType::F16;
  if (s == "bf16") return DType::BF16;
  if (s == "q8_0") return DType::Q8_0;
  if (s == "q4_0") return DType::Q4_0;
  if (s == "q4_k") return DType::Q4_K;
  if (s == "q6_k") return DType::Q6_K;
  throw Error(ErrorCode::Argument, "dtype must be 'f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_k' or 'q6_k', got '" + s + "'");
}

MEDLLAVA_HD inline bool dtype_is_kquant(DType t) { return t == DType::Q4_K || t == DType::Q6_K; }
MEDLLAVA_HD inline bool dtype_is_block(DType t) { return t == DType::Q8_0 || t == DType::Q4_0 || dtype_is_kquant(t); }
constexpr int64_t kQBlock = 32;    // elements per Q8_0 / Q4_0 block
constexpr int64_t kQKBlock = 256;  // elements per Q4_K / Q6_K super-block
MEDLLAVA_HD inline int64_t dtype_block_elems(DType t) { return dtype_is_kquant(t) ? kQKBlock : dtype_is_block(t) ? kQBlock : 1; }
MEDLLAVA_HD inline size_t dtype_block_bytes(DType t) {
  switch (t) {
    case DType::Q8_0: return 34;
    case DType::Q4_0: return 18;
    case DType::Q4_K: return 144;
    case DType::Q6_K: return 210;
    default: return 0;
  }
}

// Bytes per element of an unblocked type (F32, F16, BF16).
MEDLLAVA_HD inline size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }

// Bytes of n elements (n a whole number of blocks for block types).
MEDLLAVA_HD inline size_t dtype_bytes(DType t, int64_t n) {
  return dtype_is_block(t) ? (size_t)(n / dtype_block_elems(t)) * dtype_block_bytes(t) : (size_t)n * dtype_size(t);
}

inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  if (exp == 0) {
    if (man == 0) return bits_f32(sign);
    // subnormal: normalise
    int e = -1;
    do { man <<= 1; ++e; } while (!(man & 0x400));
    man &= 0x3ff;
    return bits_f32(sign | (uint32_t)(127 - 15 - e) << 23 | man << 13);
  }
  if (exp == 31) return bits_f32(sign | 0x7f800000u | man << 13);
  return bits_f32(sign | (exp + 127 - 15) << 23 | man << 13);
}

inline uint16_t f32_to_f16(float f) {
  uint32_t u = f32_bits(f);
  uint32_t sign = (u >> 16) & 0x8000;
  uint32_t abs = u & 0x7fffffff;
  if (abs > 0x7f800000) return (uint16_t)(sign | 0x7e00 | ((abs >> 13) & 0x3ff));  // NaN
  if (abs >= 0x477ff000) return (uint16_t)(sign | 0x7c00);  // rounds to >= 65520: inf
  if (abs < 0x38800000) {
    // result is subnormal or zero: shift the full mantissa, round to nearest even
    if (abs < 0x33000000) return (uint16_t)sign;  // < 2^-25: rounds to zero
    uint32_t e = abs >> 23;
    uint32_t man = (abs & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e;  // 14 + (113 - e) ... maps 2^-14 scale to mantissa bits
    uint32_t half_man = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half_man & 1))) ++half_man;
    return (uint16_t)(sign | half_man);
  }
  uint32_t r = abs + 0xfff + ((abs >> 13) & 1) - (112u << 23);  // rebias 127 -> 15, RNE
  return (uint16_t)(sign | (r >> 13));
}

inline float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

}  // namespace medllava
