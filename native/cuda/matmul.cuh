// CUDA matmul kernels: out(M,N) = act(a(M,K) · w(N,K)ᵀ + bias(N)). No host code beyond the
// launch choice, so the SIMT emulator can include this file and run the same kernels.
//
//   matmul_tiled_kernel<TW>  fp32 FMA on 64×64 tiles, any weight type (converted on load)
//   matmul_wmma_kernel<TW>   tensor cores (nvcuda::wmma 16×16×16) for f16/bf16 weights; the f32
//                            activations are rounded to TW when staged in shared memory, products
//                            accumulate in fp32
#pragma once
#include <cstdint>

#include "../core/dtype.h"
#include "../ops/activation.h"
#include "../ops/ops.h"  // defines: GemmArgs
#include "compat.cuh"
#include "dtype.cuh"  // defines: load_element

namespace medllava {
namespace cuda {

template <class T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

// ---- fp32 tiled kernel ---------------------------------------------------------------------------
// 256 threads as 16×16; each computes a 4×4 grid of outputs strided by 16 so that the shared-memory
// reads of a warp hit 16 consecutive words (no bank conflicts). Tiles are stored k-major with a
// +4 pad, so the transposing store from global memory spreads over banks too.
constexpr int kTiledBM = 64, kTiledBN = 64, kTiledBK = 16, kTiledThreads = 256;

// How the tiled kernel reads w(n, k): a plain array of TW, or rows of GGML blocks.
template <class TW>
struct PlainW {
  const TW* w;
  int K;
  __device__ __forceinline__ float operator()(int64_t n, int64_t k) const { return to_f32(w[n * K + k]); }
};
struct BlockW {
  const uint8_t* w;
  int type;
  int64_t row_bytes;
  __device__ __forceinline__ float operator()(int64_t n, int64_t k) const { return load_element(w + n * row_bytes, (DType)type, k); }
};

template <class W>
__global__ void __launch_bounds__(kTiledThreads)
    matmul_tiled_kernel(const float* __restrict__ a, W w, const float* __restrict__ bias, float* __restrict__ out, int M,
                        int N, int K, int act) {
  __shared__ float As[kTiledBK][kTiledBM + 4];  // (BK, BM) slice of a, transposed
  __shared__ float Ws[kTiledBK][kTiledBN + 4];  // (BK, BN) slice of w, transposed
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int m0 = blockIdx.y * kTiledBM, n0 = blockIdx.x * kTiledBN;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < K; k0 += kTiledBK) {
    // 64 rows × 16 k per tile, 4 elements per thread, consecutive threads along k (coalesced)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = ty + 16 * i, k = tx;
      const int gm = m0 + r, gn = n0 + r, gk = k0 + k;
      As[k][r] = (gm < M && gk < K) ? a[(int64_t)gm * K + gk] : 0.0f;
      Ws[k][r] = (gn < N && gk < K) ? w(gn, gk) : 0.0f;
    }
    __syncthreads();  // the tile is complete before anyone reads it
#pragma unroll
    for (int k = 0; k < kTiledBK; ++k) {
      float av[4], wv[4];
      for (int i = 0; i < 4; ++i) av[i] = As[k][ty + 16 * i];
      for (int j = 0; j < 4; ++j) wv[j] = Ws[k][tx + 16 * j];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * wv[j];
    }
    __syncthreads();  // everyone is done reading before the next tile overwrites it
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int gm = m0 + ty + 16 * i;
    if (gm >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int gn = n0 + tx + 16 * j;
      if (gn >= N) continue;
      float v = acc[i][j] + (bias ? bias[gn] : 0.0f);
      out[(int64_t)gm * N + gn] = apply_activation(v, (Activation)act);
    }
  }
}

// ---- tensor-core kernel --------------------------------------------------------------------------
// 128 threads = 4 warps in a 2×2 grid; each warp owns a 32×32 output tile (2×2 wmma fragments).
// Pads: +8 halves keeps ldm a multiple of 8 elements and rows 16-byte aligned while shifting
// banks; the fp32 staging tile uses +4 floats for the same reasons.
constexpr int kWmmaBM = 64, kWmmaBN = 64, kWmmaBK = 32, kWmmaThreads = 128;
constexpr int kWmmaLdAB = kWmmaBK + 8, kWmmaLdC = kWmmaBN + 4;

