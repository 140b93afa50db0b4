// CUDA kernels for the transformer ops of native/ops/ops.h (the CPU twins are native/cpu/*.cc):
// embedding gather, RMSNorm, LayerNorm, RoPE, SiLU·mul, GELU / quick_gelu, residual add (with
// LayerScale), KV-cache append, flash attention (ViT and causal prefill, GQA), split-KV decode
// attention + combine, argmax and top-k. No host code beyond launchers, so the SIMT emulator
// includes this file and runs the same kernels in the tests.
#pragma once
#include <cstdint>

#include "../core/dtype.h"
#include "../ops/activation.h"
#include "compat.cuh"
#include "elements.cuh"  // defines: load_element, half_bits_f32, f32_half_bits

namespace medllava {
namespace cuda {

// ---- reductions -----------------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Sum over the block (blockDim.x a multiple of 32); every thread gets it. `red`: 32 shared floats.
__device__ __forceinline__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  if (lane == 0) red[warp] = v;
  __syncthreads();  // every warp's partial is in `red`
  v = lane < warps ? red[lane] : 0.0f;
  v = warp_sum(v);
  __syncthreads();  // `red` may be written again by the next call
  return v;
}

constexpr int kRowThreads = 256;

// ---- normalisation (one block per row) ----------------------------------------------------------------
__global__ void __launch_bounds__(kRowThreads)
    rmsnorm_kernel(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ out, int D, float eps) {
  __shared__ float red[32];
  const float* row = x + (int64_t)blockIdx.x * D;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < D; i += blockDim.x) ss += row[i] * row[i];
  ss = block_sum(ss, red);
  const float k = rsqrtf(ss / (float)D + eps);
  float* o = out + (int64_t)blockIdx.x * D;
  for (int i = threadIdx.x; i < D; i += blockDim.x) o[i] = row[i] * k * w[i];
}

__global__ void __launch_bounds__(kRowThreads)
    layernorm_kernel(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
                     float* __restrict__ out, int D, float eps) {
  __shared__ float red[32];
  const float* row = x + (int64_t)blockIdx.x * D;
  float s = 0.0f;
  for (int i = threadIdx.x; i < D; i += blockDim.x) s += row[i];
  const float mean = block_sum(s, red) / (float)D;
  float v = 0.0f;
  for (int i = threadIdx.x; i < D; i += blockDim.x) v += (row[i] - mean) * (row[i] - mean);
  const float k = rsqrtf(block_sum(v, red) / (float)D + eps);
  float* o = out + (int64_t)blockIdx.x * D;
  for (int i = threadIdx.x; i < D; i += blockDim.x) o[i] = (row[i] - mean) * k * w[i] + b[i];
}

// ---- element-wise ---------------------------------------------------------------------------------
// x(T, heads, hd) rotated in place, one thread per pair. Angles in double, as the CPU's: at position
// 4096 an f32 angle would already be off by ~4e-4 rad.
__global__ void rope_kernel(float* x, int T, int heads, int hd, int pos0, float theta, int adjacent) {
  const int64_t n = (int64_t)T * heads * (hd / 2);
  for (int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; p < n; p += (int64_t)gridDim.x * blockDim.x) {
    const int i = (int)(p % (hd / 2));
    const int64_t th = p / (hd / 2);
    const int t = (int)(th / heads);
    const double a = (double)(pos0 + t) * pow((double)theta, -2.0 * (double)i / (double)hd);
    const float c = (float)cos(a), s = (float)sin(a);
    float* v = x + th * hd;
    const int i0 = adjacent ? 2 * i : i, i1 = adjacent ? 2 * i + 1 : i + hd / 2;
    const float x0 = v[i0], x1 = v[i1];
    v[i0] = x0 * c - x1 * s;
    v[i1] = x1 * c + x0 * s;
  }
}

__global__ void silu_mul_kernel(const float* __restrict__ gate, const float* __restrict__ up, float* __restrict__ out,
                                int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

__global__ void activation_kernel(const float* __restrict__ x, float* __restrict__ out, int64_t n, int act) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = apply_activation(x[i], (Activation)act);
}

// h(n) += scale · γ ⊙ a, γ (D) the LayerScale broadcast over rows (null: 1)
__global__ void residual_kernel(float* __restrict__ h, const float* __restrict__ a, const float* __restrict__ gamma,
                                float scale, int64_t n, int D) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    h[i] += scale * (gamma ? gamma[i % D] : 1.0f) * a[i];
}

