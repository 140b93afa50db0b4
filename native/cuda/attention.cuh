// Attention on CUDA (CPU twins: native/cpu/attention.cc): flash attention (ViT, and causal prefill
// over the f16 cache, GQA), split-KV decode attention + combine, and the flash-style backward of the
// f32 training attentions. defines: kMaxHd, flash_attention_kernel, attention_decode_kernel,
// decode_combine_kernel, flash_attention_launch, decode_splits, attention_decode_launch, kBwdTile,
// attention_backward_dot_kernel, attention_backward_dkv_kernel, attention_backward_dq_kernel,
// attention_backward_launch.
#pragma once
#include <cstdint>

#include "compat.cuh"
#include "dtype.cuh"   // defines: load_element, half_bits_f32
#include "reduce.cuh"  // defines: warp_sum, warp_max, kRowThreads, grid_for

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

// ---- backward (FlashAttention-2 style, deterministic: no atomics, no T×T matrix in global memory)
// The probabilities are recomputed tile by tile from q, k and the forward's lse (H, T):
//   P = exp(q·k·scale − lse), dP = dout·v, dS = P ⊙ (dP − D) with D_t = Σ dout_t ⊙ out_t,
//   dv += Pᵀ·dout and dk += dSᵀ·q·scale (a block per tile of keys: attention_backward_dkv_kernel),
//   dq += dS·k·scale (a block per tile of queries: attention_backward_dq_kernel).
// Tiles of kBwdTile queries × kBwdTile keys; one thread per (query, key) score, then kBwdLanes
// threads per row accumulating its dims lane + kBwdLanes·c (hd ≤ kMaxHd). Each output element is
// summed by one thread in a fixed order (heads of the group, tiles, rows in turn).
constexpr int kBwdTile = 16, kBwdThreads = kBwdTile * kBwdTile, kBwdLanes = kBwdThreads / kBwdTile, kBwdChunks = kMaxHd / kBwdLanes;
constexpr int kBwdLd = kMaxHd + 1;  // the shared rows' stride (padded: no bank conflicts across rows)
static_assert(kMaxHd % kBwdLanes == 0, "a row's dims split evenly over its lanes");

// Dt(H, T) = Σ_d dout ⊙ out of each query row: one warp per row (row r = t·H + h of out / dout)
__global__ void __launch_bounds__(kRowThreads)
    attention_backward_dot_kernel(const float* __restrict__ out, const float* __restrict__ dout, float* __restrict__ Dt, int T, int H,
                                  int hd) {
  const int warps = blockDim.x / 32, lane = threadIdx.x % 32;
  const int64_t rows = (int64_t)T * H;
  // r is the same for every lane of a warp: warp_sum sees the whole warp
  for (int64_t r = (int64_t)blockIdx.x * warps + threadIdx.x / 32; r < rows; r += (int64_t)gridDim.x * warps) {
    float acc = 0.0f;
    for (int d = lane; d < hd; d += 32) acc += dout[r * hd + d] * out[r * hd + d];
    acc = warp_sum(acc);
    if (lane == 0) Dt[(r % H) * T + r / H] = acc;
  }
}

// Rows [r0, r0 + n) of x (rows `stride` floats apart, the head at column `col`) into S; the rows
// from n on are left as they are (never read).
__device__ __forceinline__ void attn_bwd_load(float (*S)[kBwdLd], const float* __restrict__ x, int r0, int n, int64_t stride, int64_t col,
                                              int hd) {
  for (int e = threadIdx.x; e < n * hd; e += blockDim.x) {
    const int r = e / hd, d = e % hd;
    S[r][d] = x[(int64_t)(r0 + r) * stride + col + d];
  }
}

// The score of query i (absolute t0 + i, i < nq) and key j (absolute s0 + j, j < nk) of the tiles in
// shared memory, one per thread (threadIdx.x = i·kBwdTile + j): P → Ps (when given), dS → dSs; both
// 0 where out of range or masked (causal: key after query).
__device__ __forceinline__ void attn_bwd_scores(float (*Qs)[kBwdLd], float (*dOs)[kBwdLd], float (*Ks)[kBwdLd], float (*Vs)[kBwdLd],
                                                const float* Ls, const float* Ds, float (*Ps)[kBwdTile + 1],
                                                float (*dSs)[kBwdTile + 1], int t0, int nq, int s0, int nk, int hd, float scale,
                                                int causal) {
  const int i = threadIdx.x / kBwdTile, j = threadIdx.x % kBwdTile;
  float p = 0.0f, ds = 0.0f;
  if (i < nq && j < nk && (!causal || s0 + j <= t0 + i)) {
    float sc = 0.0f;  // as the forward computes it: the dot, then the scale
    for (int d = 0; d < hd; ++d) sc += Qs[i][d] * Ks[j][d];
    sc *= scale;
    p = expf(sc - Ls[i]);
    float dp = 0.0f;
    for (int d = 0; d < hd; ++d) dp += dOs[i][d] * Vs[j][d];
    ds = p * (dp - Ds[i]);
  }
  if (Ps) Ps[i][j] = p;
  dSs[i][j] = ds;
}

