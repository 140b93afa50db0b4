// CPU matmul: out(M,N) = act(a(M,K) · w(N,K)ᵀ + bias(N)), fp32 accumulation.
//
// Fast path (AVX2+FMA+F16C, chosen at run time): BLIS-style packing and register tiling. a is
// packed once per call into 6-row panels; w, one block of NC = 512 columns at a time over all of
// K, into 16-column panels (converted to f32 as it is packed); a 6×16 register-tile micro-kernel
// (12 ymm accumulators; 2 loads + 6 broadcasts feed 12 FMAs per k) does the work. KC = 256 keeps
// a 16-column panel of w (16 KiB) in L1 and a 96-row panel block of a (96 KiB) in L2; each task
// owns a 96 × 128 output tile across all of K, so partial sums stay in L2; the packed w block
// (≤ 8 MiB at K = 4096) is read from L3 by every task. Output tiles are the parallel tasks.
// Tiny M (decode): a GEMV reads w rows directly, no packing, parallel over output columns.
#include <immintrin.h>

// GCC 12's AVX-512 intrinsic headers trip -Wmaybe-uninitialized on their own masked builtins
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "../core/cpu_features.h"
#include "../core/error.h"
#include "../core/thread_pool.h"
#include "../formats/ggml_types.h"
#include "../ops/ops.h"
#include "vec_avx2.h"  // defines: exp_avx2, erf_avx2, activation_avx2

namespace medllava {

static float load_weight(const void* w, DType t, int64_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(w)[i];
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(w)[i]);
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(w)[i]);
    case DType::Q8_0: case DType::Q4_0: {
      const uint8_t* b = static_cast<const uint8_t*>(w) + (i / kQBlock) * dtype_block_bytes(t);
      const int j = (int)(i % kQBlock);
      uint16_t d;
      std::memcpy(&d, b, 2);
      const int q = t == DType::Q8_0 ? (int)(int8_t)b[2 + j] : (j < 16 ? (b[2 + j] & 0xF) : (b[2 + j - 16] >> 4)) - 8;
      return f16_to_f32(d) * (float)q;
    }
    default:  // K-quant super-blocks are decoded a block at a time by their own paths, never per element
      throw Error(ErrorCode::Unsupported, "load_weight of a K-quant");
  }
}

static void check_args(const MatmulArgs& p) {
  if (p.M < 0 || p.N <= 0 || p.K <= 0) throw Error(ErrorCode::Shape, "matmul: M, N, K must be positive");
  if (dtype_is_block(p.w_type) && p.K % dtype_block_elems(p.w_type))
    throw Error(ErrorCode::Shape, std::string("matmul: ") + dtype_name(p.w_type) + " rows must be a multiple of " +
                                      std::to_string(dtype_block_elems(p.w_type)) + " long, K = " + std::to_string(p.K));
  if (!p.w || (p.M > 0 && (!p.a || !p.out))) throw Error(ErrorCode::Argument, "matmul: null buffer");
}

// Super-block b of row n of a K-quant weight, as f32 (256 values).
static void kquant_block(const MatmulArgs& p, int64_t n, int64_t b, float* out) {
  const size_t bb = dtype_block_bytes(p.w_type);
  const uint8_t* src = static_cast<const uint8_t*>(p.w) + ((size_t)n * (size_t)(p.K / kQKBlock) + (size_t)b) * bb;
  ggml::dequantize(p.w_type == DType::Q4_K ? ggml::Q4_K : ggml::Q6_K, src, out, kQKBlock);
}

// K-quants: super-blocks are decoded one at a time (never the whole tensor) and dotted in fp32.
static void matmul_kquant_scalar(const MatmulArgs& p) {
  ThreadPool::instance().parallel_for((size_t)p.N, [&](size_t n, int) {
    float w[kQKBlock];
    std::vector<float> acc((size_t)p.M, 0.0f);
    for (int64_t b = 0; b < p.K / kQKBlock; ++b) {
      kquant_block(p, (int64_t)n, b, w);
      for (int64_t m = 0; m < p.M; ++m) {
        const float* a = p.a + m * p.K + b * kQKBlock;
        float s = 0;
        for (int64_t k = 0; k < kQKBlock; ++k) s += a[k] * w[k];
        acc[(size_t)m] += s;
      }
    }
    for (int64_t m = 0; m < p.M; ++m)
      p.out[m * p.N + (int64_t)n] = apply_activation(acc[(size_t)m] + (p.bias ? p.bias[n] : 0.0f), p.act);
  });
}

void matmul_cpu_scalar(const MatmulArgs& p) {
  check_args(p);
  if (dtype_is_kquant(p.w_type)) return matmul_kquant_scalar(p);
  ThreadPool::instance().parallel_for((size_t)p.M, [&](size_t m, int) {
    const float* a = p.a + m * p.K;
    for (int64_t n = 0; n < p.N; ++n) {
      float acc = 0.0f;
      for (int64_t k = 0; k < p.K; ++k) acc += a[k] * load_weight(p.w, p.w_type, n * p.K + k);
      if (p.bias) acc += p.bias[n];
      p.out[m * p.N + n] = apply_activation(acc, p.act);
    }
  });
}

