// cpuOp(name, args): one transformer op of native/ops/ops.h on the CPU, synchronously, for the per-op
// tests in test/kernels/ (their float64 references, and the CUDA kernels under the SIMT emulator,
// which the test addon runs through the same argument shapes). Internal: not part of the public API.
#pragma once
#include <napi.h>

namespace medllava {
namespace napi {

void register_ops(Napi::Env env, Napi::Object exports);

}  // namespace napi
}  // namespace medllava