// dk, dv (T, KVH, hd) += …: one block per (tile of keys, KV head), walking the query heads of its
// group and every query tile that sees its keys (from the keys' own tile on, when causal); dk or
// dv null: not written. Grid: (ceil(T / kBwdTile), KVH).
__global__ void __launch_bounds__(kBwdThreads)
    attention_backward_dkv_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                                  const float* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ Dt,
                                  float* __restrict__ dk, float* __restrict__ dv, int T, int H, int KVH, int hd, int causal) {
  __shared__ float Qs[kBwdTile][kBwdLd], dOs[kBwdTile][kBwdLd], Ks[kBwdTile][kBwdLd], Vs[kBwdTile][kBwdLd];
  __shared__ float Ps[kBwdTile][kBwdTile + 1], dSs[kBwdTile][kBwdTile + 1];
  __shared__ float Ls[kBwdTile], Ds[kBwdTile];
  const int kvh = blockIdx.y, group = H / KVH, s0 = blockIdx.x * kBwdTile;
  const int nk = min(kBwdTile, T - s0);
  const int j = threadIdx.x / kBwdLanes, lane = threadIdx.x % kBwdLanes;  // this thread's key and dims
  const float scale = rsqrtf((float)hd);
  const int64_t qd = (int64_t)H * hd, kvd = (int64_t)KVH * hd;
  attn_bwd_load(Ks, k, s0, nk, kvd, (int64_t)kvh * hd, hd);
  attn_bwd_load(Vs, v, s0, nk, kvd, (int64_t)kvh * hd, hd);
  float acc_k[kBwdChunks], acc_v[kBwdChunks];
#pragma unroll
  for (int c = 0; c < kBwdChunks; ++c) acc_k[c] = acc_v[c] = 0.0f;
  const int first = causal ? s0 : 0;  // s0 is a multiple of kBwdTile: the first query tile that sees key s0
  for (int g = 0; g < group; ++g) {
    const int h = kvh * group + g;
    for (int t0 = first; t0 < T; t0 += kBwdTile) {
      const int nq = min(kBwdTile, T - t0);
      __syncthreads();  // the previous query tile is no longer read (the first time: Ks, Vs are complete)
      attn_bwd_load(Qs, q, t0, nq, qd, (int64_t)h * hd, hd);
      attn_bwd_load(dOs, dout, t0, nq, qd, (int64_t)h * hd, hd);
      for (int i = threadIdx.x; i < nq; i += blockDim.x) {
        Ls[i] = lse[(int64_t)h * T + t0 + i];
        Ds[i] = Dt[(int64_t)h * T + t0 + i];
      }
      __syncthreads();  // the query tile is complete
      attn_bwd_scores(Qs, dOs, Ks, Vs, Ls, Ds, Ps, dSs, t0, nq, s0, nk, hd, scale, causal);
      __syncthreads();  // every P, dS of the tile pair is in Ps, dSs
#pragma unroll
      for (int c = 0; c < kBwdChunks; ++c) {
        const int d = lane + kBwdLanes * c;
        if (d >= hd) continue;
        float ak = acc_k[c], av = acc_v[c];
        for (int i = 0; i < nq; ++i) {
          av += Ps[i][j] * dOs[i][d];
          ak += dSs[i][j] * Qs[i][d];
        }
        acc_k[c] = ak;
        acc_v[c] = av;
      }
    }
  }
  if (j >= nk) return;
  const int64_t row = ((int64_t)(s0 + j) * KVH + kvh) * hd;
#pragma unroll
  for (int c = 0; c < kBwdChunks; ++c) {
    const int d = lane + kBwdLanes * c;
    if (d >= hd) continue;
    if (dk) dk[row + d] += acc_k[c] * scale;
    if (dv) dv[row + d] += acc_v[c];
  }
}