namespace {

constexpr int MR = 6, NR = 16;
constexpr int64_t KC = 256, MC = 96, NC = 512, NT_PANELS = 8;

// Eight consecutive weights of row `row` from column k, as f32.
__attribute__((target("avx2,fma,f16c"))) inline __m256 load8(const void* w, DType t, int64_t off) {
  switch (t) {
    case DType::F32: return _mm256_loadu_ps(static_cast<const float*>(w) + off);
    case DType::F16:
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + off)));
    case DType::BF16: {
      __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + off));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    case DType::Q8_0: case DType::Q4_0: {
      // 8 consecutive elements never straddle a 32-element block: callers load at multiples of 8
      const uint8_t* b = static_cast<const uint8_t*>(w) + (off / kQBlock) * dtype_block_bytes(t);
      const int j = (int)(off % kQBlock);
      uint16_t dh;
      std::memcpy(&dh, b, 2);
      const __m256 d = _mm256_set1_ps(_cvtsh_ss(dh));
      __m256i q;
      if (t == DType::Q8_0) {
        q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + j)));
      } else {
        const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + (j & 15)));
        const __m128i nib = j < 16 ? _mm_and_si128(bytes, _mm_set1_epi8(0xF)) : _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm_set1_epi8(0xF));
        q = _mm256_sub_epi32(_mm256_cvtepu8_epi32(nib), _mm256_set1_epi32(8));
      }
      return _mm256_mul_ps(d, _mm256_cvtepi32_ps(q));
    }
    default:  // K-quants never reach here (see load_weight)
      return _mm256_setzero_ps();
  }
}

__attribute__((target("avx2,fma"))) inline void transpose8(__m256 r[8]) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20); r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20); r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31); r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31); r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Packs w rows [n0, n0+16) × columns [k0, k0+kc) into bp[k][16] (f32), zero rows past N.
__attribute__((target("avx2,fma,f16c"))) void pack_w_panel(const MatmulArgs& p, int64_t n0, int64_t k0, int64_t kc,
                                                          float* bp) {
  const int64_t rows = std::min<int64_t>(NR, p.N - n0);
  if (dtype_is_kquant(p.w_type)) {  // KC == the super-block: decode each row's block once, transpose it in
    float w[kQKBlock];
    for (int j = 0; j < NR; ++j) {
      if (j < rows) kquant_block(p, n0 + j, k0 / kQKBlock, w);
      for (int64_t k = 0; k < kc; ++k) bp[k * NR + j] = j < rows ? w[k] : 0.0f;
    }
    return;
  }
  int64_t k = 0;
  if (rows == NR) {
    for (; k + 8 <= kc; k += 8) {
      for (int half = 0; half < 2; ++half) {
        __m256 r[8];
        for (int j = 0; j < 8; ++j) r[j] = load8(p.w, p.w_type, (n0 + half * 8 + j) * p.K + k0 + k);
        transpose8(r);
        for (int kk = 0; kk < 8; ++kk) _mm256_storeu_ps(bp + (k + kk) * NR + half * 8, r[kk]);
      }
    }
  }
  for (; k < kc; ++k)
    for (int j = 0; j < NR; ++j)
      bp[k * NR + j] = j < rows ? load_weight(p.w, p.w_type, (n0 + j) * p.K + k0 + k) : 0.0f;
}

// Packs a rows [m0, m0+6) × columns [k0, k0+kc) into ap[k][6], zero rows past M.
void pack_a_panel(const MatmulArgs& p, int64_t m0, int64_t k0, int64_t kc, float* ap) {
  const int64_t rows = std::min<int64_t>(MR, p.M - m0);
  for (int i = 0; i < MR; ++i) {
    if (i < rows) {
      const float* src = p.a + (m0 + i) * p.K + k0;
      for (int64_t k = 0; k < kc; ++k) ap[k * MR + i] = src[k];
    } else {
      for (int64_t k = 0; k < kc; ++k) ap[k * MR + i] = 0.0f;
    }
  }
}

// Writes a register tile t (mr × nr, row stride ldt) to c: adds what c holds unless this is the first
// k block, and on the last one adds the bias and applies the activation (8 lanes at a time).
__attribute__((target("avx2,fma"))) void store_tile(const float* t, int64_t ldt, float* c, int64_t ldc, int mr, int nr,
                                                   bool accumulate, const float* bias, Activation act, bool last) {
  for (int i = 0; i < mr; ++i) {
    float* row = c + i * ldc;
    const float* ti = t + i * ldt;
    int j = 0;
    for (; j + 8 <= nr; j += 8) {
      __m256 v = _mm256_loadu_ps(ti + j);
      if (last && bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + j));
      if (accumulate) v = _mm256_add_ps(v, _mm256_loadu_ps(row + j));
      if (last && act != Activation::None) v = activation_avx2(v, act);
      _mm256_storeu_ps(row + j, v);
    }
    for (; j < nr; ++j) {
      float v = ti[j] + (last && bias ? bias[j] : 0.0f) + (accumulate ? row[j] : 0.0f);
      row[j] = last ? apply_activation(v, act) : v;
    }
  }
}

