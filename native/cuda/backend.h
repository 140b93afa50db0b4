// The CUDA backend as the rest of the core sees it: plain C++, compiled in every build. With CUDA
// compiled in, backend.cu implements it; otherwise backend_none.cc says why there is none.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../ops/ops.h"

namespace medllava {
namespace cuda_backend {

struct DeviceInfo {
  std::string name;
  uint64_t memory_bytes = 0;
  std::string compute_capability;  // "8.6"
};

struct Info {
  bool compiled = false;
  bool available = false;
  std::string reason;  // why not available
  std::vector<DeviceInfo> devices;
};

// Queries the driver once (cudaGetDeviceCount) unless disabled; cached afterwards.
Info info();
// Never touch CUDA in this process again (lib/native.ts calls this when the probe child failed).
void disable(const std::string& reason);
// out = act(a · wᵀ + bias) on device 0; all pointers are host memory. E_CUDA when unavailable.
void matmul(const MatmulArgs& args);

}  // namespace cuda_backend
}  // namespace medllava
