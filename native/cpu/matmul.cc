// CPU matmul, the float paths and the dispatch: out(M,N) = act(a(M,K) · w(N,K)ᵀ + bias(N)), fp32
// accumulation (CUDA twin: native/cuda/matmul.cuh; the quantized paths: matmul_quant.cc).
// defines: matmul_cpu, matmul_cpu_scalar, gemm_cpu, gemm_check.
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
#include <mutex>
#include <thread>
#include <vector>

#include "../core/cpu_features.h"
#include "../core/error.h"
#include "../core/thread_pool.h"
#include "../formats/ggml_types.h"
#include "../ops/ops.h"
#include "matmul_quant.h"  // defines: gemv_q_avx2, matmul_vnni_x16
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
  if (p.w_t || p.ldw) {  // f32 with a stride: stored (K, N) (a row of the panel is contiguous) or (N, ldw)
    const float* w = static_cast<const float*>(p.w);
    const int64_t ld = p.ldw ? p.ldw : (p.w_t ? p.N : p.K);
    for (int64_t k = 0; k < kc; ++k)
      for (int j = 0; j < NR; ++j)
        bp[k * NR + j] = j < rows ? (p.w_t ? w[(k0 + k) * ld + n0 + j] : w[(n0 + j) * ld + k0 + k]) : 0.0f;
    return;
  }
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
  if (p.a_t) {  // a stored (K, M): each k's MR values are contiguous
    const int64_t ld = p.lda ? p.lda : p.M;
    for (int64_t k = 0; k < kc; ++k)
      for (int i = 0; i < MR; ++i) ap[k * MR + i] = i < rows ? p.a[(k0 + k) * ld + m0 + i] : 0.0f;
    return;
  }
  const int64_t lda = p.lda ? p.lda : p.K;
  for (int i = 0; i < MR; ++i) {
    if (i < rows) {
      const float* src = p.a + (m0 + i) * lda + k0;
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
            const int64_t ldc = p.ldc ? p.ldc : p.N;
            store_tile(t, wide ? 2 * NR : NR, p.out + (ic + ir) * ldc + jc + jr, ldc, mr, nr, !first || p.accumulate, bias, p.act, last);
          }
          panel += nb;
        }
      }
    });
  }
}

}  // namespace


void matmul_cpu(const MatmulArgs& p) {
  check_args(p);
  if (p.M == 0) return;
  if (!use_avx2()) return matmul_cpu_scalar(p);
  if (p.w_x16 && use_vnni() && dtype_is_block(p.w_type)) return matmul_vnni_x16(p);
  if (p.M <= 2) return dtype_is_block(p.w_type) ? gemv_q_avx2(p) : gemv_avx2(p);
  if (p.M <= kSmallM && !dtype_is_block(p.w_type) && use_avx512()) return small_m_avx512(p);
  gemm_avx2(p);
}

void gemm_check(const GemmArgs& g) {
  if (g.M < 0 || g.N < 0 || g.K < 0) throw Error(ErrorCode::Shape, "gemm: M, N, K must be ≥ 0");
  if (g.lda < (g.trans_a ? g.M : g.K) || g.ldb < (g.trans_b ? g.K : g.N) || g.ldc < g.N)
    throw Error(ErrorCode::Shape, "gemm: a leading dimension is shorter than its row");
  if (dtype_is_block(g.b_type)) {
    const int64_t be = dtype_block_elems(g.b_type), row = g.trans_b ? g.K : g.N;
    if (row % be || g.ldb % be)
      throw Error(ErrorCode::Shape, std::string("gemm: ") + dtype_name(g.b_type) + " rows must be whole blocks of " + std::to_string(be));
  }
  if ((g.M && g.N && g.K) && (!g.a || !g.b || !g.c)) throw Error(ErrorCode::Argument, "gemm: null buffer");
}

namespace {
// Scratch for gemm_cpu's packed operands: buffers borrowed from a process-wide free list and given
// back after the call, grown but never shrunk — no page faults or zero-filling per call (backward
// calls the GEMM a few times per layer), and as many buffers as GEMMs ever ran at once (not one set
// per thread: every libuv worker may run a training step).
class GemmScratch {
 public:
  float* get(int64_t floats) {
    {
      std::lock_guard<std::mutex> lock(mu());
      if (!free().empty()) held_.push_back(std::move(free().back())), free().pop_back();
    }
    if (held_.size() < ++used_) held_.emplace_back();
    std::vector<float>& b = held_[used_ - 1];
    if ((int64_t)b.size() < floats) b.resize((size_t)floats);
    return b.data();
  }
  ~GemmScratch() {
    std::lock_guard<std::mutex> lock(mu());
    for (auto& b : held_) free().push_back(std::move(b));
  }

 private:
  static std::mutex& mu() {
    static std::mutex m;
    return m;
  }
  static std::vector<std::vector<float>>& free() {
    static std::vector<std::vector<float>> f;
    return f;
  }
  std::vector<std::vector<float>> held_;
  size_t used_ = 0;
};
}  // namespace

