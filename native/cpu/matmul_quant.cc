// CPU matmul, the quantized paths (matmul.cc dispatches to them): the decode GEMV on Q8_0 / Q4_0 /
// K-quant weights (activations quantized to Q8_0, int8 dots), and AVX-512 VNNI on GGML blocks
// repacked 16 rows at a time. defines: gemv_q_avx2, matmul_vnni_x16, repack_x16, cpu_has_vnni.
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

#include "matmul_quant.h"

namespace medllava {

namespace {
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

}  // namespace

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

namespace {
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

}  // namespace

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

}  // namespace medllava