// out(T, D) = rows ids[t] of table (vocab, D) stored as `type`
__global__ void embed_kernel(const uint8_t* __restrict__ table, int type, const int32_t* __restrict__ ids,
                             float* __restrict__ out, int D) {
  const uint8_t* row = table + dtype_bytes((DType)type, (int64_t)ids[blockIdx.x] * D);
  for (int d = threadIdx.x; d < D; d += blockDim.x) out[(int64_t)blockIdx.x * D + d] = load_element(row, (DType)type, d);
}

// cache rows [pos, pos + T) ← f16(src (T, width))
__global__ void kv_append_kernel(const float* __restrict__ src, uint16_t* __restrict__ cache, int64_t pos, int64_t n,
                                 int width) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    cache[pos * width + i] = f32_half_bits(src[i]);
}

// ---- attention ------------------------------------------------------------------------------------
// Flash attention: blocks of kFlashQ queries of one head stream the keys in tiles of kFlashK through
// shared memory with an online softmax — no score matrix in global memory. Each warp owns queries;
// lane j scores key j of the tile, then each lane accumulates its own output dimensions
// (d = lane + 32·c, hd ≤ 32·kMaxChunks). Keys and values (rows `kv_stride` elements apart, the query
// head's KV head at column kvh·hd) are f32 (a ViT's) or f16 (the KV cache).
constexpr int kFlashQ = 16, kFlashK = 32, kFlashWarps = 4, kMaxChunks = 4, kMaxHd = 32 * kMaxChunks;

// State of one query row: running max m, running sum l, unnormalised output acc (this lane's dims).
struct FlashRow {
  float m, l, acc[kMaxChunks];
};

// Folds keys [k0, k0 + n) of the tile in Ks/Vs (shared, rows of hd + 1) into `st` for query qs
// (shared, hd floats); keys at or after `limit` (absolute) are masked.
__device__ __forceinline__ void flash_tile(FlashRow& st, const float* qs, const float* Ks, const float* Vs, float* ps, int n,
                                           int k0, int limit, int hd, float scale) {
  const int lane = threadIdx.x % 32;
  float s = -INFINITY;
  if (lane < n && k0 + lane < limit) {
    s = 0.0f;
    for (int d = 0; d < hd; ++d) s += qs[d] * Ks[lane * (hd + 1) + d];
    s *= scale;
  }
  const float m_new = fmaxf(st.m, warp_max(s));
  if (m_new == -INFINITY) return;  // nothing visible yet
  const float p = s == -INFINITY ? 0.0f : expf(s - m_new);
  const float corr = st.m == -INFINITY ? 0.0f : expf(st.m - m_new);
  st.l = st.l * corr + warp_sum(p);
  st.m = m_new;
  ps[lane] = p;
  __syncwarp();  // every lane's p is in ps
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) {
    const int d = lane + 32 * c;
    if (d >= hd) continue;
    float a = st.acc[c] * corr;
    for (int j = 0; j < n; ++j) a += ps[j] * Vs[j * (hd + 1) + d];
    st.acc[c] = a;
  }
  __syncwarp();  // ps is read by all before the next tile overwrites it
}