// t(MR × NR) = ap · bp over kc: 12 ymm accumulators; 2 loads + 6 broadcasts feed 12 FMAs per k.
__attribute__((target("avx2,fma"))) void micro_kernel(int64_t kc, const float* ap, const float* bp, float* t) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
    __m256 a;
    a = _mm256_broadcast_ss(ap + 0); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(ap + 1); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(ap + 2); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(ap + 3); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(ap + 4); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(ap + 5); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
    ap += MR;
    bp += NR;
  }
  _mm256_store_ps(t + 0 * NR, c00); _mm256_store_ps(t + 0 * NR + 8, c01);
  _mm256_store_ps(t + 1 * NR, c10); _mm256_store_ps(t + 1 * NR + 8, c11);
  _mm256_store_ps(t + 2 * NR, c20); _mm256_store_ps(t + 2 * NR + 8, c21);
  _mm256_store_ps(t + 3 * NR, c30); _mm256_store_ps(t + 3 * NR + 8, c31);
  _mm256_store_ps(t + 4 * NR, c40); _mm256_store_ps(t + 4 * NR + 8, c41);
  _mm256_store_ps(t + 5 * NR, c50); _mm256_store_ps(t + 5 * NR + 8, c51);
}

// AVX-512: t(MR × 16·NB) = ap · [bp0 | bp1] over kc, NB adjacent 16-column panels in zmm registers.
// NB = 2: 12 zmm accumulators; 2 loads + 6 broadcasts feed 12 FMAs of 16 lanes per k — twice the
// AVX2 kernel's work per instruction, on CPUs with 512-bit FMA units.
template <int NB>
__attribute__((target("avx512f,avx512vl,avx2,fma"))) void micro_kernel_512(int64_t kc, const float* ap, const float* bp0,
                                                                          const float* bp1, float* t) {
  __m512 c[MR][NB];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NB; ++j) c[i][j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    __m512 b[NB];
    b[0] = _mm512_load_ps(bp0 + k * NR);
    if (NB == 2) b[NB - 1] = _mm512_load_ps(bp1 + k * NR);
    for (int i = 0; i < MR; ++i) {
      const __m512 a = _mm512_set1_ps(ap[k * MR + i]);
      for (int j = 0; j < NB; ++j) c[i][j] = _mm512_fmadd_ps(a, b[j], c[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NB; ++j) _mm512_storeu_ps(t + i * 2 * NR + j * NR, c[i][j]);
}

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<float, AlignedFree>;
AlignedBuffer aligned_floats(size_t n) {
  void* ptr = std::aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64);
  if (!ptr) throw Error(ErrorCode::OOM, "matmul: cannot allocate packing buffer");
  return AlignedBuffer(static_cast<float*>(ptr));
}

// Output columns [n_begin, n_end) for every row of a; each w row is read once.
__attribute__((target("avx2,fma,f16c"))) void gemv_columns(const MatmulArgs& p, int64_t n_begin, int64_t n_end) {
  const int64_t es = (int64_t)dtype_size(p.w_type);
  for (int64_t n = n_begin; n < n_end; ++n) {
    const int64_t row = n * p.K;
    for (int64_t m = 0; m < p.M; ++m) {
      const float* a = p.a + m * p.K;
      __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      int64_t k = 0;
      for (; k + 32 <= p.K; k += 32) {
        // streaming the weights bounds this: ask for what comes 1 KiB ahead (one 64-byte line per step for f16)
        _mm_prefetch(static_cast<const char*>(p.w) + (row + k) * es + 1024, _MM_HINT_T0);
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), load8(p.w, p.w_type, row + k), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), load8(p.w, p.w_type, row + k + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 16), load8(p.w, p.w_type, row + k + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 24), load8(p.w, p.w_type, row + k + 24), s3);
      }
      for (; k + 8 <= p.K; k += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), load8(p.w, p.w_type, row + k), s0);
      const __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
      __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
      q = _mm_add_ps(q, _mm_movehl_ps(q, q));
      q = _mm_add_ss(q, _mm_movehdup_ps(q));
      float acc = _mm_cvtss_f32(q);
      for (; k < p.K; ++k) acc += a[k] * load_weight(p.w, p.w_type, row + k);
      if (p.bias) acc += p.bias[n];
      p.out[m * p.N + n] = apply_activation(acc, p.act);
    }
  }
}

// Sixteen weights of a f32 / f16 / bf16 row from element `off`, as f32 (AVX-512).
__attribute__((target("avx512f,avx512bw,avx512vl,f16c"))) inline __m512 load16(const void* w, DType t, int64_t off) {
  switch (t) {
    case DType::F16:
      return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + off)));
    case DType::BF16: {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + off));
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    default: return _mm512_loadu_ps(static_cast<const float*>(w) + off);
  }
}

// A few rows (a chat turn's prompt): every weight row is read once, converted in registers, and
// multiplied into up to 8 activation rows at a time — no packed copy of w (which for a 16-token
// prompt cost more than the products: converting and writing every weight as f32).
constexpr int64_t kSmallM = 16;
__attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma"))) void small_m_columns(const MatmulArgs& p, int64_t n_begin,
                                                                                   int64_t n_end) {
  const int64_t K16 = p.K / 16 * 16;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const int64_t row = n * p.K;
    for (int64_t m0 = 0; m0 < p.M; m0 += 8) {
      const int rm = (int)std::min<int64_t>(8, p.M - m0);
      __m512 acc[8];
      for (int i = 0; i < 8; ++i) acc[i] = _mm512_setzero_ps();
      for (int64_t k = 0; k < K16; k += 16) {
        const __m512 w = load16(p.w, p.w_type, row + k);
        for (int i = 0; i < 8; ++i)
          if (i < rm) acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(p.a + (m0 + i) * p.K + k), w, acc[i]);
      }
      for (int i = 0; i < rm; ++i) {
        float v = _mm512_reduce_add_ps(acc[i]);
        for (int64_t k = K16; k < p.K; ++k) v += p.a[(m0 + i) * p.K + k] * load_weight(p.w, p.w_type, row + k);
        if (p.bias) v += p.bias[n];
        p.out[(m0 + i) * p.N + n] = apply_activation(v, p.act);
      }
    }
  }
}