// dq (T, H, hd) += …: one block per (tile of queries, head), walking the key tiles its queries see.
// Grid: (ceil(T / kBwdTile), H).
__global__ void __launch_bounds__(kBwdThreads)
    attention_backward_dq_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                                 const float* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ Dt,
                                 float* __restrict__ dq, int T, int H, int KVH, int hd, int causal) {
  __shared__ float Qs[kBwdTile][kBwdLd], dOs[kBwdTile][kBwdLd], Ks[kBwdTile][kBwdLd], Vs[kBwdTile][kBwdLd];
  __shared__ float dSs[kBwdTile][kBwdTile + 1];
  __shared__ float Ls[kBwdTile], Ds[kBwdTile];
  const int h = blockIdx.y, kvh = h / (H / KVH), t0 = blockIdx.x * kBwdTile;
  const int nq = min(kBwdTile, T - t0);
  const int i = threadIdx.x / kBwdLanes, lane = threadIdx.x % kBwdLanes;  // this thread's query and dims
  const float scale = rsqrtf((float)hd);
  const int64_t qd = (int64_t)H * hd, kvd = (int64_t)KVH * hd;
  attn_bwd_load(Qs, q, t0, nq, qd, (int64_t)h * hd, hd);
  attn_bwd_load(dOs, dout, t0, nq, qd, (int64_t)h * hd, hd);
  for (int r = threadIdx.x; r < nq; r += blockDim.x) {
    Ls[r] = lse[(int64_t)h * T + t0 + r];
    Ds[r] = Dt[(int64_t)h * T + t0 + r];
  }
  float acc[kBwdChunks];
#pragma unroll
  for (int c = 0; c < kBwdChunks; ++c) acc[c] = 0.0f;
  const int end = causal ? t0 + nq : T;  // the keys the last query of the tile sees
  for (int s0 = 0; s0 < end; s0 += kBwdTile) {
    const int nk = min(kBwdTile, end - s0);
    __syncthreads();  // the previous key tile is no longer read (the first time: Qs, dOs, Ls, Ds are complete)
    attn_bwd_load(Ks, k, s0, nk, kvd, (int64_t)kvh * hd, hd);
    attn_bwd_load(Vs, v, s0, nk, kvd, (int64_t)kvh * hd, hd);
    __syncthreads();  // the key tile is complete
    attn_bwd_scores(Qs, dOs, Ks, Vs, Ls, Ds, nullptr, dSs, t0, nq, s0, nk, hd, scale, causal);
    __syncthreads();  // every dS of the tile pair is in dSs
#pragma unroll
    for (int c = 0; c < kBwdChunks; ++c) {
      const int d = lane + kBwdLanes * c;
      if (d >= hd) continue;
      float a = acc[c];
      for (int j = 0; j < nk; ++j) a += dSs[i][j] * Ks[j][d];
      acc[c] = a;
    }
  }
  if (i >= nq) return;
  float* o = dq + ((int64_t)(t0 + i) * H + h) * hd;
#pragma unroll
  for (int c = 0; c < kBwdChunks; ++c) {
    const int d = lane + kBwdLanes * c;
    if (d < hd) o[d] += acc[c] * scale;
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

// Backward of the f32 training attentions (attention_backward_cpu): q, out, dout (T, H, hd), k, v
// (T, KVH, hd), lse (H, T) from the forward; accumulates into dq, dk, dv (each null: skipped).
// Dt: H·T floats of device scratch. hd ≤ kMaxHd; KVH divides H.
inline void attention_backward_launch(const float* q, const float* k, const float* v, const float* out, const float* lse, const float* dout,
                                      float* dq, float* dk, float* dv, float* Dt, int T, int H, int KVH, int hd, bool causal,
                                      medllava_stream_t s) {
  if (T <= 0 || H <= 0 || hd <= 0) return;
  MEDLLAVA_LAUNCH(attention_backward_dot_kernel, dim3(grid_for((int64_t)T * H, kRowThreads / 32)), dim3(kRowThreads), 0, s, out, dout, Dt,
                  T, H, hd);
  const unsigned tiles = (unsigned)((T + kBwdTile - 1) / kBwdTile);
  if (dk || dv)
    MEDLLAVA_LAUNCH(attention_backward_dkv_kernel, dim3(tiles, (unsigned)KVH), dim3(kBwdThreads), 0, s, q, k, v, dout, lse, Dt, dk, dv, T,
                    H, KVH, hd, (int)causal);
  if (dq)
    MEDLLAVA_LAUNCH(attention_backward_dq_kernel, dim3(tiles, (unsigned)H), dim3(kBwdThreads), 0, s, q, k, v, dout, lse, Dt, dq, T, H,
                    KVH, hd, (int)causal);
}

}  // namespace cuda
}  // namespace medllava
