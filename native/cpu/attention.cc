// Attention on the CPU (CUDA twins: native/cuda/attention.cuh): causal attention over the f16 KV
// cache (grouped-query, converted on read) and full ViT attention, fp32 accumulation, with plain
// scalar twins; causal attention over a sequence's own f32 K, V with its log-sum-exp (training).
// Their backward runs on the GEMM per head. defines: attention_cached_cpu, attention_cached_scalar,
// attention_full_cpu, attention_causal_cpu, attention_backward_cpu.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/cpu_features.h"
#include "../core/dtype.h"
#include "../core/thread_pool.h"
#include "../ops/ops.h"
#include "vec_avx2.h"  // defines: exp_avx2

namespace medllava {

namespace {
// Rows of keys / values as the attention kernels read them: f16 (the KV cache) or f32 (a ViT's).
struct F16Rows {
  const uint16_t* p;
  __attribute__((target("avx2,f16c"))) __m256 load(int64_t off) const {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + off)));
  }
};
struct F32Rows {
  const float* p;
  __attribute__((target("avx2"))) __m256 load(int64_t off) const { return _mm256_loadu_ps(p + off); }
};

// The plain scalar twin: one query row against n key/value rows (`stride` elements apart, read as
// f32 by `get`). p: n scratch floats.
template <class T, class Get>
void attend_scalar(const float* qv, const T* k, const T* v, int64_t n, int64_t stride, int64_t hd, float scale, float* p,
                   float* o, Get get, float* lse = nullptr) {
  float m = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    float s = 0;
    for (int64_t i = 0; i < hd; ++i) s += qv[i] * get(k[j * stride + i]);
    p[j] = s * scale;
    m = std::max(m, p[j]);
  }
  float z = 0;
  for (int64_t j = 0; j < n; ++j) z += (p[j] = std::exp(p[j] - m));
  if (lse) *lse = m + std::log(z);
  std::fill(o, o + hd, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const float w = p[j] / z;
    for (int64_t i = 0; i < hd; ++i) o[i] += w * get(v[j * stride + i]);
  }
}

// One query row against n key/value rows (`stride` elements apart), AVX2; hd % 8 == 0. p: n scratch floats.
template <class Rows>
__attribute__((target("avx2,fma,f16c"))) void attend_avx2(const float* qv, Rows k, Rows v, int64_t n, int64_t stride,
                                                         int64_t hd, float scale, float* p, float* o, float* lse = nullptr) {
  float m = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    __m256 s = _mm256_setzero_ps();
    for (int64_t i = 0; i < hd; i += 8) s = _mm256_fmadd_ps(_mm256_loadu_ps(qv + i), k.load(j * stride + i), s);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    p[j] = _mm_cvtss_f32(h) * scale;
    m = std::max(m, p[j]);
  }
  float z = 0;
  for (int64_t j = 0; j < n; ++j) z += (p[j] = std::exp(p[j] - m));
  if (lse) *lse = m + std::log(z);
  const __m256 inv = _mm256_set1_ps(1.0f / z);
  for (int64_t i = 0; i < hd; i += 8) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; ++j) acc = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), v.load(j * stride + i), acc);
    _mm256_storeu_ps(o + i, _mm256_mul_ps(acc, inv));
  }
}
}  // namespace

void attention_cached_cpu(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, float* out, int64_t T,
                          int64_t n_past, int64_t H, int64_t KVH, int64_t hd) {
  if (use_avx2() && hd % 8 == 0) {
    const int64_t group = H / KVH;
    const float scale = 1.0f / std::sqrt((float)hd);
    ThreadPool::instance().parallel_for((size_t)(T * H), [&](size_t task, int) {
      const int64_t t = (int64_t)task / H, h = (int64_t)task % H, kvh = h / group;
      std::vector<float> p((size_t)(n_past + t + 1));
      attend_avx2(q + (t * H + h) * hd, F16Rows{k_cache + kvh * hd}, F16Rows{v_cache + kvh * hd}, n_past + t + 1, KVH * hd, hd,
                  scale, p.data(), out + (t * H + h) * hd);
    });
    return;
  }
  attention_cached_scalar(q, k_cache, v_cache, out, T, n_past, H, KVH, hd);
}

void attention_cached_scalar(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, float* out, int64_t T,
                             int64_t n_past, int64_t H, int64_t KVH, int64_t hd) {
  const int64_t group = H / KVH;
  const float scale = 1.0f / std::sqrt((float)hd);
  ThreadPool::instance().parallel_for((size_t)(T * H), [&](size_t task, int) {
    const int64_t t = (int64_t)task / H, h = (int64_t)task % H, kvh = h / group;
    std::vector<float> p((size_t)(n_past + t + 1));  // causal: positions 0 … n_past + t
    attend_scalar(q + (t * H + h) * hd, k_cache + kvh * hd, v_cache + kvh * hd, n_past + t + 1, KVH * hd, hd, scale, p.data(),
                  out + (t * H + h) * hd, [](uint16_t x) { return f16_to_f32(x); });
  });
}

