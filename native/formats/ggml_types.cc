#include "ggml_types.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../core/dtype.h"
#include "../core/error.h"

namespace medllava {
namespace ggml {

const TypeInfo* type_info(uint32_t type) {
  static const TypeInfo kF32{"F32", 1, 4}, kF16{"F16", 1, 2}, kQ4_0{"Q4_0", 32, 18}, kQ4_1{"Q4_1", 32, 20},
      kQ5_0{"Q5_0", 32, 22}, kQ5_1{"Q5_1", 32, 24}, kQ8_0{"Q8_0", 32, 34}, kQ8_1{"Q8_1", 32, 36},
      kQ2_K{"Q2_K", 256, 84}, kQ3_K{"Q3_K", 256, 110}, kQ4_K{"Q4_K", 256, 144}, kQ5_K{"Q5_K", 256, 176},
      kQ6_K{"Q6_K", 256, 210}, kQ8_K{"Q8_K", 256, 292}, kIQ2_XXS{"IQ2_XXS", 256, 66}, kIQ2_XS{"IQ2_XS", 256, 74},
      kIQ3_XXS{"IQ3_XXS", 256, 98}, kIQ1_S{"IQ1_S", 256, 50}, kIQ4_NL{"IQ4_NL", 32, 18}, kIQ3_S{"IQ3_S", 256, 110},
      kIQ2_S{"IQ2_S", 256, 82}, kIQ4_XS{"IQ4_XS", 256, 136}, kI8{"I8", 1, 1}, kI16{"I16", 1, 2}, kI32{"I32", 1, 4},
      kI64{"I64", 1, 8}, kF64{"F64", 1, 8}, kIQ1_M{"IQ1_M", 256, 56}, kBF16{"BF16", 1, 2}, kTQ1_0{"TQ1_0", 256, 54},
      kTQ2_0{"TQ2_0", 256, 66};
  switch (type) {
    case F32: return &kF32; case F16: return &kF16; case Q4_0: return &kQ4_0; case Q4_1: return &kQ4_1;
    case Q5_0: return &kQ5_0; case Q5_1: return &kQ5_1; case Q8_0: return &kQ8_0; case Q8_1: return &kQ8_1;
    case Q2_K: return &kQ2_K; case Q3_K: return &kQ3_K; case Q4_K: return &kQ4_K; case Q5_K: return &kQ5_K;
    case Q6_K: return &kQ6_K; case Q8_K: return &kQ8_K; case IQ2_XXS: return &kIQ2_XXS; case IQ2_XS: return &kIQ2_XS;
    case IQ3_XXS: return &kIQ3_XXS; case IQ1_S: return &kIQ1_S; case IQ4_NL: return &kIQ4_NL; case IQ3_S: return &kIQ3_S;
    case IQ2_S: return &kIQ2_S; case IQ4_XS: return &kIQ4_XS; case I8: return &kI8; case I16: return &kI16;
    case I32: return &kI32; case I64: return &kI64; case F64: return &kF64; case IQ1_M: return &kIQ1_M;
    case BF16: return &kBF16; case TQ1_0: return &kTQ1_0; case TQ2_0: return &kTQ2_0;
    default: return nullptr;
  }
}

bool can_dequantize(uint32_t t) {
  switch (t) {
    case F32: case F16: case BF16: case Q4_0: case Q4_1: case Q5_0: case Q5_1: case Q8_0: case Q4_K: case Q5_K:
    case Q6_K: return true;
    default: return false;
  }
}

bool can_quantize(uint32_t t) { return t == F32 || t == F16 || t == BF16 || t == Q8_0 || t == Q4_0; }

namespace {
inline float half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}
inline void put_half(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

// The 6-bit scale and min of sub-block j of a Q4_K / Q5_K super-block (12 packed bytes).
inline void scale_min_k4(int j, const uint8_t* q, int* d, int* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void dequant_block(uint32_t t, const uint8_t* b, float* y) {
  switch (t) {
    case Q4_0: {  // d, qs[16]: element j in the low nibble of qs[j], element j+16 in the high one
      const float d = half(b);
      for (int j = 0; j < 16; ++j) {
        y[j] = (float)((b[2 + j] & 0xF) - 8) * d;
        y[j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
      }
      break;
    }
    case Q4_1: {  // d, m, qs[16]
      const float d = half(b), m = half(b + 2);
      for (int j = 0; j < 16; ++j) {
        y[j] = (float)(b[4 + j] & 0xF) * d + m;
        y[j + 16] = (float)(b[4 + j] >> 4) * d + m;
      }
      break;
    }
    case Q5_0: case Q5_1: {  // d, (m), qh (32 fifth bits), qs[16]
      const bool q51 = t == Q5_1;
      const float d = half(b), m = q51 ? half(b + 2) : 0.0f;
      uint32_t qh;
      std::memcpy(&qh, b + (q51 ? 4 : 2), 4);
      const uint8_t* qs = b + (q51 ? 8 : 6);
      for (int j = 0; j < 16; ++j) {
        const int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
        const int x0 = (qs[j] & 0xF) | h0, x1 = (qs[j] >> 4) | h1;
        y[j] = q51 ? (float)x0 * d + m : (float)(x0 - 16) * d;
        y[j + 16] = q51 ? (float)x1 * d + m : (float)(x1 - 16) * d;
      }
      break;
    }
    case Q8_0: {  // d, qs[32] int8
      const float d = half(b);
      for (int j = 0; j < 32; ++j) y[j] = (float)(int8_t)b[2 + j] * d;
      break;
    }
    case Q4_K: {  // d, dmin, scales[12], qs[128]: 8 sub-blocks of 32 with 6-bit scales and mins
      const float d = half(b), dmin = half(b + 2);
      const uint8_t* sc = b + 4;
      const uint8_t* q = b + 16;
      for (int j = 0, is = 0; j < 256; j += 64, is += 2, q += 32) {
        int s1, m1, s2, m2;
        scale_min_k4(is, sc, &s1, &m1);
        scale_min_k4(is + 1, sc, &s2, &m2);
        for (int l = 0; l < 32; ++l) y[j + l] = d * (float)s1 * (float)(q[l] & 0xF) - dmin * (float)m1;
        for (int l = 0; l < 32; ++l) y[j + 32 + l] = d * (float)s2 * (float)(q[l] >> 4) - dmin * (float)m2;
      }
      break;
    }
    case Q5_K: {  // d, dmin, scales[12], qh[32], qs[128]
      const float d = half(b), dmin = half(b + 2);
      const uint8_t* sc = b + 4;
      const uint8_t* qh = b + 16;
      const uint8_t* ql = b + 48;
      uint8_t u1 = 1, u2 = 2;
      for (int j = 0, is = 0; j < 256; j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
        int s1, m1, s2, m2;
        scale_min_k4(is, sc, &s1, &m1);
        scale_min_k4(is + 1, sc, &s2, &m2);
        for (int l = 0; l < 32; ++l)
          y[j + l] = d * (float)s1 * (float)((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - dmin * (float)m1;
        for (int l = 0; l < 32; ++l)
          y[j + 32 + l] = d * (float)s2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - dmin * (float)m2;
      }
      break;
    }
    case Q6_K: {  // ql[128], qh[64], scales[16] int8, d
      const uint8_t* ql = b;
      const uint8_t* qh = b + 128;
      const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
      const float d = half(b + 208);
      for (int n = 0; n < 256; n += 128, ql += 64, qh += 32, sc += 8) {
        for (int l = 0; l < 32; ++l) {
          const int is = l / 16;
          const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
          const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
          const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
          const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
          y[n + l] = d * (float)sc[is] * (float)q1;
          y[n + l + 32] = d * (float)sc[is + 2] * (float)q2;
          y[n + l + 64] = d * (float)sc[is + 4] * (float)q3;
          y[n + l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
      }
      break;
    }
    default: break;
  }
}
}  // namespace

void dequantize(uint32_t t, const void* src, float* dst, int64_t n) {
  const TypeInfo* info = type_info(t);
  if (!info || !can_dequantize(t))
    throw Error(ErrorCode::Unsupported, std::string("cannot dequantize GGML type ") + (info ? info->name : std::to_string(t)));
  if (n % info->block_elems) throw Error(ErrorCode::Shape, "element count is not a multiple of the block size");
  const uint8_t* s = static_cast<const uint8_t*>(src);
  switch (t) {
    case F32: std::memcpy(dst, s, (size_t)n * 4); return;
    case F16: for (int64_t i = 0; i < n; ++i) dst[i] = half(s + 2 * i); return;
    case BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, s + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    default:
      for (int64_t b = 0; b < n / info->block_elems; ++b) dequant_block(t, s + b * info->block_bytes, dst + b * info->block_elems);
  }
}

void quantize(uint32_t t, const float* x, void* dst, int64_t n) {
  const TypeInfo* info = type_info(t);
  if (!info || !can_quantize(t))
    throw Error(ErrorCode::Unsupported, std::string("cannot quantize to GGML type ") + (info ? info->name : std::to_string(t)));
  if (n % info->block_elems) throw Error(ErrorCode::Shape, "element count is not a multiple of the block size");
  uint8_t* y = static_cast<uint8_t*>(dst);
  switch (t) {
    case F32: std::memcpy(y, x, (size_t)n * 4); return;
    case F16: for (int64_t i = 0; i < n; ++i) put_half(y + 2 * i, x[i]); return;
    case BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(x[i]);
        std::memcpy(y + 2 * i, &h, 2);
      }
      return;
    case Q8_0:  // d = max|x| / 127, q = round(x / d)
      for (int64_t b = 0; b < n / 32; ++b, x += 32, y += 34) {
        float amax = 0;
        for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(x[j]));
        const float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        put_half(y, d);
        for (int j = 0; j < 32; ++j) y[2 + j] = (uint8_t)(int8_t)std::round(x[j] * id);
      }
      return;
    case Q4_0:  // d = (the value of largest magnitude) / -8, q = min(15, trunc(x / d + 8.5))
      for (int64_t b = 0; b < n / 32; ++b, x += 32, y += 18) {
        float amax = 0, max = 0;
        for (int j = 0; j < 32; ++j)
          if (amax < std::fabs(x[j])) { amax = std::fabs(x[j]); max = x[j]; }
        const float d = max / -8.0f, id = d ? 1.0f / d : 0.0f;
        put_half(y, d);
        for (int j = 0; j < 16; ++j) {
          const int q0 = std::min(15, (int)(int8_t)(x[j] * id + 8.5f));
          const int q1 = std::min(15, (int)(int8_t)(x[16 + j] * id + 8.5f));
          y[2 + j] = (uint8_t)(q0 | (q1 << 4));
        }
      }
      return;
    default: return;
  }
}

}  // namespace ggml
}  // namespace medllava
