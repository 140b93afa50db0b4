// VisionWrap <-> lib/native.ts `NativeVision`: the vision tower + projector.
#pragma once
#include <napi.h>

#include <memory>
#include <vector>

#include "../model/vision.h"

namespace medllava {
namespace napi {

class VisionWrap : public Napi::ObjectWrap<VisionWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit VisionWrap(const Napi::CallbackInfo& info);
  std::shared_ptr<const Vision> vision() const { return vision_; }

 private:
  static Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value Encode(const Napi::CallbackInfo& info);
  Napi::Value EncodeImage(const Napi::CallbackInfo& info);
  std::shared_ptr<std::vector<float>> pixels(const Napi::CallbackInfo& info, const char* method);
  Napi::Value GetTokens(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  // the parameter table (native/napi/params_wrap.h)
  Napi::Value Parameters(const Napi::CallbackInfo& info);
  Napi::Value SetTrainable(const Napi::CallbackInfo& info);
  Napi::Value ReadParameter(const Napi::CallbackInfo& info);
  Napi::Value WriteParameter(const Napi::CallbackInfo& info);
  std::shared_ptr<const Vision> vision_;
};

}  // namespace napi
}  // namespace medllava