void small_m_avx512(const MatmulArgs& p) {
  constexpr int64_t COLS = 32;
  ThreadPool::instance().parallel_for((size_t)((p.N + COLS - 1) / COLS), [&](size_t task, int) {
    small_m_columns(p, (int64_t)task * COLS, std::min<int64_t>(p.N, ((int64_t)task + 1) * COLS));
  });
}

void gemv_avx2(const MatmulArgs& p) {
  constexpr int64_t COLS = 64;  // columns per task
  const int64_t tasks = (p.N + COLS - 1) / COLS;
  ThreadPool::instance().parallel_for((size_t)tasks, [&](size_t task, int) {
    gemv_columns(p, (int64_t)task * COLS, std::min<int64_t>(p.N, ((int64_t)task + 1) * COLS));
  });
}

// ---- decode GEMV for Q8_0 / Q4_0 weights: llama.cpp's q8 path -------------------------------------
// Each row of a is quantized once to Q8_0 (32-value blocks, scale = max|x| / 127); a weight block and
// an activation block then meet as int8 × int8 → int32 dot products (maddubs on |w| and sign-moved
// a), scaled by both blocks' scales. Decode is memory-bound: this reads each weight byte once and
// spends ~6 instructions per 32 weights, where dequantizing to f32 spends ~4 per 8.
// Rows of activations as Q8_0 blocks (the AVX2 decode GEMV reads q and d; the VNNI kernels the sums too).
struct QActSums {
  std::vector<int8_t> q;   // (M, K)
  std::vector<float> d, sum;  // per block: scale, Σq (as float)
  std::vector<float> sum_lo;  // per block: Σq over its first 16 values (Q6_K's half-block scales); Σ of the rest = sum - sum_lo
};

QActSums quantize_rows_q8_sums(const float* a, int64_t M, int64_t K) {
  QActSums r;
  const int64_t nb = M * K / kQBlock;
  r.q.resize((size_t)(M * K));
  r.d.resize((size_t)nb);
  r.sum.resize((size_t)nb);
  r.sum_lo.resize((size_t)nb);
  ThreadPool::instance().parallel_for((size_t)M, [&](size_t m, int) {
    for (int64_t b = (int64_t)m * (K / kQBlock); b < ((int64_t)m + 1) * (K / kQBlock); ++b) {
      const float* x = a + b * kQBlock;
      float amax = 0;
      for (int j = 0; j < kQBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
      const float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
      int sum = 0, lo = 0;
      for (int j = 0; j < kQBlock; ++j) {
        const int q = (int)std::lrintf(x[j] * id);
        r.q[(size_t)(b * kQBlock + j)] = (int8_t)q;
        sum += q;
        if (j == 15) lo = sum;
      }
      r.d[(size_t)b] = d;
      r.sum[(size_t)b] = (float)sum;
      r.sum_lo[(size_t)b] = (float)lo;
    }
  });
  return r;
}

__attribute__((target("avx2,fma,f16c"))) inline float hsum(__m256 s) {
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

__attribute__((target("avx2,fma,f16c"))) void gemv_q_columns(const MatmulArgs& p, const QActSums& qa, int64_t n_begin,
                                                             int64_t n_end) {
  const int64_t blocks = p.K / kQBlock;
  const size_t bb = dtype_block_bytes(p.w_type);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i low4 = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8);
  for (int64_t n = n_begin; n < n_end; ++n) {
    const uint8_t* row = static_cast<const uint8_t*>(p.w) + (size_t)n * (size_t)blocks * bb;
    for (int64_t m = 0; m < p.M; ++m) {
      const int8_t* aq = qa.q.data() + m * p.K;
      const float* ad = qa.d.data() + m * blocks;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* blk = row + b * bb;
        _mm_prefetch(reinterpret_cast<const char*>(blk) + 16 * bb, _MM_HINT_T0);  // streaming-bound: ~0.5 KiB ahead
        __m256i w;
        if (p.w_type == DType::Q8_0) {
          w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
        } else {  // Q4_0: 16 bytes → 32 nibbles (low nibbles are elements 0-15), minus 8
          const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
          w = _mm256_sub_epi8(_mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low4), eight);
        }
        const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq + b * kQBlock));
        // maddubs multiplies unsigned × signed: move w's sign onto a
        const __m256i prod = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
        const __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(prod, ones));
        uint16_t dh;
        std::memcpy(&dh, blk, 2);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(dh) * ad[b]), dot, acc);
      }
      float v = hsum(acc);
      if (p.bias) v += p.bias[n];
      p.out[m * p.N + n] = apply_activation(v, p.act);
    }
  }
}

__attribute__((target("avx2,fma,f16c"))) void gemv_kquant_columns(const MatmulArgs& p, int64_t n_begin, int64_t n_end) {
  alignas(32) float w[kQKBlock];
  for (int64_t n = n_begin; n < n_end; ++n) {
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < p.K / kQKBlock; ++b) {
      kquant_block(p, n, b, w);
      for (int64_t m = 0; m < p.M; ++m) {
        const float* a = p.a + m * p.K + b * kQKBlock;
        for (int64_t k = 0; k < kQKBlock; k += 8)
          acc[m] = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_load_ps(w + k), acc[m]);
      }
    }
    for (int64_t m = 0; m < p.M; ++m)
      p.out[m * p.N + n] = apply_activation(hsum(acc[m]) + (p.bias ? p.bias[n] : 0.0f), p.act);
  }
}

