// Attention on CUDA (CPU twins: native/cpu/attention.cc): flash attention (ViT, and causal prefill
// over the f16 cache, GQA) and split-KV decode attention + combine. defines: kMaxHd,
// flash_attention_kernel, attention_decode_kernel, decode_combine_kernel, flash_attention_launch,
// decode_splits, attention_decode_launch.
#pragma once
#include <cstdint>

#include "compat.cuh"
#include "dtype.cuh"   // defines: load_element, half_bits_f32
#include "reduce.cuh"  // defines: warp_sum, warp_max

namespace medllava {
namespace cuda {

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
// [0, n_past + t] when causal, all n_kv otherwise. lse (H, T), when given: each query row's
// log Σ exp(q·k / √hd) over the keys it sees (what backward needs). Grid: (ceil(T / kFlashQ), H).
template <class KV>
__global__ void __launch_bounds__(32 * kFlashWarps)
    flash_attention_kernel(const float* __restrict__ q, const KV* __restrict__ k, const KV* __restrict__ v,
                           float* __restrict__ out, int T, int H, int KVH, int hd, int n_kv, int kv_stride, int n_past,
                           int causal, float* __restrict__ lse) {
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
    if (lse && lane == 0) lse[(int64_t)h * T + t0 + row] = st[r].m + logf(st[r].l);
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

// ---- launchers
// Prefill / ViT attention. KV = float (k, v: (n_kv, KVH·hd) f32) or uint16_t (the f16 cache).
template <class KV>
void flash_attention_launch(const float* q, const KV* k, const KV* v, float* out, int T, int H, int KVH, int hd, int n_kv,
                            int n_past, bool causal, medllava_stream_t s, float* lse = nullptr) {
  if (T <= 0) return;
  auto kernel = flash_attention_kernel<KV>;
  const dim3 grid((unsigned)((T + kFlashQ - 1) / kFlashQ), (unsigned)H);
  MEDLLAVA_LAUNCH(kernel, grid, dim3(32 * kFlashWarps), 0, s, q, k, v, out, T, H, KVH, hd, n_kv, KVH * hd, n_past, (int)causal, lse);
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

}  // namespace cuda
}  // namespace medllava
