// LinearWrap <-> lib/native.ts `NativeLinear`: a (N, K) weight (+ bias) and its matmul.
// The weight and bias stay in the caller's TypedArrays (zero-copy, pinned by references).
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

  Napi::Reference<Napi::TypedArray> weight_;
  Napi::Reference<Napi::Float32Array> bias_;
  PackedWeights x16_;  // GGML blocks repacked for AVX-512 VNNI, as the model does
  DType dtype_ = DType::F32;
  int64_t out_features_ = 0, in_features_ = 0;
  int inflight_ = 0;
  bool disposed_ = false;
};

}  // namespace napi
}  // namespace medllava