void gemv_q_avx2(const MatmulArgs& p) {
  if (dtype_is_kquant(p.w_type)) {  // fp32 activations: decode each super-block once, dot in fp32
    constexpr int64_t COLS = 32;
    ThreadPool::instance().parallel_for((size_t)((p.N + COLS - 1) / COLS), [&](size_t task, int) {
      gemv_kquant_columns(p, (int64_t)task * COLS, std::min<int64_t>(p.N, ((int64_t)task + 1) * COLS));
    });
    return;
  }
  const QActSums qa = quantize_rows_q8_sums(p.a, p.M, p.K);
  constexpr int64_t COLS = 64;
  ThreadPool::instance().parallel_for((size_t)((p.N + COLS - 1) / COLS), [&](size_t task, int) {
    gemv_q_columns(p, qa, (int64_t)task * COLS, std::min<int64_t>(p.N, ((int64_t)task + 1) * COLS));
  });
}

// ---- AVX-512 VNNI on interleaved GGML blocks (repack_x16) -----------------------------------------------
// Activations are quantized per row to Q8_0 (quantize_rows_q8_sums: q, d and each block's Σq). For a group of 16 weight
// rows and one block, 8 vpdpbusd (u8 weights × s8 activations, 4 products per lane) give the 16
// int32 block dots at once; the weights' u8 offset (128 for Q8_0, 8 for Q4_0 nibbles) comes off as
// offset · Σq, then one FMA applies d_w · d_a. About 20 instructions per 512 multiply-adds, where
// the fp32 kernel spends ~40.
constexpr int kX16Rows = 16;
// Bytes of one 32-value block of 16 rows: the f16 scale vectors, then the quant runs.
//   Q8_0: d            | 8 runs of u8 (q + 128)        value = d·u − 128·d
//   Q4_0: d            | 4 runs of nibble pairs        value = d·u − 8·d
//   Q4_K: d·sc, dmin·m | 4 runs of nibble pairs        value = s·u − mn   (one 6-bit scale / min per 32)
//   Q6_K: s_lo, s_hi   | 8 runs of u8 (the 6-bit q)    value = s·u − 32·s (a scale per 16 values)
inline size_t x16_scale_bytes(DType t) { return t == DType::Q4_K || t == DType::Q6_K ? 64 : 32; }
inline int x16_runs(DType t) { return t == DType::Q8_0 || t == DType::Q6_K ? 8 : 4; }
inline size_t x16_block_bytes(DType t) { return x16_scale_bytes(t) + (size_t)x16_runs(t) * 64; }

// out rows [m0, m0 + RM) × columns [16 g, 16 g + 16) (clipped to N) of the product
template <int RM>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c"))) void vnni_tile(const MatmulArgs& p, const QActSums& qa,
                                                                                    int64_t m0, int rm, int64_t g) {
  const DType t = p.w_type;
  const bool nibbles = t == DType::Q4_0 || t == DType::Q4_K;
  const int64_t blocks = p.K / kQBlock;
  const size_t bb = x16_block_bytes(t), sb = x16_scale_bytes(t);
  const uint8_t* wg = p.w_x16 + (size_t)g * (size_t)blocks * bb;
  const float offset = t == DType::Q4_0 ? 8.0f : t == DType::Q8_0 ? 128.0f : 32.0f;
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  __m512 acc[RM];
  for (int i = 0; i < RM; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = wg + (size_t)b * bb;
    // decode (a few rows) is bound by streaming the weights: ask for the block 6 ahead now
    if (rm <= 2)
      for (size_t c = 0; c < bb; c += 64) _mm_prefetch(reinterpret_cast<const char*>(blk + 6 * bb + c), _MM_HINT_T0);
    const __m512 s0 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
    const __m512 s1 = sb == 64 ? _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 32))) : s0;
    __m512i w[8];
    if (nibbles) {
      for (int r = 0; r < 4; ++r) {
        const __m512i raw = _mm512_loadu_si512(blk + sb + 64 * r);
        w[r] = _mm512_and_si512(raw, low4);
        w[r + 4] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low4);
      }
    } else {
      for (int j = 0; j < 8; ++j) w[j] = _mm512_loadu_si512(blk + sb + 64 * j);
    }
    for (int i = 0; i < RM; ++i) {
      if (i >= rm) break;
      const int64_t ab = (m0 + i) * blocks + b;
      const int8_t* a = qa.q.data() + ab * kQBlock;
      __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
      for (int j = 0; j < 4; ++j) {
        int32_t run;
        std::memcpy(&run, a + 4 * j, 4);
        lo = _mm512_dpbusd_epi32(lo, w[j], _mm512_set1_epi32(run));
        std::memcpy(&run, a + 16 + 4 * j, 4);
        hi = _mm512_dpbusd_epi32(hi, w[j + 4], _mm512_set1_epi32(run));
      }
      const __m512 da = _mm512_set1_ps(qa.d[(size_t)ab]);
      const float sum = qa.sum[(size_t)ab], sum_lo = qa.sum_lo[(size_t)ab];
      __m512 f;
      if (t == DType::Q6_K) {  // a scale per 16 values: each half with its own, offset 32
        const __m512 flo = _mm512_sub_ps(_mm512_cvtepi32_ps(lo), _mm512_set1_ps(32.0f * sum_lo));
        const __m512 fhi = _mm512_sub_ps(_mm512_cvtepi32_ps(hi), _mm512_set1_ps(32.0f * (sum - sum_lo)));
        f = _mm512_fmadd_ps(flo, s0, _mm512_mul_ps(fhi, s1));
      } else if (t == DType::Q4_K) {  // s·Σu·a − mn·Σa
        f = _mm512_fnmadd_ps(s1, _mm512_set1_ps(sum), _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(lo, hi)), s0));
      } else {  // d·(Σu·a − offset·Σa)
        f = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(lo, hi)), _mm512_set1_ps(offset * sum)), s0);
      }
      acc[i] = _mm512_fmadd_ps(f, da, acc[i]);
    }
  }
  const int64_t n0 = g * kX16Rows;
  const int cols = (int)std::min<int64_t>(kX16Rows, p.N - n0);
  for (int i = 0; i < rm; ++i) {
    alignas(64) float out[kX16Rows];
    _mm512_store_ps(out, acc[i]);
    float* row = p.out + (m0 + i) * p.N + n0;
    for (int j = 0; j < cols; ++j) row[j] = apply_activation(out[j] + (p.bias ? p.bias[n0 + j] : 0.0f), p.act);
  }
}

