// ImageWrap <-> lib/native.ts `NativeImage`: an encoded image's projected rows, kept native. eval and
// evalSample take rows of it by reference (their worker reads them; on CUDA one upload per span), so
// the features never cross to JS unless toArray() asks. defines: ImageRows, ImageWrap.
#pragma once
#include <napi.h>

#include <memory>
#include <vector>

namespace medllava {
namespace napi {

struct ImageRows {
  std::vector<float> data;  // (rows, width)
  int64_t rows = 0, width = 0;
};

class ImageWrap : public Napi::ObjectWrap<ImageWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit ImageWrap(const Napi::CallbackInfo& info);
  ~ImageWrap() override;
  // a NativeImage from JS, or E_ARGUMENT naming `what`
  static std::shared_ptr<const ImageRows> from(Napi::Env env, const Napi::Value& v, const std::string& what);
  // wraps freshly encoded rows (JS thread)
  static Napi::Value make(Napi::Env env, std::shared_ptr<const ImageRows> rows);

 private:
  Napi::Value GetRows(const Napi::CallbackInfo& info);
  Napi::Value GetWidth(const Napi::CallbackInfo& info);
  Napi::Value ToArray(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  std::shared_ptr<const ImageRows> rows_;
};

}  // namespace napi
}  // namespace medllava
