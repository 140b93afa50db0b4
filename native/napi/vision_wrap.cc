#include "vision_wrap.h"

#include "../cuda/backend.h"
#include "image_wrap.h"
#include "js_error.h"
#include "params_wrap.h"
#include "native_object.h"
#include "vision_args.h"

namespace medllava {
namespace napi {

Napi::Function VisionWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeVision",
                     {StaticMethod<&VisionWrap::Load>("load"), InstanceMethod<&VisionWrap::Encode>("encode"),
                      InstanceMethod<&VisionWrap::EncodeImage>("encodeImage"),
                      InstanceMethod<&VisionWrap::Dispose>("dispose"),
                      InstanceMethod<&VisionWrap::Parameters>("parameters"), InstanceMethod<&VisionWrap::SetTrainable>("setTrainable"),
                      InstanceMethod<&VisionWrap::ReadParameter>("readParameter"), InstanceMethod<&VisionWrap::WriteParameter>("writeParameter"), InstanceAccessor<&VisionWrap::GetTokens>("tokens")});
}

VisionWrap::VisionWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<VisionWrap>(info) {
  vision_ = unwrap_external<Vision>(info, "NativeVision is created with NativeVision.load(config, tensors)");
}

// NativeVision.load(config, tensors) -> Promise<NativeVision>
Napi::Value VisionWrap::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsObject()) throw_js(env, ErrorCode::Argument, "NativeVision.load(config, tensors)");
    Napi::Object c = info[0].As<Napi::Object>(), t = info[1].As<Napi::Object>();
    VisionConfig cfg;
    VisionTensorNames n;
    parse_vision_args(env, c, t, cfg, n);
    const std::string device = c.Get("device").IsString() ? c.Get("device").As<Napi::String>().Utf8Value() : "cpu";
    if (device != "cpu" && device != "cuda") throw_js(env, ErrorCode::Argument, "config.device must be 'cpu' or 'cuda'");
    const int device_index = c.Has("deviceIndex") && !c.Get("deviceIndex").IsUndefined()
                                 ? (int)get_int(env, c.Get("deviceIndex"), "config.deviceIndex", 0, 1023)
                                 : 0;
    return load_async<Vision>(env, info.This().As<Napi::Function>(), [=]() -> std::shared_ptr<const Vision> {
      auto v = std::make_shared<Vision>(cfg, n);
      if (device == "cuda") v->attach_device(cuda_backend::load_vision(*v, device_index));
      return v;
    });
  });
}

// The pixels argument of encode / encodeImage, copied (the worker reads the copy: JS may detach or
// transfer the buffer while it runs); E_ARGUMENT once the tower is disposed.
std::shared_ptr<std::vector<float>> VisionWrap::pixels(const Napi::CallbackInfo& info, const char* method) {
  Napi::Env env = info.Env();
  if (!vision_) throw_js(env, ErrorCode::Argument, "this vision tower has been disposed");
  const int64_t S = vision_->config().image_size;
  return copy_typed<float>(env, info.Length() ? info[0] : env.Undefined(), napi_float32_array,
                           std::string(method) + "(pixels): pixels (3 × " + std::to_string(S) + " × " + std::to_string(S) + ")", 3 * S * S);
}

// encode(pixels: Float32Array of 3·S·S) -> Promise<Float32Array (tokens × outDim)>
Napi::Value VisionWrap::Encode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    auto px = pixels(info, "encode");
    Napi::Float32Array out = Napi::Float32Array::New(env, (size_t)(vision_->tokens() * vision_->config().out_dim));
    auto pin = std::make_shared<Napi::ObjectReference>(Napi::Persistent(out.As<Napi::Object>()));
    auto v = vision_;
    float* o = out.Data();
    return PromiseWorker::Start(env, [=] { v->encode(px->data(), o); }, [pin](Napi::Env) { return pin->Value(); });
  });
}

// encodeImage(pixels) -> Promise<NativeImage>: as encode, the rows kept native (eval takes them by reference)
Napi::Value VisionWrap::EncodeImage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    auto px = pixels(info, "encodeImage");
    auto rows = std::make_shared<ImageRows>();
    auto v = vision_;
    return PromiseWorker::Start(
        env,
        [=] {
          rows->rows = v->tokens(), rows->width = v->config().out_dim;
          rows->data.resize((size_t)(rows->rows * rows->width));
          v->encode(px->data(), rows->data.data());
        },
        [rows](Napi::Env e) { return ImageWrap::make(e, rows); });
  });
}

Napi::Value VisionWrap::GetTokens(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), vision_ ? (double)vision_->tokens() : 0);
}

Napi::Value VisionWrap::Dispose(const Napi::CallbackInfo& info) {
  vision_.reset();
  return info.Env().Undefined();
}

// the parameter table: parameters(), setTrainable(names, on?), readParameter(name), writeParameter(name, values, offset?)
#define MEDLLAVA_PARAMS_METHOD(Method, body)                                                              \
  Napi::Value VisionWrap::Method(const Napi::CallbackInfo& info) {                                             \
    Napi::Env env = info.Env();                                                                          \
    return guard(env, [&]() -> Napi::Value {                                                             \
      if (!vision_) throw_js(env, ErrorCode::Argument, "this NativeVision has been disposed");                       \
      return body;                                                                                       \
    });                                                                                                  \
  }
MEDLLAVA_PARAMS_METHOD(Parameters, params_list(env, vision_))
MEDLLAVA_PARAMS_METHOD(SetTrainable, params_set_trainable(info, vision_))
MEDLLAVA_PARAMS_METHOD(ReadParameter, params_read(info, vision_))
MEDLLAVA_PARAMS_METHOD(WriteParameter, params_write(info, vision_))
#undef MEDLLAVA_PARAMS_METHOD

}  // namespace napi
}  // namespace medllava
