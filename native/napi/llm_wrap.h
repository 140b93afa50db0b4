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
  std::shared_ptr<const Llm> llm_;
};

class LlmContextWrap : public Napi::ObjectWrap<LlmContextWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit LlmContextWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value Eval(const Napi::CallbackInfo& info);
  Napi::Value Reset(const Napi::CallbackInfo& info);
  Napi::Value Truncate(const Napi::CallbackInfo& info);
  Napi::Value GetNPast(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  std::shared_ptr<const Llm> llm_;
  std::shared_ptr<Llm::Cache> cache_;
  bool busy_ = false;
};

}  // namespace napi
}  // namespace medllava