namespace {
// x(n) ← softmax(scale · x), AVX2 (e^x on 8 lanes); returns log Σ exp(scale · x)
__attribute__((target("avx2,fma"))) float softmax_row_avx2(float* x, int64_t n, float scale) {
  float m = -INFINITY;
  for (int64_t j = 0; j < n; ++j) m = std::max(m, x[j]);
  const __m256 vs = _mm256_set1_ps(scale), vm = _mm256_set1_ps(m * scale);
  __m256 z8 = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp_avx2(_mm256_fmsub_ps(_mm256_loadu_ps(x + j), vs, vm));
    _mm256_storeu_ps(x + j, e);
    z8 = _mm256_add_ps(z8, e);
  }
  alignas(32) float zl[8];
  _mm256_store_ps(zl, z8);
  float z = zl[0] + zl[1] + zl[2] + zl[3] + zl[4] + zl[5] + zl[6] + zl[7];
  for (; j < n; ++j) z += (x[j] = std::exp(x[j] * scale - m * scale));
  const __m256 inv = _mm256_set1_ps(1.0f / z);
  for (j = 0; j + 8 <= n; j += 8) _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), inv));
  for (; j < n; ++j) x[j] /= z;
  return m * scale + std::log(z);
}
// Attention of one sequence per head as two GEMMs (the blocked kernels, at a large share of the FMA
// peak): S = Q·Kᵀ (T × T, one head's scores: T² floats of scratch, 1.3 MiB at 577 tokens), the row
// softmax (causal: over keys 0 … t, the rest zeroed), out = P·V (V transposed so that it is the
// GEMM's (N, K) operand). Query head h reads KV head h / (H / KVH). lse(H, T) when given.
void attention_gemm(const float* q, const float* k, const float* v, float* out, float* lse, int64_t T, int64_t H, int64_t KVH, int64_t hd,
                    bool causal) {
  const float scale = 1.0f / std::sqrt((float)hd);
  const int64_t group = H / KVH;
  ThreadPool& pool = ThreadPool::instance();
  std::vector<float> qh((size_t)(T * hd)), kh((size_t)(T * hd)), vt((size_t)(hd * T)), s((size_t)(T * T)), oh((size_t)(T * hd));
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = h / group;
    for (int64_t t = 0; t < T; ++t) {
      std::copy(q + (t * H + h) * hd, q + (t * H + h + 1) * hd, qh.data() + t * hd);
      if (h % group == 0) {
        std::copy(k + (t * KVH + g) * hd, k + (t * KVH + g + 1) * hd, kh.data() + t * hd);
        for (int64_t d = 0; d < hd; ++d) vt[(size_t)(d * T + t)] = v[(t * KVH + g) * hd + d];
      }
    }
    MatmulArgs a;
    a.a = qh.data(), a.w = kh.data(), a.out = s.data(), a.M = T, a.N = T, a.K = hd;
    matmul_cpu(a);
    pool.parallel_for((size_t)T, [&](size_t t, int) {
      float* row = s.data() + t * T;
      const int64_t n = causal ? (int64_t)t + 1 : T;
      const float l = softmax_row_avx2(row, n, scale);
      for (int64_t j = n; j < T; ++j) row[j] = 0.0f;
      if (lse) lse[h * T + (int64_t)t] = l;
    });
    MatmulArgs b;
    b.a = s.data(), b.w = vt.data(), b.out = oh.data(), b.M = T, b.N = hd, b.K = T;
    matmul_cpu(b);
    for (int64_t t = 0; t < T; ++t) std::copy(oh.data() + t * hd, oh.data() + (t + 1) * hd, out + (t * H + h) * hd);
  }
}
}  // namespace

void attention_full_cpu(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t H, int64_t hd, float* lse) {
  const float scale = 1.0f / std::sqrt((float)hd);
  if (use_avx2() && T >= 32) return attention_gemm(q, k, v, out, lse, T, H, H, hd, false);
  if (use_avx2() && hd % 8 == 0) {
    ThreadPool::instance().parallel_for((size_t)(T * H), [&](size_t task, int) {
      const int64_t t = (int64_t)task / H, h = (int64_t)task % H;
      std::vector<float> p((size_t)T);
      attend_avx2(q + (t * H + h) * hd, F32Rows{k + h * hd}, F32Rows{v + h * hd}, T, H * hd, hd, scale, p.data(),
                  out + (t * H + h) * hd, lse ? lse + h * T + t : nullptr);
    });
    return;
  }
  ThreadPool::instance().parallel_for((size_t)(T * H), [&](size_t task, int) {
    const int64_t t = (int64_t)task / H, h = (int64_t)task % H;
    std::vector<float> p((size_t)T);
    attend_scalar(q + (t * H + h) * hd, k + h * hd, v + h * hd, T, H * hd, hd, scale, p.data(), out + (t * H + h) * hd,
                  [](float x) { return x; }, lse ? lse + h * T + t : nullptr);
  });
}