void matmul_vnni_x16(const MatmulArgs& p) {
  const QActSums qa = quantize_rows_q8_sums(p.a, p.M, p.K);
  const int64_t groups = (p.N + kX16Rows - 1) / kX16Rows;
  constexpr int RM = 16;
  // tasks: runs of 8 column groups (128 columns; their weights stay in L2) × every row of a
  constexpr int64_t GROUPS = 8;
  ThreadPool::instance().parallel_for((size_t)((groups + GROUPS - 1) / GROUPS), [&](size_t task, int) {
    const int64_t g_end = std::min(groups, ((int64_t)task + 1) * GROUPS);
    for (int64_t m0 = 0; m0 < p.M; m0 += RM)
      for (int64_t g = (int64_t)task * GROUPS; g < g_end; ++g) vnni_tile<RM>(p, qa, m0, (int)std::min<int64_t>(RM, p.M - m0), g);
  });
}

void gemm_avx2(const MatmulArgs& p) {
  ThreadPool& pool = ThreadPool::instance();
  const bool wide = use_avx512();
  const int64_t m_panels = (p.M + MR - 1) / MR, m_pad = m_panels * MR;
  const int64_t nc_max = std::min(NC, (p.N + NR - 1) / NR * NR);
  // a is packed once for the whole call: [k block][row panel][k][MR]
  AlignedBuffer ap = aligned_floats((size_t)(m_pad * p.K));
  // one column block of w over all of K: [k block][column panel][k][NR]
  AlignedBuffer bp = aligned_floats((size_t)(nc_max * p.K));
  const int64_t k_blocks = (p.K + KC - 1) / KC;

  pool.parallel_for((size_t)(k_blocks * m_panels), [&](size_t task, int) {
    const int64_t pc = (int64_t)task / m_panels * KC, panel = (int64_t)task % m_panels;
    const int64_t kc = std::min(KC, p.K - pc);
    pack_a_panel(p, panel * MR, pc, kc, ap.get() + pc * m_pad + panel * MR * kc);
  });

  const int64_t m_blocks = (p.M + MC - 1) / MC;
  for (int64_t jc = 0; jc < p.N; jc += NC) {
    const int64_t nc = std::min(NC, p.N - jc);
    const int64_t n_panels = (nc + NR - 1) / NR, nc_pad = n_panels * NR;
    pool.parallel_for((size_t)(k_blocks * n_panels), [&](size_t task, int) {
      const int64_t pc = (int64_t)task / n_panels * KC, panel = (int64_t)task % n_panels;
      const int64_t kc = std::min(KC, p.K - pc);
      pack_w_panel(p, jc + panel * NR, pc, kc, bp.get() + pc * nc_pad + panel * NR * kc);
    });
    // Tasks: MC rows × NT columns of the output. Their C tile (96 × 128 floats, 48 KiB) stays in L2
    // while all of K streams past it, so partial sums never travel to memory between k blocks.
    const int64_t col_groups = (n_panels + NT_PANELS - 1) / NT_PANELS;
    pool.parallel_for((size_t)(m_blocks * col_groups), [&](size_t task, int) {
      const int64_t ic = (int64_t)task / col_groups * MC, group = (int64_t)task % col_groups;
      const int64_t mc = std::min(MC, p.M - ic);
      const int64_t panel_end = std::min(n_panels, (group + 1) * NT_PANELS);
      for (int64_t pc = 0; pc < p.K; pc += KC) {
        const int64_t kc = std::min(KC, p.K - pc);
        const bool first = pc == 0, last = pc + kc == p.K;
        for (int64_t panel = group * NT_PANELS; panel < panel_end;) {
          // AVX-512 takes two adjacent panels (32 columns) at a time where it can
          const int nb = wide ? (int)std::min<int64_t>(2, panel_end - panel) : 1;
          const int64_t jr = panel * NR;
          const int nr = (int)std::min<int64_t>(NR * nb, nc - jr);
          const float* b_panel = bp.get() + pc * nc_pad + panel * NR * kc;
          const float* bias = p.bias ? p.bias + jc + jr : nullptr;
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int mr = (int)std::min<int64_t>(MR, mc - ir);
            const float* a_panel = ap.get() + pc * m_pad + (ic + ir) / MR * MR * kc;
            alignas(64) float t[MR * 2 * NR];
            if (!wide) micro_kernel(kc, a_panel, b_panel, t);
            else if (nb == 2) micro_kernel_512<2>(kc, a_panel, b_panel, b_panel + NR * kc, t);
            else micro_kernel_512<1>(kc, a_panel, b_panel, nullptr, t);
            store_tile(t, wide ? 2 * NR : NR, p.out + (ic + ir) * p.N + jc + jr, p.N, mr, nr, !first, bias, p.act, last);
          }
          panel += nb;
        }
      }
    });
  }
}

}  // namespace

