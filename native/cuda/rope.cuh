// RoPE on CUDA (CPU twin: native/cpu/rope.cc), and its backward (the rotation by −angle).
// defines: rope_kernel, rope_launch, rope_backward_launch.
#pragma once
#include <cstdint>

#include "compat.cuh"
#include "reduce.cuh"  // defines: grid_for

namespace medllava {
namespace cuda {

// x(T, heads, hd) rotated in place, one thread per pair. Angles in double, as the CPU's: at position
// 4096 an f32 angle would already be off by ~4e-4 rad. inverse: rotate by −angle (the backward: a
// rotation's transpose), the same angles with the sine negated.
__global__ void rope_kernel(float* x, int T, int heads, int hd, int pos0, float theta, int adjacent, int inverse) {
  const int64_t n = (int64_t)T * heads * (hd / 2);
  for (int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; p < n; p += (int64_t)gridDim.x * blockDim.x) {
    const int i = (int)(p % (hd / 2));
    const int64_t th = p / (hd / 2);
    const int t = (int)(th / heads);
    const double a = (double)(pos0 + t) * pow((double)theta, -2.0 * (double)i / (double)hd);
    const float c = (float)cos(a), sa = (float)sin(a), s = inverse ? -sa : sa;
    float* v = x + th * hd;
    const int i0 = adjacent ? 2 * i : i, i1 = adjacent ? 2 * i + 1 : i + hd / 2;
    const float x0 = v[i0], x1 = v[i1];
    v[i0] = x0 * c - x1 * s;
    v[i1] = x1 * c + x0 * s;
  }
}


// ---- launchers
inline void rope_launch(float* x, int T, int heads, int hd, int pos0, float theta, bool adjacent, medllava_stream_t s) {
  const int64_t n = (int64_t)T * heads * (hd / 2);
  if (n > 0) MEDLLAVA_LAUNCH(rope_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, x, T, heads, hd, pos0, theta, (int)adjacent, 0);
}
// the gradient dx(T, heads, hd) rotated back in place
inline void rope_backward_launch(float* dx, int T, int heads, int hd, int pos0, float theta, bool adjacent, medllava_stream_t s) {
  const int64_t n = (int64_t)T * heads * (hd / 2);
  if (n > 0) MEDLLAVA_LAUNCH(rope_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, dx, T, heads, hd, pos0, theta, (int)adjacent, 1);
}

}  // namespace cuda
}  // namespace medllava