void gemm_cpu(const GemmArgs& g) {
  gemm_check(g);
  if (g.M == 0 || g.N == 0) return;
  const int64_t M = g.M, N = g.N, K = g.K;
  ThreadPool& pool = ThreadPool::instance();
  GemmScratch scratch;
  auto combine = [&](const float* t) {  // C = alpha · t + beta · C, rows in parallel
    pool.parallel_for((size_t)((M + 15) / 16), [&](size_t task, int) {
      for (int64_t m = (int64_t)task * 16; m < std::min(M, (int64_t)task * 16 + 16); ++m)
        for (int64_t n = 0; n < N; ++n) {
          float& c = g.c[m * g.ldc + n];
          c = g.beta == 0.0f ? g.alpha * t[m * N + n] : g.alpha * t[m * N + n] + g.beta * c;
        }
    });
  };
  if (K == 0) {
    const std::vector<float> zero((size_t)(M * N), 0.0f);
    return combine(zero.data());
  }
  // The blocked kernel packs both operands anyway: it reads transposed and strided f32 operands in
  // place (MatmulArgs' general forms) and accumulates into C for beta = 1 — no copies. Small M (the
  // GEMV and small-M kernels, which read the plain layout) and non-f32 B take the packed route below.
  if (use_avx2() && M > kSmallM && g.alpha == 1.0f && (g.beta == 0.0f || g.beta == 1.0f) &&
      (g.b_type == DType::F32 || (g.trans_b && g.ldb == K))) {
    MatmulArgs m;
    m.a = g.a, m.a_t = g.trans_a, m.lda = g.lda;
    m.w = g.b, m.w_type = g.b_type, m.w_t = !g.trans_b, m.ldw = g.ldb != (g.trans_b ? K : N) ? g.ldb : 0;
    m.out = g.c, m.ldc = g.ldc, m.accumulate = g.beta == 1.0f;
    m.M = M, m.N = N, m.K = K;
    return gemm_avx2(m);
  }
  // as matmul_cpu's out = A' · B'ᵀ with A' (M, K) and B' (N, K) contiguous: pack what is not already
  // so, in 64 × 64 tiles (a transpose that stays in cache), tiles in parallel
  const float* ap = g.a;
  if (g.trans_a || g.lda != K) {
    float* apack = scratch.get(M * K);
    if (!g.trans_a) {
      pool.parallel_for((size_t)M, [&](size_t m, int) { std::memcpy(apack + m * K, g.a + (int64_t)m * g.lda, (size_t)K * 4); });
    } else {  // A stored (K, M): apack[m, k] = a[k, m]
      const int64_t tm = (M + 63) / 64, tk = (K + 63) / 64;
      pool.parallel_for((size_t)(tm * tk), [&](size_t task, int) {
        const int64_t m0 = (int64_t)task / tk * 64, k0 = (int64_t)task % tk * 64;
        for (int64_t k = k0; k < std::min(K, k0 + 64); ++k)
          for (int64_t m = m0; m < std::min(M, m0 + 64); ++m) apack[m * K + k] = g.a[k * g.lda + m];
      });
    }
    ap = apack;
  }
  const void* bp = g.b;
  DType bt = g.b_type;
  if (!(g.trans_b && g.ldb == K)) {
    float* bpack = scratch.get(N * K);
    const int64_t rows = g.trans_b ? N : K, len = g.trans_b ? K : N;
    if (g.b_type == DType::F32 && !g.trans_b) {  // B stored (K, N) f32: bpack[n, k] = b[k, n], 64 × 64 tiles
      const float* b = static_cast<const float*>(g.b);
      const int64_t tn = (N + 63) / 64, tk = (K + 63) / 64;
      pool.parallel_for((size_t)(tn * tk), [&](size_t task, int) {
        const int64_t n0 = (int64_t)task / tk * 64, k0 = (int64_t)task % tk * 64;
        for (int64_t k = k0; k < std::min(K, k0 + 64); ++k)
          for (int64_t n = n0; n < std::min(N, n0 + 64); ++n) bpack[n * K + k] = b[k * g.ldb + n];
      });
    } else {  // each stored row decoded once (any type), then placed; groups of 64 rows in parallel
      pool.parallel_for((size_t)((rows + 63) / 64), [&](size_t task, int) {
        std::vector<float> row((size_t)len);
        const int32_t zero = 0;
        for (int64_t r = (int64_t)task * 64; r < std::min(rows, (int64_t)task * 64 + 64); ++r) {
          embed_cpu(static_cast<const uint8_t*>(g.b) + dtype_bytes(g.b_type, r * g.ldb), g.b_type, &zero, row.data(), 1, len);
          if (g.trans_b) std::memcpy(bpack + r * K, row.data(), (size_t)K * 4);
          else
            for (int64_t n = 0; n < N; ++n) bpack[n * K + r] = row[(size_t)n];
        }
      });
    }
    bp = bpack;
    bt = DType::F32;
  }
  MatmulArgs m;
  m.a = ap;
  m.w = bp;
  m.w_type = bt;
  m.M = M;
  m.N = N;
  m.K = K;
  if (g.alpha == 1.0f && g.beta == 0.0f && g.ldc == N) {
    m.out = g.c;
    return matmul_cpu(m);
  }
  float* tmp = scratch.get(M * N);
  m.out = tmp;
  matmul_cpu(m);
  combine(tmp);
}

}  // namespace medllava
