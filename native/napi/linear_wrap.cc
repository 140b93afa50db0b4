#include "linear_wrap.h"

#include <memory>

#include "../cuda/backend.h"
#include "js_error.h"

namespace medllava {
namespace napi {

Napi::Function LinearWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeLinear",
                     {InstanceMethod<&LinearWrap::Forward>("forward"), InstanceMethod<&LinearWrap::Dispose>("dispose"),
                      InstanceAccessor<&LinearWrap::GetDisposed>("disposed")});
}

// new NativeLinear(weight: Float32Array | Uint16Array, dtype, outFeatures, inFeatures, bias: Float32Array | null)
LinearWrap::LinearWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LinearWrap>(info) {
  guard(info.Env(), [&] { Construct(info); });
}

void LinearWrap::Construct(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5) throw_js(env, ErrorCode::Argument, "NativeLinear(weight, dtype, outFeatures, inFeatures, bias)");
  if (!info[1].IsString()) throw_js(env, ErrorCode::Argument, "dtype must be a string, got " + js_type_name(info[1]));
  dtype_ = parse_dtype(info[1].As<Napi::String>().Utf8Value());
  out_features_ = get_int(env, info[2], "outFeatures", 1, (int64_t)1 << 31);
  in_features_ = get_int(env, info[3], "inFeatures", 1, (int64_t)1 << 31);
  const Napi::Value w = info[0];
  const napi_typedarray_type want = dtype_ == DType::F32 ? napi_float32_array
                                    : dtype_is_block(dtype_) ? napi_uint8_array : napi_uint16_array;
  const char* want_name = dtype_ == DType::F32 ? "Float32Array"
                          : dtype_is_block(dtype_) ? "Uint8Array (raw GGML blocks)" : "Uint16Array (raw 16-bit values)";
  if (!w.IsTypedArray() || w.As<Napi::TypedArray>().TypedArrayType() != want)
    throw_js(env, ErrorCode::Argument,
             std::string("weight for dtype ") + dtype_name(dtype_) + " must be a " + want_name + ", got " + js_type_name(w));
  if (dtype_is_block(dtype_) && in_features_ % dtype_block_elems(dtype_))
    throw_js(env, ErrorCode::Shape, std::string(dtype_name(dtype_)) + " rows must be a multiple of " +
                                        std::to_string(dtype_block_elems(dtype_)) + " long");
  const Napi::TypedArray wa = w.As<Napi::TypedArray>();
  if (wa.ByteLength() != dtype_bytes(dtype_, out_features_ * in_features_))
    throw_js(env, ErrorCode::Shape,
             "weight has " + std::to_string(wa.ByteLength()) + " bytes; outFeatures × inFeatures of " + dtype_name(dtype_) +
                 " need " + std::to_string(dtype_bytes(dtype_, out_features_ * in_features_)));
  weight_ = Napi::Persistent(wa);
  x16_ = repack_x16(static_cast<const uint8_t*>(wa.ArrayBuffer().Data()) + wa.ByteOffset(), dtype_, out_features_, in_features_);
  if (!info[4].IsNull() && !info[4].IsUndefined()) {
    if (!info[4].IsTypedArray() || info[4].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw_js(env, ErrorCode::Argument, "bias must be a Float32Array or null, got " + js_type_name(info[4]));
    Napi::Float32Array b = info[4].As<Napi::Float32Array>();
    if ((int64_t)b.ElementLength() != out_features_)
      throw_js(env, ErrorCode::Shape,
               "bias has " + std::to_string(b.ElementLength()) + " elements; expected outFeatures = " +
                   std::to_string(out_features_));
    bias_ = Napi::Persistent(b);
  }
}

Napi::Value LinearWrap::GetDisposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), disposed_); }

void LinearWrap::Release() {
  weight_.Reset();
  bias_.Reset();
}

Napi::Value LinearWrap::Dispose(const Napi::CallbackInfo& info) {
  disposed_ = true;
  if (inflight_ == 0) Release();  // otherwise the last in-flight forward releases
  return info.Env().Undefined();
}

// forward(input: Float32Array, rows, { activation: 'none'|'gelu'|'quick_gelu', device: 'cpu'|'cuda' })
Napi::Value LinearWrap::Forward(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] { return DoForward(info); });
}

Napi::Value LinearWrap::DoForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (disposed_) throw_js(env, ErrorCode::Argument, "this Linear has been disposed; create a new one");
  if (info.Length() < 3 || !info[2].IsObject()) throw_js(env, ErrorCode::Argument, "forward(input, rows, options)");
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw_js(env, ErrorCode::Argument, "input must be a Float32Array, got " + js_type_name(info[0]));
  Napi::Float32Array input = info[0].As<Napi::Float32Array>();
  const int64_t rows = get_int(env, info[1], "rows", 0, (int64_t)1 << 31);
  if ((int64_t)input.ElementLength() != rows * in_features_)
    throw_js(env, ErrorCode::Shape,
             "input has " + std::to_string(input.ElementLength()) + " elements; rows × inFeatures = " +
                 std::to_string(rows) + " × " + std::to_string(in_features_));
  Napi::Object opts = info[2].As<Napi::Object>();
  Activation act = Activation::None;
  const std::string a = opts.Get("activation").IsString() ? opts.Get("activation").As<Napi::String>().Utf8Value() : "none";
  if (a == "gelu") act = Activation::Gelu;
  else if (a == "quick_gelu") act = Activation::QuickGelu;
  else if (a != "none") throw_js(env, ErrorCode::Argument, "activation must be 'none', 'gelu' or 'quick_gelu', got '" + a + "'");
  const std::string device = opts.Get("device").IsString() ? opts.Get("device").As<Napi::String>().Utf8Value() : "cpu";
  if (device != "cpu" && device != "cuda")
    throw_js(env, ErrorCode::Argument, "device must be 'cpu' or 'cuda', got '" + device + "'");
  Napi::TypedArray weight = weight_.Value();
  if (weight.ByteLength() != dtype_bytes(dtype_, out_features_ * in_features_))
    throw_js(env, ErrorCode::Argument, "the weight's ArrayBuffer was detached (transferred?) after construction");

  Napi::Float32Array output = Napi::Float32Array::New(env, (size_t)(rows * out_features_));
  MatmulArgs args;
  args.a = input.Data();
  args.w = static_cast<const uint8_t*>(weight.ArrayBuffer().Data()) + weight.ByteOffset();
  args.w_type = dtype_;
  args.bias = bias_.IsEmpty() ? nullptr : bias_.Value().Data();
  args.out = output.Data();
  args.M = rows;
  args.N = out_features_;
  args.K = in_features_;
  args.act = act;
  args.w_x16 = x16_.get();

  struct Pins {
    Napi::ObjectReference input, output, self;
  };
  auto pins = std::make_shared<Pins>();
  pins->input = Napi::Persistent(input.As<Napi::Object>());
  pins->output = Napi::Persistent(output.As<Napi::Object>());
  pins->self = Napi::Persistent(Value());
  ++inflight_;
  const bool cuda = device == "cuda";
  auto x16 = x16_;  // alive while the worker runs
  return PromiseWorker::Start(
      env, [args, cuda, x16] { cuda ? cuda_backend::matmul(args) : matmul_cpu(args); },
      [pins](Napi::Env) { return pins->output.Value(); },
      [this, pins] {
        if (--inflight_ == 0 && disposed_) Release();
      });
}

}  // namespace napi
}  // namespace medllava
