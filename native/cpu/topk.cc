// Top-k on the CPU (CUDA twin: native/cuda/topk.cuh). defines: topk_cpu.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "../ops/ops.h"

namespace medllava {

void topk_cpu(const float* x, int64_t n, int64_t k, int32_t* idx, float* val) {
  // NaN ranks as −inf (last, with the −infs, lower index first among equals), as the CUDA kernel does
  auto key = [&](int32_t i) { return std::isnan(x[i]) ? -INFINITY : x[i]; };
  std::vector<int32_t> ids((size_t)n);
  std::iota(ids.begin(), ids.end(), 0);
  k = std::min(k, n);
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
    const float ka = key(a), kb = key(b);
    return ka > kb || (ka == kb && a < b);
  });
  for (int64_t r = 0; r < k; ++r) {
    idx[r] = ids[(size_t)r];
    val[r] = key(ids[(size_t)r]);
  }
}

}  // namespace medllava
