#include "linear_wrap.h"

#include <memory>
#include <tuple>

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
  const napi_typedarray_type want = dtype_ == DType::F32 ? napi_float32_array
                                    : dtype_is_block(dtype_) ? napi_uint8_array : napi_uint16_array;
  if (dtype_is_block(dtype_) && in_features_ % dtype_block_elems(dtype_))
    throw_js(env, ErrorCode::Shape, std::string(dtype_name(dtype_)) + " rows must be a multiple of " +
                                        std::to_string(dtype_block_elems(dtype_)) + " long");
  const std::string what = std::string("weight for dtype ") + dtype_name(dtype_) +
                           (dtype_is_block(dtype_) ? " (raw GGML blocks)" : dtype_ == DType::F32 ? "" : " (raw 16-bit values)");
  const Napi::TypedArray wa = checked_typed(env, info[0], want, what);
  if (wa.ByteLength() != dtype_bytes(dtype_, out_features_ * in_features_))
    throw_js(env, ErrorCode::Shape,
             "weight has " + std::to_string(wa.ByteLength()) + " bytes; outFeatures × inFeatures of " + dtype_name(dtype_) +
                 " need " + std::to_string(dtype_bytes(dtype_, out_features_ * in_features_)));
  weight_ = copy_typed<uint8_t>(env, info[0], want, what);
  x16_ = repack_x16(weight_->data(), dtype_, out_features_, in_features_);
  if (!info[4].IsNull() && !info[4].IsUndefined())
    bias_ = copy_typed<float>(env, info[4], napi_float32_array, "bias (or null)", out_features_);
}

Napi::Value LinearWrap::GetDisposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), disposed_); }

void LinearWrap::Release() {
  weight_.reset();
  bias_.reset();
  x16_ = PackedWeights();
}

Napi::Value LinearWrap::Dispose(const Napi::CallbackInfo& info) {
  disposed_ = true;
  Release();  // a forward in flight holds its own references
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
  const int64_t rows = get_int(env, info[1], "rows", 0, (int64_t)1 << 31);
  // the worker reads a copy: JS may detach or transfer the input's buffer while it runs
  auto input = copy_typed<float>(env, info[0], napi_float32_array, "input (rows × inFeatures)", rows * in_features_);
  Napi::Object opts = info[2].As<Napi::Object>();
  Activation act = Activation::None;
  const std::string a = opts.Get("activation").IsString() ? opts.Get("activation").As<Napi::String>().Utf8Value() : "none";
  if (a == "gelu") act = Activation::Gelu;
  else if (a == "quick_gelu") act = Activation::QuickGelu;
  else if (a != "none") throw_js(env, ErrorCode::Argument, "activation must be 'none', 'gelu' or 'quick_gelu', got '" + a + "'");
  const std::string device = opts.Get("device").IsString() ? opts.Get("device").As<Napi::String>().Utf8Value() : "cpu";
  if (device != "cpu" && device != "cuda")
    throw_js(env, ErrorCode::Argument, "device must be 'cpu' or 'cuda', got '" + device + "'");
  Napi::Float32Array output = Napi::Float32Array::New(env, (size_t)(rows * out_features_));
  MatmulArgs args;
  args.a = input->data();
  args.w = weight_->data();
  args.w_type = dtype_;
  args.bias = bias_ ? bias_->data() : nullptr;
  args.out = output.Data();
  args.M = rows;
  args.N = out_features_;
  args.K = in_features_;
  args.act = act;
  args.w_x16 = x16_.get();

  // `output` is ours until the promise resolves; the worker holds its own references to the weight,
  // bias, packed copy and input, so dispose() during a forward frees them when it ends
  auto out_pin = std::make_shared<Napi::ObjectReference>(Napi::Persistent(output.As<Napi::Object>()));
  const bool cuda = device == "cuda";
  const int index = opts.Get("deviceIndex").IsUndefined() ? 0 : (int)get_int(env, opts.Get("deviceIndex"), "deviceIndex", 0, 1023);
  auto keep = std::make_tuple(x16_, weight_, bias_, input);
  return PromiseWorker::Start(
      env, [args, cuda, index, keep] { cuda ? cuda_backend::matmul(args, index) : matmul_cpu(args); },
      [out_pin](Napi::Env) { return out_pin->Value(); });
}

}  // namespace napi
}  // namespace medllava