template <class TW>
__global__ void __launch_bounds__(kWmmaThreads)
    matmul_wmma_kernel(const float* __restrict__ a, const TW* __restrict__ w, const float* __restrict__ bias,
                       float* __restrict__ out, int M, int N, int K, int act) {
  using namespace nvcuda;
  __shared__ __align__(32) TW As[kWmmaBM * kWmmaLdAB];     // (BM, BK) of a, rounded to TW
  __shared__ __align__(32) TW Ws[kWmmaBN * kWmmaLdAB];     // (BN, BK) of w
  __shared__ __align__(32) float Cs[kWmmaBM * kWmmaLdC];   // (BM, BN) accumulators for the epilogue
  const int warp = threadIdx.x / 32;
  const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
  const int m0 = blockIdx.y * kWmmaBM, n0 = blockIdx.x * kWmmaBN;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  for (int k0 = 0; k0 < K; k0 += kWmmaBK) {
    // 64 × 32 elements of each operand, 16 per thread, consecutive threads along k
    for (int e = threadIdx.x; e < kWmmaBM * kWmmaBK; e += kWmmaThreads) {
      const int r = e / kWmmaBK, k = e % kWmmaBK;
      const int gm = m0 + r, gn = n0 + r, gk = k0 + k;
      As[r * kWmmaLdAB + k] = from_f32<TW>((gm < M && gk < K) ? a[(int64_t)gm * K + gk] : 0.0f);
      Ws[r * kWmmaLdAB + k] = (gn < N && gk < K) ? w[(int64_t)gn * K + gk] : from_f32<TW>(0.0f);
    }
    __syncthreads();  // tiles complete before the tensor cores read them
    for (int kk = 0; kk < kWmmaBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, TW, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, TW, wmma::col_major> fb[2];
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], As + (wm + 16 * i) * kWmmaLdAB + kk, kWmmaLdAB);
      // w is (N, K) row-major, i.e. the K × N operand in column-major order
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], Ws + (wn + 16 * j) * kWmmaLdAB + kk, kWmmaLdAB);
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();  // all warps are done with the tiles before they are overwritten
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(Cs + (wm + 16 * i) * kWmmaLdC + wn + 16 * j, acc[i][j], kWmmaLdC, wmma::mem_row_major);
  __syncthreads();  // the epilogue reads accumulators stored by other warps
  for (int e = threadIdx.x; e < kWmmaBM * kWmmaBN; e += kWmmaThreads) {
    const int r = e / kWmmaBN, c = e % kWmmaBN;
    const int gm = m0 + r, gn = n0 + c;
    if (gm < M && gn < N) {
      const float v = Cs[r * kWmmaLdC + c] + (bias ? bias[gn] : 0.0f);
      out[(int64_t)gm * N + gn] = apply_activation(v, (Activation)act);
    }
  }
}

// ---- decode GEMV for block-quantized weights --------------------------------------------------------
// One warp per output column: lanes read consecutive elements of the weight row (coalesced bytes of
// the same blocks), decode them, and dot them with each activation row; a warp sum finishes it.
// Decode is bound by reading the weights once; the few rows of a stay in cache.
constexpr int kGemvWarps = 4;

__global__ void __launch_bounds__(32 * kGemvWarps)
    matmul_q_gemv_kernel(const float* __restrict__ a, const uint8_t* __restrict__ w, int type, const float* __restrict__ bias,
                         float* __restrict__ out, int M, int N, int K, int act) {
  const int n = blockIdx.x * kGemvWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (n >= N) return;  // whole warps leave together
  const uint8_t* row = w + (int64_t)n * dtype_bytes((DType)type, K);
  for (int m = 0; m < M; ++m) {
    float s = 0.0f;
    for (int k = lane; k < K; k += 32) s += load_element(row, (DType)type, k) * a[(int64_t)m * K + k];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) out[(int64_t)m * N + n] = apply_activation(s + (bias ? bias[n] : 0.0f), (Activation)act);
  }
}

