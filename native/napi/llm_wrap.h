// LlmWrap <-> lib/native.ts `NativeLlm` (the language model, weights mapped from their files) and
// LlmContextWrap <-> `NativeLlmContext` (one KV cache; one eval at a time).
#pragma once
#include <napi.h>

#include <memory>

#include "../model/llm.h"

namespace medllava {
namespace napi {

class LlmWrap : public Napi::ObjectWrap<LlmWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit LlmWrap(const Napi::CallbackInfo& info);
  std::shared_ptr<const Llm> llm() const { return llm_; }

 private:
  static Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value CreateContext(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  // the parameter table (native/napi/params_wrap.h)
  Napi::Value Parameters(const Napi::CallbackInfo& info);
  Napi::Value SetTrainable(const Napi::CallbackInfo& info);
  Napi::Value ReadParameter(const Napi::CallbackInfo& info);
  Napi::Value WriteParameter(const Napi::CallbackInfo& info);
  Napi::Value AddLora(const Napi::CallbackInfo& info);
  std::shared_ptr<const Llm> llm_;
};

class LlmContextWrap : public Napi::ObjectWrap<LlmContextWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit LlmContextWrap(const Napi::CallbackInfo& info);
  ~LlmContextWrap() override;

 private:
  Napi::Value Eval(const Napi::CallbackInfo& info);
  Napi::Value EvalSample(const Napi::CallbackInfo& info);
  Napi::Value Run(const Napi::CallbackInfo& info, bool sample);  // eval, then (sample) the next token
  Napi::Value Reset(const Napi::CallbackInfo& info);
  Napi::Value Truncate(const Napi::CallbackInfo& info);
  Napi::Value GetNPast(const Napi::CallbackInfo& info);
  Napi::Value GetCapacity(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  void ReportMemory(Napi::Env env);
  std::shared_ptr<const Llm> llm_;
  // allocated (and zeroed) by the first eval's worker, never on the JS thread; capacity 0 until then
  std::shared_ptr<Llm::Cache> cache_;
  int64_t capacity_ = 0;   // positions the cache will hold
  int64_t reported_ = 0;   // bytes reported to V8 as external memory (AdjustExternalMemory)
  bool busy_ = false;
};

}  // namespace napi
}  // namespace medllava
