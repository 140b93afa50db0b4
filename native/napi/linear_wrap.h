// LinearWrap <-> lib/native.ts `NativeLinear`: a (N, K) weight (+ bias) and its matmul.
// The weight and bias are copied at construction (JS may detach or transfer its buffers at any time;
// a worker never reads JS-owned memory), so a NativeLinear costs its weight's bytes once more.
#pragma once
#include <napi.h>

#include <memory>
#include <vector>

#include "../ops/ops.h"

namespace medllava {
namespace napi {

class LinearWrap : public Napi::ObjectWrap<LinearWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit LinearWrap(const Napi::CallbackInfo& info);

 private:
  void Construct(const Napi::CallbackInfo& info);
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value DoForward(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value GetDisposed(const Napi::CallbackInfo& info);
  void Release();

  std::shared_ptr<const std::vector<uint8_t>> weight_;  // (N, K) in dtype_
  std::shared_ptr<const std::vector<float>> bias_;      // (N) or null
  PackedWeights x16_;  // GGML blocks repacked for AVX-512 VNNI, as the model does
  DType dtype_ = DType::F32;
  int64_t out_features_ = 0, in_features_ = 0;
  bool disposed_ = false;
};

}  // namespace napi
}  // namespace medllava