// ---- launch choice -------------------------------------------------------------------------------
enum class MatmulKernel { Auto, Tiled, TensorCore };
constexpr int kGemvMaxRows = 8;  // block-quantized weights: up to this many rows take the GEMV

// All pointers are device pointers (host pointers under the emulator).
inline void matmul_launch(const float* a, const void* w, DType wt, const float* bias, float* out, int M, int N,
                          int K, Activation act, MatmulKernel which, medllava_stream_t stream) {
  const bool tensor = (wt == DType::F16 || wt == DType::BF16) && which != MatmulKernel::Tiled;
  if (tensor) {
    const dim3 grid((unsigned)((N + kWmmaBN - 1) / kWmmaBN), (unsigned)((M + kWmmaBM - 1) / kWmmaBM));
    if (wt == DType::F16) {
      auto kernel = matmul_wmma_kernel<__half>;
      MEDLLAVA_LAUNCH(kernel, grid, dim3(kWmmaThreads), 0, stream, a, static_cast<const __half*>(w), bias, out, M, N, K,
                      (int)act);
    } else {
      auto kernel = matmul_wmma_kernel<__nv_bfloat16>;
      MEDLLAVA_LAUNCH(kernel, grid, dim3(kWmmaThreads), 0, stream, a, static_cast<const __nv_bfloat16*>(w), bias, out,
                      M, N, K, (int)act);
    }
    return;
  }
  if (dtype_is_block(wt) && M <= kGemvMaxRows && which != MatmulKernel::Tiled) {
    MEDLLAVA_LAUNCH(matmul_q_gemv_kernel, dim3((unsigned)((N + kGemvWarps - 1) / kGemvWarps)), dim3(32 * kGemvWarps), 0, stream,
                    a, static_cast<const uint8_t*>(w), (int)wt, bias, out, M, N, K, (int)act);
    return;
  }
  const dim3 grid((unsigned)((N + kTiledBN - 1) / kTiledBN), (unsigned)((M + kTiledBM - 1) / kTiledBM));
  switch (wt) {
    case DType::F32: {
      auto kernel = matmul_tiled_kernel<PlainW<float>>;
      MEDLLAVA_LAUNCH(kernel, grid, dim3(kTiledThreads), 0, stream, a, PlainW<float>{static_cast<const float*>(w), K}, bias, out,
                      M, N, K, (int)act);
      break;
    }
    case DType::F16: {
      auto kernel = matmul_tiled_kernel<PlainW<__half>>;
      MEDLLAVA_LAUNCH(kernel, grid, dim3(kTiledThreads), 0, stream, a, PlainW<__half>{static_cast<const __half*>(w), K}, bias,
                      out, M, N, K, (int)act);
      break;
    }
    case DType::BF16: {
      auto kernel = matmul_tiled_kernel<PlainW<__nv_bfloat16>>;
      MEDLLAVA_LAUNCH(kernel, grid, dim3(kTiledThreads), 0, stream, a,
                      PlainW<__nv_bfloat16>{static_cast<const __nv_bfloat16*>(w), K}, bias, out, M, N, K, (int)act);
      break;
    }
    default: {  // GGML blocks (prefill): decoded as the tiles are staged
      auto kernel = matmul_tiled_kernel<BlockW>;
      MEDLLAVA_LAUNCH(kernel, grid, dim3(kTiledThreads), 0, stream, a,
                      BlockW{static_cast<const uint8_t*>(w), (int)wt, (int64_t)dtype_bytes(wt, K)}, bias, out, M, N, K, (int)act);
      break;
    }
  }
}

