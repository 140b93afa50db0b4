// Reading stored elements on the device: f32 / f16 / bf16 and GGML blocks (Q8_0, Q4_0, Q4_K, Q6_K)
// one element at a time, as the CPU's dequantize_block lays them out. Shared by the matmul and
// transformer kernels (and the SIMT emulator, which compiles the same code for the CPU).
#pragma once
#include <cstdint>
#include <cstring>

#include "../core/dtype.h"
#include "compat.cuh"

namespace medllava {
namespace cuda {

// ---- element access -------------------------------------------------------------------------------
__device__ __forceinline__ float half_bits_f32(uint16_t h) {
  __half_raw r;
  r.x = h;
  return __half2float(__half(r));
}
__device__ __forceinline__ uint16_t f32_half_bits(float f) {
  const __half h = __float2half(f);  // round to nearest even, as the CPU's f32_to_f16
  return __half_raw(h).x;
}
__device__ __forceinline__ float bf16_bits_f32(uint16_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float((uint32_t)b << 16);
#else
  float f;
  const uint32_t u = (uint32_t)b << 16;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}
// One element of a typed array as f32: f32, __half, __nv_bfloat16, or f16 bits.
template <class T>
__device__ __forceinline__ float to_f32(T v);
template <>
__device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float to_f32<uint16_t>(uint16_t v) { return half_bits_f32(v); }  // f16 bits (the KV cache)

__device__ __forceinline__ uint16_t load_u16(const uint8_t* p) { return (uint16_t)(p[0] | (p[1] << 8)); }

// Element i of a row stored as `type` (f32 / f16 / bf16 / GGML blocks), as f32. Block types decode
// only the element's own block fields — the same values the CPU's dequantize_block produces.
__device__ __forceinline__ float load_element(const uint8_t* row, DType type, int64_t i) {
  switch (type) {
    case DType::F32: return reinterpret_cast<const float*>(row)[i];  // device buffers are 256-byte aligned
    case DType::F16: return half_bits_f32(load_u16(row + i * 2));
    case DType::BF16: return bf16_bits_f32(load_u16(row + i * 2));
    case DType::Q8_0: {  // d, qs[32] int8
      const uint8_t* b = row + (i / 32) * 34;
      return half_bits_f32(load_u16(b)) * (float)(int8_t)b[2 + i % 32];
    }
    case DType::Q4_0: {  // d, qs[16]: element j in the low nibble of qs[j], j + 16 in the high one
      const uint8_t* b = row + (i / 32) * 18;
      const int j = (int)(i % 32);
      const int q = j < 16 ? (b[2 + j] & 0xF) : (b[2 + j - 16] >> 4);
      return half_bits_f32(load_u16(b)) * (float)(q - 8);
    }
    case DType::Q4_K: {  // d, dmin, scales[12], qs[128]; 64-value chunks of two 32-value sub-blocks
      const uint8_t* b = row + (i / 256) * 144;
      const int e = (int)(i % 256), chunk = e / 64, r = e % 64, sub = 2 * chunk + (r >= 32 ? 1 : 0);
      const uint8_t* sc = b + 4;
      int s, m;
      if (sub < 4) {
        s = sc[sub] & 63;
        m = sc[sub + 4] & 63;
      } else {
        s = (sc[sub + 4] & 0xF) | ((sc[sub - 4] >> 6) << 4);
        m = (sc[sub + 4] >> 4) | ((sc[sub] >> 6) << 4);
      }
      const uint8_t q = b[16 + chunk * 32 + r % 32];
      const int nib = r < 32 ? (q & 0xF) : (q >> 4);
      return half_bits_f32(load_u16(b)) * (float)s * (float)nib - half_bits_f32(load_u16(b + 2)) * (float)m;
    }
    case DType::Q6_K: {  // ql[128], qh[64], scales[16] int8, d; two halves of 128 in four groups of 32
      const uint8_t* b = row + (i / 256) * 210;
      const int e = (int)(i % 256), half = e / 128, r = e % 128, g = r / 32, l = r % 32;
      const uint8_t* ql = b + 64 * half;
      const uint8_t* qh = b + 128 + 32 * half;
      const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192) + 8 * half;
      const int lo = (g & 1) ? ql[l + 32] : ql[l];
      const int nib = g < 2 ? (lo & 0xF) : (lo >> 4);
      const int q = (nib | (((qh[l] >> (2 * g)) & 3) << 4)) - 32;
      return half_bits_f32(load_u16(b + 208)) * (float)sc[l / 16 + 2 * g] * (float)q;
    }
    default: return 0.0f;
  }
}

}  // namespace cuda
}  // namespace medllava
