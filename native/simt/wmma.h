// nvcuda::wmma for the SIMT emulator. mma.h is empty without __CUDACC__, so the emulator supplies
// the API itself. CUDA leaves the lane layout of a fragment unspecified, so here every lane's
// fragment holds the whole tile (num_elements = rows × cols): elementwise loops over x[] work
// unchanged, and every load/store/mma is a warp collective that fails if the warp has diverged.
#pragma once
#include <cstddef>

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
template <class Use, int M, int N, int K>
struct shape;
template <int M, int N, int K>
struct shape<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K>
struct shape<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K>
struct shape<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };

inline float to_float(float v) { return v; }
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T>
inline T from_float(float v);
template <>
inline float from_float<float>(float v) { return v; }
template <>
inline __half from_float<__half>(float v) { return __float2half(v); }
template <>
inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

inline void converge(const char* what) {
  (void)what;
  ::simt::detail::warp_collective(::simt::detail::WarpOp::Wmma, 0xffffffffu, 0, 0, 32, __FILE__, __LINE__);
}
}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert((M == 16 && N == 16 && K == 16) || (M == 32 && N == 8 && K == 16) || (M == 8 && N == 32 && K == 16),
                "wmma shapes: 16x16x16, 32x8x16, 8x32x16");
  static constexpr int rows = detail::shape<Use, M, N, K>::rows;
  static constexpr int cols = detail::shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  using element_type = T;
  T x[num_elements];  // logical row-major [rows][cols], whatever Layout says about memory
};

template <class Use, int M, int N, int K, class T, class L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, const T& v) {
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = v;
}

// matrix_a / matrix_b: the memory layout is part of the fragment type.
template <class Use, int M, int N, int K, class T, class L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const T* p, unsigned ldm) {
  static_assert(std::is_same<L, row_major>::value || std::is_same<L, col_major>::value, "layout required");
  detail::converge("load_matrix_sync");
  using F = fragment<Use, M, N, K, T, L>;
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c)
      f.x[r * F::cols + c] = std::is_same<L, row_major>::value ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
}

// accumulator: the memory layout is an argument.
template <int M, int N, int K, class T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T, void>& f, const T* p, unsigned ldm, layout_t layout) {
  detail::converge("load_matrix_sync");
  using F = fragment<accumulator, M, N, K, T, void>;
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c)
      f.x[r * F::cols + c] = layout == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
}

template <int M, int N, int K, class T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T, void>& f, unsigned ldm, layout_t layout) {
  detail::converge("store_matrix_sync");
  using F = fragment<accumulator, M, N, K, T, void>;
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c)
      (layout == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]) = f.x[r * F::cols + c];
}

// d = a · b + c, products of the input type accumulated in fp32 (tensor cores' contract).
template <int M, int N, int K, class TA, class LA, class LB, class TC>
inline void mma_sync(fragment<accumulator, M, N, K, TC, void>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TA, LB>& b, const fragment<accumulator, M, N, K, TC, void>& c) {
  detail::converge("mma_sync");
  float tmp[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float acc = detail::to_float(c.x[i * N + j]);
      for (int k = 0; k < K; ++k) acc += detail::to_float(a.x[i * K + k]) * detail::to_float(b.x[k * N + j]);
      tmp[i * N + j] = acc;
    }
  for (int i = 0; i < M * N; ++i) d.x[i] = detail::from_float<TC>(tmp[i]);
}

}  // namespace wmma
}  // namespace nvcuda