// q (T, H, hd) f32; k, v rows of KV (n_kv rows, kv_stride apart); out (T, H, hd). Query t sees keys
// [0, n_past + t] when causal, all n_kv otherwise. Grid: (ceil(T / kFlashQ), H).
template <class KV>
__global__ void __launch_bounds__(32 * kFlashWarps)
    flash_attention_kernel(const float* __restrict__ q, const KV* __restrict__ k, const KV* __restrict__ v,
                           float* __restrict__ out, int T, int H, int KVH, int hd, int n_kv, int kv_stride, int n_past,
                           int causal) {
  __shared__ float Ks[kFlashK * (kMaxHd + 1)], Vs[kFlashK * (kMaxHd + 1)];
  __shared__ float Qs[kFlashQ][kMaxHd];
  __shared__ float Ps[kFlashWarps][32];
  const int h = blockIdx.y, kvh = h / (H / KVH), t0 = blockIdx.x * kFlashQ;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rows = min(kFlashQ, T - t0);
  const float scale = rsqrtf((float)hd);
  for (int i = threadIdx.x; i < rows * hd; i += blockDim.x) Qs[i / hd][i % hd] = q[((int64_t)(t0 + i / hd) * H + h) * hd + i % hd];
  constexpr int kPerWarp = kFlashQ / kFlashWarps;
  FlashRow st[kPerWarp];  // in registers: every loop over r is unrolled
#pragma unroll
  for (int r = 0; r < kPerWarp; ++r) {
    st[r].m = -INFINITY;
    st[r].l = 0.0f;
    for (int c = 0; c < kMaxChunks; ++c) st[r].acc[c] = 0.0f;
  }
  // keys the last query of this block can see
  const int end = causal ? min(n_kv, n_past + t0 + rows) : n_kv;
  for (int k0 = 0; k0 < end; k0 += kFlashK) {
    const int n = min(kFlashK, end - k0);
    __syncthreads();  // the previous tile (and Qs, the first time) is no longer being read / is written
    for (int i = threadIdx.x; i < n * hd; i += blockDim.x) {
      const int j = i / hd, d = i % hd;
      const int64_t g = (int64_t)(k0 + j) * kv_stride + (int64_t)kvh * hd + d;
      Ks[j * (hd + 1) + d] = to_f32(k[g]);
      Vs[j * (hd + 1) + d] = to_f32(v[g]);
    }
    __syncthreads();  // the tile is complete
#pragma unroll
    for (int r = 0; r < kPerWarp; ++r) {
      const int row = warp + kFlashWarps * r;
      if (row < rows) flash_tile(st[r], Qs[row], Ks, Vs, Ps[warp], n, k0, causal ? n_past + t0 + row + 1 : n_kv, hd, scale);
    }
  }
#pragma unroll
  for (int r = 0; r < kPerWarp; ++r) {
    const int row = warp + kFlashWarps * r;
    if (row >= rows) continue;
    float* o = out + ((int64_t)(t0 + row) * H + h) * hd;
#pragma unroll
    for (int c = 0; c < kMaxChunks; ++c) {
      const int d = lane + 32 * c;
      if (d < hd) o[d] = st[r].acc[c] / st[r].l;
    }
  }
}

// Decode ("flash-decoding"): one query token over n_kv cached positions, split across `splits`
// blocks per KV head; the query heads sharing that KV head (the GQA group) are processed together,
// one warp each, against the same shared-memory tiles. Each block writes, per query head, its
// unnormalised partial output and (m, l); decode_combine_kernel merges the splits.
// Grid: (KVH, splits). q (H, hd); partial (H, splits, hd); ml (H, splits, 2).
template <class KV>
__global__ void __launch_bounds__(32 * kFlashWarps)
    attention_decode_kernel(const float* __restrict__ q, const KV* __restrict__ k, const KV* __restrict__ v,
                            float* __restrict__ partial, float* __restrict__ ml, int H, int KVH, int hd, int n_kv,
                            int kv_stride, int chunk) {
  __shared__ float Ks[kFlashK * (kMaxHd + 1)], Vs[kFlashK * (kMaxHd + 1)];
  __shared__ float Qs[kFlashWarps][kMaxHd];
  __shared__ float Ps[kFlashWarps][32];
  const int kvh = blockIdx.x, split = blockIdx.y, splits = gridDim.y, group = H / KVH;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int begin = split * chunk, end = min(n_kv, begin + chunk);
  const float scale = rsqrtf((float)hd);
  // the group's query heads, kFlashWarps at a time
  for (int g0 = 0; g0 < group; g0 += kFlashWarps) {
    const int h = kvh * group + g0 + warp;
    const bool mine = g0 + warp < group;
    // no barrier needed before rewriting Qs: row `warp` is written and read by this warp only
    if (mine)
      for (int d = lane; d < hd; d += 32) Qs[warp][d] = q[(int64_t)h * hd + d];
    FlashRow st;
    st.m = -INFINITY;
    st.l = 0.0f;
    for (int c = 0; c < kMaxChunks; ++c) st.acc[c] = 0.0f;
    for (int k0 = begin; k0 < end; k0 += kFlashK) {
      const int n = min(kFlashK, end - k0);
      __syncthreads();  // the previous tile is no longer being read
      for (int i = threadIdx.x; i < n * hd; i += blockDim.x) {
        const int j = i / hd, d = i % hd;
        const int64_t gi = (int64_t)(k0 + j) * kv_stride + (int64_t)kvh * hd + d;
        Ks[j * (hd + 1) + d] = to_f32(k[gi]);
        Vs[j * (hd + 1) + d] = to_f32(v[gi]);
      }
      __syncthreads();  // the tile (and Qs) is complete
      if (mine) flash_tile(st, Qs[warp], Ks, Vs, Ps[warp], n, k0, end, hd, scale);
    }
    if (mine) {
      float* o = partial + ((int64_t)h * splits + split) * hd;
      for (int c = 0; c < kMaxChunks; ++c) {
        const int d = lane + 32 * c;
        if (d < hd) o[d] = st.acc[c];
      }
      if (lane == 0) {
        ml[((int64_t)h * splits + split) * 2] = st.m;
        ml[((int64_t)h * splits + split) * 2 + 1] = st.l;
      }
    }
  }
}

