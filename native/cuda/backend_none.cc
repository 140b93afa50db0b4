// The CUDA backend of a build without CUDA (binding.gyp, MEDLLAVA_CUDA=off, or no nvcc).
#include "backend.h"

#include "../core/error.h"

namespace medllava {
namespace cuda_backend {

Info info() {
  Info i;
  i.reason = "this build of medllava has no CUDA backend (built without nvcc or with MEDLLAVA_CUDA=off)";
  return i;
}

void disable(const std::string&) {}

void run_op(OpCall&, int) { throw Error(ErrorCode::Unsupported, info().reason); }
void matmul(const MatmulArgs&, int) { throw Error(ErrorCode::Unsupported, info().reason); }
std::shared_ptr<LlmDeviceRunner> load_llm(const Llm&, int) { throw Error(ErrorCode::Unsupported, info().reason); }
std::shared_ptr<VisionDeviceRunner> load_vision(const Vision&, int) { throw Error(ErrorCode::Unsupported, info().reason); }
std::unique_ptr<Trainer> make_trainer(std::shared_ptr<const Llm>, std::shared_ptr<const Vision>, int) {
  throw Error(ErrorCode::Unsupported, info().reason);
}
GradReducer& nccl_reducer(int, int64_t) { throw Error(ErrorCode::Unsupported, info().reason); }
std::vector<KernelBench> bench_kernels(DevicePeaks&, int) { throw Error(ErrorCode::Unsupported, info().reason); }

}  // namespace cuda_backend
}  // namespace medllava