void attention_causal_cpu(const float* q, const float* k, const float* v, float* out, float* lse, int64_t T, int64_t H, int64_t KVH,
                          int64_t hd) {
  if (use_avx2() && T >= 32) return attention_gemm(q, k, v, out, lse, T, H, KVH, hd, true);
  const int64_t group = H / KVH, kvd = KVH * hd;
  const float scale = 1.0f / std::sqrt((float)hd);
  // one task per (head, query row); scores in double, as the scalar twins of the other attentions
  ThreadPool::instance().parallel_for((size_t)(H * T), [&](size_t task, int) {
    const int64_t h = (int64_t)task / T, t = (int64_t)task % T, kvh = h / group;
    const float* qr = q + (t * H + h) * hd;
    std::vector<double> p((size_t)(t + 1));
    double m = -INFINITY;
    for (int64_t s = 0; s <= t; ++s) {
      const float* kr = k + s * kvd + kvh * hd;
      double dot = 0;
      for (int64_t d = 0; d < hd; ++d) dot += (double)qr[d] * kr[d];
      p[(size_t)s] = dot * scale;
      m = std::max(m, p[(size_t)s]);
    }
    double z = 0;
    for (int64_t s = 0; s <= t; ++s) z += (p[(size_t)s] = std::exp(p[(size_t)s] - m));
    float* o = out + (t * H + h) * hd;
    for (int64_t d = 0; d < hd; ++d) {
      double acc = 0;
      for (int64_t s = 0; s <= t; ++s) acc += p[(size_t)s] * v[s * kvd + kvh * hd + d];
      o[d] = (float)(acc / z);
    }
    if (lse) lse[h * T + t] = (float)(m + std::log(z));
  });
}

void attention_backward_cpu(const float* q, const float* k, const float* v, const float* out, const float* lse, const float* dout, float* dq,
                            float* dk, float* dv, int64_t T, int64_t H, int64_t KVH, int64_t hd, bool causal) {
  if (T <= 0) return;
  const int64_t group = H / KVH, qd = H * hd, kvd = KVH * hd;
  const float scale = 1.0f / std::sqrt((float)hd);
  // Per query head, with one (T, T) scratch on the host (the CUDA kernel keeps none): the scores
  // S = q kᵀ by the GEMM, P = exp(S·scale − lse) (0 above the diagonal when causal), dP = dout vᵀ,
  // dS = P ⊙ (dP − D); then three GEMMs accumulate dq, dk, dv.
  std::vector<float> P((size_t)(T * T)), dP((size_t)(T * T)), D((size_t)T);
  auto gemm = [&](const float* a, int64_t lda, bool ta, const float* b, int64_t ldb, bool tb, float* c, int64_t ldc, int64_t M,
                  int64_t N, int64_t K, float alpha, float beta) {
    GemmArgs g;
    g.a = a, g.lda = lda, g.trans_a = ta, g.b = b, g.ldb = ldb, g.trans_b = tb, g.c = c, g.ldc = ldc;
    g.M = M, g.N = N, g.K = K, g.alpha = alpha, g.beta = beta;
    gemm_cpu(g);
  };
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = h / group;
    const float *qh = q + h * hd, *kg = k + g * hd, *vg = v + g * hd, *oh = out + h * hd, *doh = dout + h * hd;
    gemm(qh, qd, false, kg, kvd, true, P.data(), T, T, T, hd, scale, 0.0f);     // S·scale (T, T)
    gemm(doh, qd, false, vg, kvd, true, dP.data(), T, T, T, hd, 1.0f, 0.0f);    // dout vᵀ (T, T)
    ThreadPool::instance().parallel_for((size_t)T, [&](size_t task, int) {
      const int64_t t = (int64_t)task;
      double d = 0;
      for (int64_t i = 0; i < hd; ++i) d += (double)doh[t * qd + i] * oh[t * qd + i];
      const float l = lse[h * T + t], Dt = (float)d;
      float *pr = P.data() + t * T, *dr = dP.data() + t * T;
      const int64_t end = causal ? t + 1 : T;
      for (int64_t s2 = 0; s2 < end; ++s2) {
        const float pv = std::exp(pr[s2] - l);
        pr[s2] = pv;
        dr[s2] = pv * (dr[s2] - Dt);
      }
      for (int64_t s2 = end; s2 < T; ++s2) pr[s2] = dr[s2] = 0.0f;
    });
    gemm(dP.data(), T, false, kg, kvd, false, dq + h * hd, qd, T, hd, T, scale, 1.0f);  // dq += dS k · scale
    gemm(dP.data(), T, true, qh, qd, false, dk + g * hd, kvd, T, hd, T, scale, 1.0f);   // dk += dSᵀ q · scale
    gemm(P.data(), T, true, doh, qd, false, dv + g * hd, kvd, T, hd, T, 1.0f, 1.0f);     // dv += Pᵀ dout
  }
}

}  // namespace medllava