// out (H, hd) = Σ_s e^(m_s − M) acc_s / Σ_s e^(m_s − M) l_s. Grid: H; one thread per dimension.
__global__ void decode_combine_kernel(const float* __restrict__ partial, const float* __restrict__ ml,
                                      float* __restrict__ out, int splits, int hd) {
  const int h = blockIdx.x;
  float M = -INFINITY;
  for (int s = 0; s < splits; ++s) M = fmaxf(M, ml[((int64_t)h * splits + s) * 2]);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float num = 0.0f, den = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float m = ml[((int64_t)h * splits + s) * 2];
      if (m == -INFINITY) continue;  // an empty split
      const float w = expf(m - M);
      num += w * partial[((int64_t)h * splits + s) * hd + d];
      den += w * ml[((int64_t)h * splits + s) * 2 + 1];
    }
    out[(int64_t)h * hd + d] = num / den;
  }
}

// ---- sampling --------------------------------------------------------------------------------------
// The k largest of x(n), in descending order (ties: the lower index first), by k block-wide argmax
// passes each excluding what came before — (value, index) pairs compared lexicographically, so no
// marks are needed. k = 1 is greedy's argmax. One block of kRowThreads; k ≤ a few hundred.
__device__ __forceinline__ bool before(float va, int ia, float vb, int ib) { return va > vb || (va == vb && ia < ib); }

__global__ void __launch_bounds__(kRowThreads)
    topk_kernel(const float* __restrict__ x, int n, int k, int32_t* __restrict__ idx, float* __restrict__ val) {
  __shared__ float sv[kRowThreads / 32];
  __shared__ int si[kRowThreads / 32];
  float pv = INFINITY;  // the previous pick: take only what comes after it in the order
  int pi = -1;
  for (int r = 0; r < k; ++r) {
    float bv = -INFINITY;
    int bi = -1;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const float xi = x[i] != x[i] ? -INFINITY : x[i];  // NaN ranks last
      if (before(pv, pi, xi, i) && (bi < 0 || before(xi, i, bv, bi))) {
        bv = xi;
        bi = i;
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (oi >= 0 && (bi < 0 || before(ov, oi, bv, bi))) {
        bv = ov;
        bi = oi;
      }
    }
    if (threadIdx.x % 32 == 0) {
      sv[threadIdx.x / 32] = bv;
      si[threadIdx.x / 32] = bi;
    }
    __syncthreads();  // every warp's best is in sv / si
    bv = -INFINITY;
    bi = -1;
    for (int w = 0; w < (int)(blockDim.x / 32); ++w)
      if (si[w] >= 0 && (bi < 0 || before(sv[w], si[w], bv, bi))) {
        bv = sv[w];
        bi = si[w];
      }
    __syncthreads();  // sv / si are read by all before the next pass writes them
    if (threadIdx.x == 0) {
      idx[r] = bi;
      val[r] = bv;
    }
    pv = bv;
    pi = bi;
  }
}

// ---- launchers ------------------------------------------------------------------------------------
inline unsigned grid_for(int64_t n, int threads) {
  const int64_t g = (n + threads - 1) / threads;
  return (unsigned)(g < 1 ? 1 : g > 65535 ? 65535 : g);
}

