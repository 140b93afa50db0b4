// defines: ImageWrap (native/napi/image_wrap.h).
#include "image_wrap.h"

#include <cstring>

#include "addon_data.h"
#include "js_error.h"

namespace medllava {
namespace napi {

Napi::Function ImageWrap::Define(Napi::Env env) {
  Napi::Function f = DefineClass(env, "NativeImage",
                                 {InstanceAccessor<&ImageWrap::GetRows>("rows"), InstanceAccessor<&ImageWrap::GetWidth>("width"),
                                  InstanceMethod<&ImageWrap::ToArray>("toArray"), InstanceMethod<&ImageWrap::Dispose>("dispose")});
  addon_data(env).image = Napi::Persistent(f);
  return f;
}

ImageWrap::ImageWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ImageWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    throw make_error(info.Env(), "E_ARGUMENT", "NativeImage is created by NativeVision.encodeImage(pixels)");
  rows_ = *info[0].As<Napi::External<std::shared_ptr<const ImageRows>>>().Data();
  Napi::MemoryManagement::AdjustExternalMemory(info.Env(), (int64_t)(rows_->data.size() * 4));
}

ImageWrap::~ImageWrap() {
  if (rows_) Napi::MemoryManagement::AdjustExternalMemory(Env(), -(int64_t)(rows_->data.size() * 4));
}

Napi::Value ImageWrap::make(Napi::Env env, std::shared_ptr<const ImageRows> rows) {
  auto ext = Napi::External<std::shared_ptr<const ImageRows>>::New(
      env, new std::shared_ptr<const ImageRows>(std::move(rows)), [](Napi::Env, std::shared_ptr<const ImageRows>* h) { delete h; });
  return addon_data(env).image.Value().New({ext});
}

std::shared_ptr<const ImageRows> ImageWrap::from(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(addon_data(env).image.Value()))
    throw_js(env, ErrorCode::Argument, what + " must be a NativeImage (from NativeVision.encodeImage), got " + js_type_name(v));
  ImageWrap* w = ImageWrap::Unwrap(v.As<Napi::Object>());
  if (!w->rows_) throw_js(env, ErrorCode::Argument, what + " has been disposed");
  return w->rows_;
}

Napi::Value ImageWrap::GetRows(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), rows_ ? (double)rows_->rows : 0);
}
Napi::Value ImageWrap::GetWidth(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), rows_ ? (double)rows_->width : 0);
}

// toArray() -> Float32Array (rows × width): a copy of the features
Napi::Value ImageWrap::ToArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!rows_) throw make_error(env, "E_ARGUMENT", "this image has been disposed");
  Napi::Float32Array a = Napi::Float32Array::New(env, rows_->data.size());
  if (!rows_->data.empty()) std::memcpy(a.Data(), rows_->data.data(), rows_->data.size() * 4);
  return a;
}

// dispose(): lets go of the features (an eval in flight keeps its own reference until it ends)
Napi::Value ImageWrap::Dispose(const Napi::CallbackInfo& info) {
  if (rows_) Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -(int64_t)(rows_->data.size() * 4));
  rows_.reset();
  return info.Env().Undefined();
}

}  // namespace napi
}  // namespace medllava