bool cpu_has_vnni() { return cpu_features().avx512vnni && cpu_features().avx512f && cpu_features().avx512bw; }

namespace {
// The 6-bit scale and min of sub-block j of a Q4_K super-block (12 packed bytes), as GGML packs them.
void q4k_scale_min(int j, const uint8_t* q, int* d, int* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Row n's 32-value block b of a K-quant tensor, decoded as the x16 format holds it: the scale pair
// (f16 bits — Q4_K: d·sc and dmin·m; Q6_K: the two per-16 scales) and the unsigned values u[32]
// (Q4_K: 0..15; Q6_K: 0..63). (Q8_0 / Q4_0 keep their own bytes: repack_x16 copies them.)
void x16_source_block(const uint8_t* src, DType t, int64_t blocks, int64_t n, int64_t b, uint16_t sc[2], uint8_t u[32]) {
  const int64_t super = b / 8, j = b % 8;  // 8 blocks of 32 per super-block of 256
  const uint8_t* sbk = src + ((size_t)n * (size_t)(blocks / 8) + (size_t)super) * dtype_block_bytes(t);
  if (t == DType::Q4_K) {  // d, dmin, scales[12], qs[128]
    const float d = f16_to_f32((uint16_t)(sbk[0] | sbk[1] << 8)), dmin = f16_to_f32((uint16_t)(sbk[2] | sbk[3] << 8));
    int s6, m6;
    q4k_scale_min((int)j, sbk + 4, &s6, &m6);
    sc[0] = f32_to_f16(d * (float)s6);
    sc[1] = f32_to_f16(dmin * (float)m6);
    const uint8_t* q = sbk + 16 + 32 * (j / 2);
    for (int l = 0; l < 32; ++l) u[l] = (j & 1) ? (q[l] >> 4) : (q[l] & 0xF);
    return;
  }
  // Q6_K: ql[128], qh[64], scales[16] int8, d; block j = half (j / 4), group (j % 4)
  const int64_t half = j / 4, grp = j % 4;
  const uint8_t* ql = sbk + 64 * half;
  const uint8_t* qh = sbk + 128 + 32 * half;
  const int8_t* s8 = reinterpret_cast<const int8_t*>(sbk + 192) + 8 * half;
  const float d = f16_to_f32((uint16_t)(sbk[208] | sbk[209] << 8));
  sc[0] = f32_to_f16(d * (float)s8[2 * grp]);
  sc[1] = f32_to_f16(d * (float)s8[2 * grp + 1]);
  for (int l = 0; l < 32; ++l) {
    const int lo = (grp & 1) ? ql[l + 32] : ql[l];
    u[l] = (uint8_t)(((grp < 2 ? lo : lo >> 4) & 0xF) | (((qh[l] >> (2 * grp)) & 3) << 4));
  }
}
}  // namespace

PackedWeights repack_x16(const void* w, DType type, int64_t N, int64_t K) {
  const bool ok = type == DType::Q8_0 || type == DType::Q4_0 || type == DType::Q4_K || type == DType::Q6_K;
  if (!cpu_has_vnni() || !ok || K % dtype_block_elems(type)) return nullptr;
  const int64_t blocks = K / kQBlock, groups = (N + kX16Rows - 1) / kX16Rows;
  const size_t bb = x16_block_bytes(type), sb = x16_scale_bytes(type);
  const bool nibbles = type == DType::Q4_0 || type == DType::Q4_K;
  // not zero-filled here: the threads below write every byte (first touch spread over the pool)
  const size_t bytes = (size_t)(groups * blocks) * bb, align = 64;
  uint8_t* buf = static_cast<uint8_t*>(std::aligned_alloc(align, (bytes + align - 1) / align * align));
  if (!buf) throw Error(ErrorCode::OOM, "repacking weights: cannot allocate " + std::to_string(bytes) + " bytes");
  PackedWeights out(buf, [](const uint8_t* p) { std::free(const_cast<uint8_t*>(p)); });
  const uint8_t* src = static_cast<const uint8_t*>(w);
  ThreadPool::instance().parallel_for((size_t)groups, [&](size_t g, int) {
    for (int64_t b = 0; b < blocks; ++b) {
      uint8_t* dst = buf + ((size_t)g * (size_t)blocks + (size_t)b) * bb;
      for (int r = 0; r < kX16Rows; ++r) {
        const int64_t n = (int64_t)g * kX16Rows + r;
        if (n < N && (type == DType::Q8_0 || type == DType::Q4_0)) {  // the blocks' own bytes, run by run
          const uint8_t* blk = src + ((size_t)n * (size_t)blocks + (size_t)b) * dtype_block_bytes(type);
          std::memcpy(dst + 2 * r, blk, 2);
          for (int run = 0; run < x16_runs(type); ++run) {
            uint32_t q;
            std::memcpy(&q, blk + 2 + 4 * run, 4);
            if (type == DType::Q8_0) q ^= 0x80808080u;  // s8 → u8 (q + 128)
            std::memcpy(dst + sb + (size_t)run * 64 + (size_t)r * 4, &q, 4);
          }
          continue;
        }
        uint16_t sc[2] = {0, 0};
        uint8_t u[32] = {};  // padding rows: scales 0, values 0
        if (n < N) x16_source_block(src, type, blocks, n, b, sc, u);
        std::memcpy(dst + 2 * r, &sc[0], 2);
        if (sb == 64) std::memcpy(dst + 32 + 2 * r, &sc[1], 2);
        // 4-byte runs of the 16 rows, run after run: values (4 j … 4 j + 3), or as nibble pairs
        // (value t | value t + 16 << 4) for the 4-bit types
        for (int run = 0; run < x16_runs(type); ++run) {
          uint8_t v[4];
          for (int e = 0; e < 4; ++e) {
            const int i = 4 * run + e;
            v[e] = nibbles ? (uint8_t)(u[i] | u[i + 16] << 4) : u[i];
          }
          std::memcpy(dst + sb + (size_t)run * 64 + (size_t)r * 4, v, 4);
        }
      }
    }
  });
  return out;
}

void matmul_cpu(const MatmulArgs& p) {
  check_args(p);
  if (p.M == 0) return;
  if (!use_avx2()) return matmul_cpu_scalar(p);
  if (p.w_x16 && use_vnni() && dtype_is_block(p.w_type)) return matmul_vnni_x16(p);
  if (p.M <= 2) return dtype_is_block(p.w_type) ? gemv_q_avx2(p) : gemv_avx2(p);
  if (p.M <= kSmallM && !dtype_is_block(p.w_type) && use_avx512()) return small_m_avx512(p);
  gemm_avx2(p);
}

namespace {
__attribute__((target("avx2,fma"))) double fma_chains(int64_t iters) {
  // 12 independent accumulators cover FMA latency (4-5 cycles) × 2 FMA ports.
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(0.001f * (float)i);
  const __m256 mul = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], mul, add);
  }
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  return out[0];
}
// The same with 512-bit registers: twice the lanes per instruction.
__attribute__((target("avx512f"))) double fma_chains_512(int64_t iters) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(0.001f * (float)i);
  const __m512 mul = _mm512_set1_ps(0.999999f), add = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], mul, add);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float out[16];
  _mm512_store_ps(out, s);
  return out[0];
}
}  // namespace

