// TrainerWrap <-> lib/native.ts `NativeTrainer`: one training engine (native/train/trainer.h) over a
// loaded NativeLlm and, optionally, its NativeVision. Every call runs off the JS thread; one at a time.
#pragma once
#include <napi.h>

#include <atomic>
#include <memory>

#include "../train/trainer.h"

namespace medllava {
namespace napi {

class TrainerWrap : public Napi::ObjectWrap<TrainerWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit TrainerWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value Accumulate(const Napi::CallbackInfo& info);
  Napi::Value ZeroGrads(const Napi::CallbackInfo& info);
  Napi::Value GradNorm(const Napi::CallbackInfo& info);
  Napi::Value Update(const Napi::CallbackInfo& info);
  Napi::Value State(const Napi::CallbackInfo& info);
  Napi::Value SetState(const Napi::CallbackInfo& info);
  Napi::Value DropoutStep(const Napi::CallbackInfo& info);
  Napi::Value AllreduceGrads(const Napi::CallbackInfo& info);
  Napi::Value ShardOptimizer(const Napi::CallbackInfo& info);
  Napi::Value BroadcastParams(const Napi::CallbackInfo& info);
  Napi::Value OptimizerBytes(const Napi::CallbackInfo& info);
  Napi::Value SetCheckpoint(const Napi::CallbackInfo& info);
  Napi::Value SetLoraDropout(const Napi::CallbackInfo& info);
  Napi::Value SetLossRows(const Napi::CallbackInfo& info);
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Trainer& trainer(Napi::Env env);  // E_ARGUMENT when disposed or busy
  template <class Work, class Result>
  Napi::Value run(Napi::Env env, Work work, Result result);
  std::shared_ptr<Trainer> trainer_;
  std::shared_ptr<const Llm> llm_;
  std::shared_ptr<const Vision> vision_;
  bool busy_ = false;
  int device_index_ = 0;  // the CUDA device of a device engine
};

}  // namespace napi
}  // namespace medllava
