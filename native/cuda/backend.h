// The CUDA backend as the rest of the core sees it: plain C++, compiled in every build. With CUDA
// compiled in, backend.cu implements it; otherwise backend_none.cc says why there is none.
// defines: info, disable, matmul, run_op, load_llm, load_vision, make_trainer, bench_kernels.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../model/llm.h"
#include "../model/vision.h"
#include "../train/trainer.h"
#include "../ops/op_exec.h"  // defines: OpCall
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
// out = act(a · wᵀ + bias) on CUDA device `device`; all pointers are host memory. E_CUDA when
// unavailable, E_ARGUMENT for a device that is not there.
void matmul(const MatmulArgs& args, int device = 0);
// One op call of the test harness (native/ops/op_exec.h) on CUDA device `device`: its buffers copied
// to the device, the op run through CudaOps, the outputs copied back. E_CUDA when CUDA is unavailable.
void run_op(OpCall& call, int device = 0);
// `m`'s forward pass on CUDA device `device` (native/cuda/llm_device.cuh): weights uploaded once in
// their stored type; each sequence its own KV cache, activation arena and stream (concurrent chats);
// every worker that touches it makes the device current first. E_CUDA when CUDA is unavailable,
// E_ARGUMENT for a device that is not there, E_OOM (with the size needed) when the model does not
// fit, E_UNSUPPORTED in a build without CUDA.
std::shared_ptr<LlmDeviceRunner> load_llm(const Llm& m, int device);
// The vision tower + projector on CUDA device `device` (native/cuda/vision_device.cuh); errors as load_llm.
std::shared_ptr<VisionDeviceRunner> load_vision(const Vision& v, int device);
// A training engine whose steps run on CUDA device `device` (native/cuda/train_device.cuh); errors as load_llm.
std::unique_ptr<Trainer> make_trainer(std::shared_ptr<const Llm> llm, std::shared_ptr<const Vision> vision, int device);
// The NCCL gradient reducer of this data-parallel rank (MPI initialised) for CUDA device `device`: libnccl opened at
// run time; the communicator bootstrapped with an MPI broadcast of rank 0's unique id, made once per process. Its
// finish() polls the stream against `timeout_ms` (E_TIMEOUT, the communicator aborted). E_UNSUPPORTED without
// libnccl (or in a build without CUDA).
GradReducer& nccl_reducer(int device, int64_t timeout_ms);

// GPU microbenchmarks (native/cuda/bench.cuh): each kernel at the real shapes of
// bench/kernels/README.md on CUDA device `device`, and the device's peaks measured in the same run.
struct KernelBench {
  std::string kernel, shape;
  double ms = 0, bytes = 0, flops = 0;
};
struct DevicePeaks {
  double bandwidth_gbs = 0, fp32_tflops = 0, tensor_tflops = 0;
};
std::vector<KernelBench> bench_kernels(DevicePeaks& peaks, int device = 0);

}  // namespace cuda_backend
}  // namespace medllava