// ---- the general GEMM (backward's dX = dY·W, dW += dYᵀ·X): packs, matmul_launch, combine ------------
// dst (rows', cols') f32 ← the (rows, cols) block of src (rows ld elements apart, `type`), transposed
// when `trans` (then rows' = cols, cols' = rows)
__global__ void gemm_pack_kernel(const uint8_t* __restrict__ src, int type, int64_t rows, int64_t cols, int64_t ld, int trans,
                                 float* __restrict__ dst) {
  const int64_t n = rows * cols;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    dst[trans ? c * rows + r : i] = load_element(src, (DType)type, r * ld + c);
  }
}
// c(M, N; rows ldc apart) = alpha · t(M, N) + beta · c   (beta = 0: c is not read; alpha = 0: t is not)
__global__ void gemm_combine_kernel(const float* __restrict__ t, float* __restrict__ c, int64_t M, int64_t N, int64_t ldc, float alpha,
                                    float beta) {
  const int64_t n = M * N;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float& o = c[(i / N) * ldc + i % N];
    const float v = alpha == 0.0f ? 0.0f : alpha * t[i];  // alpha = 0: t is not read
    o = beta == 0.0f ? v : v + beta * o;
  }
}

inline unsigned gemm_grid(int64_t n) {
  const int64_t g = (n + 255) / 256;
  return (unsigned)(g < 1 ? 1 : g > 65535 ? 65535 : g);
}
inline bool gemm_packs_a(const GemmArgs& g) { return g.trans_a || g.lda != g.K; }
inline bool gemm_packs_b(const GemmArgs& g) { return !(g.trans_b && g.ldb == g.K); }
inline bool gemm_direct(const GemmArgs& g) { return g.alpha == 1.0f && g.beta == 0.0f && g.ldc == g.N; }
// floats of device scratch gemm_launch needs for `g`
inline int64_t gemm_scratch_floats(const GemmArgs& g) {
  return (gemm_packs_a(g) ? g.M * g.K : 0) + (gemm_packs_b(g) ? g.N * g.K : 0) + (gemm_direct(g) ? 0 : g.M * g.N) + 64;
}
// C = alpha · op(A) · op(B) + beta · C on the device (g's pointers are device pointers; checked by the
// caller with gemm_check), with `scratch` of gemm_scratch_floats(g) floats
inline void gemm_launch(const GemmArgs& g, float* scratch, medllava_stream_t s) {
  if (g.M == 0 || g.N == 0) return;
  if (g.K == 0) {  // C = beta · C
    MEDLLAVA_LAUNCH(gemm_combine_kernel, dim3(gemm_grid(g.M * g.N)), dim3(256), 0, s, g.c, g.c, g.M, g.N, g.ldc, 0.0f, g.beta);
    return;
  }
  float* p = scratch;
  const float* a = g.a;
  if (gemm_packs_a(g)) {
    MEDLLAVA_LAUNCH(gemm_pack_kernel, dim3(gemm_grid(g.M * g.K)), dim3(256), 0, s, reinterpret_cast<const uint8_t*>(g.a), (int)DType::F32,
                    g.trans_a ? g.K : g.M, g.trans_a ? g.M : g.K, g.lda, (int)g.trans_a, p);
    a = p;
    p += g.M * g.K;
  }
  const void* b = g.b;
  DType bt = g.b_type;
  if (gemm_packs_b(g)) {  // B' (N, K): B (N, K) rows copied, or B (K, N) transposed
    MEDLLAVA_LAUNCH(gemm_pack_kernel, dim3(gemm_grid(g.N * g.K)), dim3(256), 0, s, static_cast<const uint8_t*>(g.b), (int)g.b_type,
                    g.trans_b ? g.N : g.K, g.trans_b ? g.K : g.N, g.ldb, (int)!g.trans_b, p);
    b = p;
    bt = DType::F32;
    p += g.N * g.K;
  }
  float* out = gemm_direct(g) ? g.c : p;
  matmul_launch(a, b, bt, nullptr, out, (int)g.M, (int)g.N, (int)g.K, Activation::None, MatmulKernel::Auto, s);
  if (!gemm_direct(g))
    MEDLLAVA_LAUNCH(gemm_combine_kernel, dim3(gemm_grid(g.M * g.N)), dim3(256), 0, s, out, g.c, g.M, g.N, g.ldc, g.alpha, g.beta);
}

}  // namespace cuda
}  // namespace medllava
