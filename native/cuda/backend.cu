// CUDA backend host code: device discovery, memory, and the launchers around native/cuda/*.cuh.
#include <cuda_runtime.h>

#include <mutex>
#include <string>

#include "../core/error.h"
#include "backend.h"
#include "matmul.cuh"  // defines: matmul_tiled_kernel, matmul_wmma_kernel, matmul_launch

namespace medllava {
namespace cuda_backend {

namespace {
std::mutex g_mutex;
bool g_queried = false;
bool g_disabled = false;
Info g_info;

std::string cuda_message(cudaError_t e, const char* call) {
  return std::string(call) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

void check(cudaError_t e, const char* call) {
  if (e == cudaErrorMemoryAllocation) throw Error(ErrorCode::OOM, cuda_message(e, call));
  if (e != cudaSuccess) throw Error(ErrorCode::Cuda, cuda_message(e, call));
}

Info query_locked() {
  Info i;
  i.compiled = true;
  if (g_disabled) {
    i.reason = g_info.reason;
    return i;
  }
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    i.reason = cuda_message(e, "cudaGetDeviceCount");
    cudaGetLastError();  // clear the sticky error
    return i;
  }
  if (count == 0) {
    i.reason = "cudaGetDeviceCount: no CUDA devices";
    return i;
  }
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, d) != cudaSuccess) continue;
    i.devices.push_back({p.name, (uint64_t)p.totalGlobalMem, std::to_string(p.major) + "." + std::to_string(p.minor)});
  }
  i.available = !i.devices.empty();
  if (!i.available) i.reason = "cudaGetDeviceProperties failed for every device";
  return i;
}

struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) {
    if (bytes) check(cudaMalloc(&ptr, bytes), "cudaMalloc");
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
};
}  // namespace

Info info() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_queried) {
    g_info = query_locked();
    g_queried = true;
  }
  return g_info;
}

void disable(const std::string& reason) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_disabled = true;
  g_queried = true;
  g_info = Info{};
  g_info.compiled = true;
  g_info.reason = reason;
}

void matmul(const MatmulArgs& p) {
  if (!info().available) throw Error(ErrorCode::Cuda, "CUDA is not available: " + info().reason);
  if (dtype_is_block(p.w_type))
    throw Error(ErrorCode::Unsupported, std::string("CUDA matmul with ") + dtype_name(p.w_type) + " weights is not implemented yet");
  if (p.M == 0) return;
  if (p.M > INT32_MAX || p.N > INT32_MAX || p.K > INT32_MAX)
    throw Error(ErrorCode::Shape, "matmul: dimensions beyond 2^31 are not supported on CUDA");
  const size_t a_bytes = (size_t)(p.M * p.K) * 4, w_bytes = (size_t)(p.N * p.K) * dtype_size(p.w_type);
  const size_t o_bytes = (size_t)(p.M * p.N) * 4, b_bytes = p.bias ? (size_t)p.N * 4 : 0;
  size_t free_bytes = 0, total_bytes = 0;
  check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  const size_t need = a_bytes + w_bytes + o_bytes + b_bytes;
  if (need > free_bytes)
    throw Error(ErrorCode::OOM, "matmul needs " + std::to_string(need) + " bytes of device memory; " +
                                    std::to_string(free_bytes) + " are free");
  DeviceBuffer a(a_bytes), w(w_bytes), out(o_bytes), bias(b_bytes);
  check(cudaMemcpy(a.ptr, p.a, a_bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  check(cudaMemcpy(w.ptr, p.w, w_bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  if (p.bias) check(cudaMemcpy(bias.ptr, p.bias, b_bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  cuda::matmul_launch(static_cast<const float*>(a.ptr), w.ptr, p.w_type, p.bias ? static_cast<const float*>(bias.ptr) : nullptr,
                      static_cast<float*>(out.ptr), (int)p.M, (int)p.N, (int)p.K, p.act, cuda::MatmulKernel::Auto, nullptr);
  check(cudaGetLastError(), "matmul kernel launch");
  check(cudaDeviceSynchronize(), "matmul kernel");
  check(cudaMemcpy(p.out, out.ptr, o_bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
}

}  // namespace cuda_backend
}  // namespace medllava