inline void rmsnorm_launch(const float* x, const float* w, float* out, int T, int D, float eps, medllava_stream_t s) {
  if (T > 0) MEDLLAVA_LAUNCH(rmsnorm_kernel, dim3((unsigned)T), dim3(kRowThreads), 0, s, x, w, out, D, eps);
}
inline void layernorm_launch(const float* x, const float* w, const float* b, float* out, int T, int D, float eps,
                             medllava_stream_t s) {
  if (T > 0) MEDLLAVA_LAUNCH(layernorm_kernel, dim3((unsigned)T), dim3(kRowThreads), 0, s, x, w, b, out, D, eps);
}
inline void rope_launch(float* x, int T, int heads, int hd, int pos0, float theta, bool adjacent, medllava_stream_t s) {
  const int64_t n = (int64_t)T * heads * (hd / 2);
  if (n > 0) MEDLLAVA_LAUNCH(rope_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, x, T, heads, hd, pos0, theta, (int)adjacent);
}
inline void silu_mul_launch(const float* gate, const float* up, float* out, int64_t n, medllava_stream_t s) {
  if (n > 0) MEDLLAVA_LAUNCH(silu_mul_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, gate, up, out, n);
}
inline void activation_launch(const float* x, float* out, int64_t n, Activation act, medllava_stream_t s) {
  if (n > 0) MEDLLAVA_LAUNCH(activation_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, x, out, n, (int)act);
}
inline void residual_launch(float* h, const float* a, const float* gamma, float scale, int64_t n, int D, medllava_stream_t s) {
  if (n > 0) MEDLLAVA_LAUNCH(residual_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, h, a, gamma, scale, n, D);
}
inline void embed_launch(const void* table, DType type, const int32_t* ids, float* out, int T, int D, medllava_stream_t s) {
  if (T > 0)
    MEDLLAVA_LAUNCH(embed_kernel, dim3((unsigned)T), dim3(kRowThreads), 0, s, static_cast<const uint8_t*>(table), (int)type, ids,
                    out, D);
}
inline void kv_append_launch(const float* src, uint16_t* cache, int64_t pos, int T, int width, medllava_stream_t s) {
  const int64_t n = (int64_t)T * width;
  if (n > 0) MEDLLAVA_LAUNCH(kv_append_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, src, cache, pos, n, width);
}

// Prefill / ViT attention. KV = float (k, v: (n_kv, KVH·hd) f32) or uint16_t (the f16 cache).
template <class KV>
void flash_attention_launch(const float* q, const KV* k, const KV* v, float* out, int T, int H, int KVH, int hd, int n_kv,
                            int n_past, bool causal, medllava_stream_t s) {
  if (T <= 0) return;
  auto kernel = flash_attention_kernel<KV>;
  const dim3 grid((unsigned)((T + kFlashQ - 1) / kFlashQ), (unsigned)H);
  MEDLLAVA_LAUNCH(kernel, grid, dim3(32 * kFlashWarps), 0, s, q, k, v, out, T, H, KVH, hd, n_kv, KVH * hd, n_past, (int)causal);
}

// Decode attention over n_kv cached positions: `partial` holds H·splits·hd floats, `ml` H·splits·2.
inline int decode_splits(int n_kv) {
  const int s = (n_kv + 255) / 256;  // ~256 positions per block
  return s < 1 ? 1 : s > 64 ? 64 : s;
}
template <class KV>
void attention_decode_launch(const float* q, const KV* k, const KV* v, float* out, float* partial, float* ml, int H, int KVH,
                             int hd, int n_kv, int splits, medllava_stream_t s) {
  if (n_kv <= 0) return;
  const int chunk = (n_kv + splits - 1) / splits;
  auto kernel = attention_decode_kernel<KV>;
  MEDLLAVA_LAUNCH(kernel, dim3((unsigned)KVH, (unsigned)splits), dim3(32 * kFlashWarps), 0, s, q, k, v, partial, ml, H, KVH, hd,
                  n_kv, KVH * hd, chunk);
  MEDLLAVA_LAUNCH(decode_combine_kernel, dim3((unsigned)H), dim3(128), 0, s, partial, ml, out, splits, hd);
}

inline void topk_launch(const float* x, int n, int k, int32_t* idx, float* val, medllava_stream_t s) {
  if (k > 0) MEDLLAVA_LAUNCH(topk_kernel, dim3(1), dim3(kRowThreads), 0, s, x, n, k, idx, val);
}

}  // namespace cuda
}  // namespace medllava