double measure_fma_peak(int threads, int ms) {
  if (!cpu_features().avx2 || !cpu_features().fma)
    throw Error(ErrorCode::Unsupported, "measure_fma_peak needs AVX2+FMA");
  if (threads < 1) throw Error(ErrorCode::Argument, "measure_fma_peak: threads must be >= 1");
  // Calibrate iterations on one thread, then run one OS thread per requested thread for ~ms.
  // Dedicated threads (not the pool's dynamic hand-out) so each thread runs exactly one chain.
  // the widest FMA the CPU has: the peak the kernels are judged against
  const bool wide = cpu_features().avx512f;
  double (*chains)(int64_t) = wide ? fma_chains_512 : fma_chains;
  const int lanes = wide ? 16 : 8;
  auto t0 = std::chrono::steady_clock::now();
  volatile double sink = chains(1 << 20);
  double calib = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t iters = (int64_t)((double)(1 << 20) * (ms / 1000.0) / std::max(calib, 1e-6));
  std::vector<std::thread> pool;
  std::vector<double> results((size_t)threads);
  t0 = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { results[(size_t)t] = chains(iters); });
  for (auto& t : pool) t.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (double r : results) sink = sink + r;
  (void)sink;
  return (double)iters * 12 * lanes * 2 * threads / secs / 1e9;
}

namespace {
__attribute__((target("avx2,fma"))) float sum_floats(const float* p, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_add_ps(s0, _mm256_load_ps(p + i));
    s1 = _mm256_add_ps(s1, _mm256_load_ps(p + i + 8));
    s2 = _mm256_add_ps(s2, _mm256_load_ps(p + i + 16));
    s3 = _mm256_add_ps(s3, _mm256_load_ps(p + i + 24));
  }
  return hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}
}  // namespace

double measure_read_bandwidth(int threads, int64_t bytes) {
  if (!cpu_features().avx2) throw Error(ErrorCode::Unsupported, "measure_read_bandwidth needs AVX2");
  if (threads < 1 || bytes < (1 << 20)) throw Error(ErrorCode::Argument, "measure_read_bandwidth: threads >= 1, bytes >= 1 MiB");
  const int64_t n = bytes / 4 / threads / 32 * 32;
  std::vector<AlignedBuffer> bufs;
  for (int t = 0; t < threads; ++t) {
    bufs.push_back(aligned_floats((size_t)n));
    std::fill(bufs.back().get(), bufs.back().get() + n, 1.0f);  // touch: real pages, not the zero page
  }
  std::vector<float> sinks((size_t)threads);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {  // best of 3: the machine is shared
    std::vector<std::thread> pool;
    const auto t0 = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { sinks[(size_t)t] += sum_floats(bufs[(size_t)t].get(), n); });
    for (auto& th : pool) th.join();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, (double)n * 4 * threads / secs / 1e9);
  }
  volatile float keep = sinks[0];
  (void)keep;
  return best;
}

}  // namespace medllava
