#include "ops_wrap.h"

#include <cmath>
#include <cstring>

#include "../ops/ops.h"
#include "js_error.h"
#include "ops_args.h"

namespace medllava {
namespace napi {

namespace {
constexpr int64_t kMax = 1LL << 28;

Napi::Float32Array f32_out(Napi::Env env, int64_t n) { return Napi::Float32Array::New(env, (size_t)n); }

// cpuOp(name, args) -> Float32Array
Napi::Value CpuOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject()) throw_js(env, ErrorCode::Argument, "cpuOp(name, args)");
  const std::string op = info[0].As<Napi::String>().Utf8Value();
  const Napi::Object o = info[1].As<Napi::Object>();
  if (op == "rmsnorm" || op == "layernorm") {
    const int64_t T = arg_int(o, "T", 0, kMax), D = arg_int(o, "D", 1, kMax);
    const float* x = arg_array<float>(o, "x", napi_float32_array, T * D);
    const float* w = arg_array<float>(o, "w", napi_float32_array, D);
    const float eps = (float)arg_number(o, "eps");
    Napi::Float32Array out = f32_out(env, T * D);
    if (op == "rmsnorm") rmsnorm_cpu(x, w, out.Data(), T, D, eps);
    else layernorm_cpu(x, w, arg_array<float>(o, "b", napi_float32_array, D), out.Data(), T, D, eps);
    return out;
  }
  if (op == "rope") {
    const int64_t T = arg_int(o, "T", 0, kMax), H = arg_int(o, "heads", 1, kMax), hd = arg_int(o, "hd", 2, 4096);
    const float* x = arg_array<float>(o, "x", napi_float32_array, T * H * hd);
    const std::string mode = arg_string(o, "mode");
    if (mode != "half" && mode != "adjacent") throw_js(env, ErrorCode::Argument, "mode must be 'half' or 'adjacent'");
    Napi::Float32Array out = f32_out(env, T * H * hd);
    std::memcpy(out.Data(), x, (size_t)(T * H * hd) * 4);
    rope_cpu(out.Data(), T, H, hd, arg_int(o, "pos0", 0, kMax), (float)arg_number(o, "theta"),
             mode == "half" ? RopeMode::Half : RopeMode::Adjacent);
    return out;
  }
  if (op == "siluMul") {
    const int64_t n = arg_int(o, "n", 0, kMax);
    Napi::Float32Array out = f32_out(env, n);
    silu_mul_cpu(arg_array<float>(o, "gate", napi_float32_array, n), arg_array<float>(o, "up", napi_float32_array, n), out.Data(), n);
    return out;
  }
  if (op == "attentionCached") {
    const int64_t T = arg_int(o, "T", 1, kMax), np = arg_int(o, "nPast", 0, kMax), H = arg_int(o, "H", 1, 4096),
                  KVH = arg_int(o, "KVH", 1, 4096), hd = arg_int(o, "hd", 1, 4096);
    if (H % KVH) throw_js(env, ErrorCode::Argument, "H must be a multiple of KVH");
    const float* q = arg_array<float>(o, "q", napi_float32_array, T * H * hd);
    const uint16_t* kc = arg_array<uint16_t>(o, "kCache", napi_uint16_array, (np + T) * KVH * hd);
    const uint16_t* vc = arg_array<uint16_t>(o, "vCache", napi_uint16_array, (np + T) * KVH * hd);
    Napi::Float32Array out = f32_out(env, T * H * hd);
    attention_cached_cpu(q, kc, vc, out.Data(), T, np, H, KVH, hd);
    return out;
  }
  if (op == "attentionFull") {
    const int64_t T = arg_int(o, "T", 1, kMax), H = arg_int(o, "H", 1, 4096), hd = arg_int(o, "hd", 1, 4096);
    const int64_t n = T * H * hd;
    Napi::Float32Array out = f32_out(env, n);
    attention_full_cpu(arg_array<float>(o, "q", napi_float32_array, n), arg_array<float>(o, "k", napi_float32_array, n),
                       arg_array<float>(o, "v", napi_float32_array, n), out.Data(), T, H, hd);
    return out;
  }
  // the CPU twins of the CUDA-only kernels, with the test addon's cudaOp argument names
  if (op == "activation") {
    const int64_t n = arg_int(o, "n", 0, kMax);
    const std::string act = arg_string(o, "act");
    if (act != "gelu" && act != "quick_gelu" && act != "none") throw_js(env, ErrorCode::Argument, "act must be 'gelu', 'quick_gelu' or 'none'");
    Napi::Float32Array out = f32_out(env, n);
    activation_cpu(arg_array<float>(o, "x", napi_float32_array, n), out.Data(), n,
                   act == "gelu" ? Activation::Gelu : act == "quick_gelu" ? Activation::QuickGelu : Activation::None);
    return out;
  }
  if (op == "residual") {
    const int64_t n = arg_int(o, "n", 0, kMax), D = arg_int(o, "D", 1, kMax);
    if (n % D) throw_js(env, ErrorCode::Shape, "residual: n must be a multiple of D");
    Napi::Float32Array out = f32_out(env, n);
    std::memcpy(out.Data(), arg_array<float>(o, "h", napi_float32_array, n), (size_t)n * 4);
    residual_cpu(out.Data(), arg_array<float>(o, "a", napi_float32_array, n), arg_array<float>(o, "gamma", napi_float32_array, D, true),
                 arg_scale(o), n, D);
    return out;
  }
  if (op == "embed") {
    const EmbedArgs e = embed_args(o);
    Napi::Float32Array out = f32_out(env, e.T * e.D);
    embed_cpu(e.table, e.type, e.ids, out.Data(), e.T, e.D);
    return out;
  }
  if (op == "kvAppend") {
    const int64_t T = arg_int(o, "T", 0, kMax), width = arg_int(o, "width", 1, kMax), pos = arg_int(o, "pos", 0, kMax);
    const Napi::TypedArray cv = checked_typed(env, o.Get("cache"), napi_uint16_array, "cache");
    if ((int64_t)cv.ElementLength() % width) throw_js(env, ErrorCode::Shape, "kvAppend: the cache is not whole rows of width");
    const int64_t rows = (int64_t)cv.ElementLength() / width;
    if (pos + T > rows) throw_js(env, ErrorCode::Shape, "kvAppend: the cache has too few rows");
    Napi::Uint16Array out = Napi::Uint16Array::New(env, (size_t)(rows * width));
    std::memcpy(out.Data(), typed_data(cv), (size_t)(rows * width) * 2);
    kv_append_cpu(arg_array<float>(o, "src", napi_float32_array, T * width), out.Data(), pos, T, width);
    return out;
  }
  if (op == "topk") {
    const int64_t n = arg_int(o, "n", 1, kMax), k = arg_int(o, "k", 1, n);
    Napi::Int32Array idx = Napi::Int32Array::New(env, (size_t)k);
    Napi::Float32Array val = f32_out(env, k);
    topk_cpu(arg_array<float>(o, "x", napi_float32_array, n), n, k, idx.Data(), val.Data());
    Napi::Object r = Napi::Object::New(env);
    r.Set("idx", idx);
    r.Set("val", val);
    return r;
  }
  throw_js(env, ErrorCode::Argument, "cpuOp: no op named '" + op + "'");
}
// sampleLogits(logits: Float32Array, options, history: Int32Array, rngState) -> { token, logprob, rngState }
Napi::Value SampleLogits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4) throw_js(env, ErrorCode::Argument, "sampleLogits(logits, options, history, rngState)");
  const Napi::TypedArray l = checked_typed(env, info[0], napi_float32_array, "logits");
  if (l.ElementLength() == 0) throw_js(env, ErrorCode::Argument, "logits is empty");
  const SampleOptions o = sample_options(env, info[1]);
  const Napi::TypedArray h = checked_typed(env, info[2], napi_int32_array, "history");
  uint32_t rng = (uint32_t)get_int(env, info[3], "rngState", 0, 0xffffffffLL);
  const SampleResult r = sample_cpu(reinterpret_cast<const float*>(typed_data(l)), (int64_t)l.ElementLength(), o,
                                    reinterpret_cast<const int32_t*>(typed_data(h)), (int64_t)h.ElementLength(), &rng);
  return sample_result(env, r, rng);
}
}  // namespace

void register_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("cpuOp", Napi::Function::New<guarded<CpuOp>>(env, "cpuOp"));
  exports.Set("sampleLogits", Napi::Function::New<guarded<SampleLogits>>(env, "sampleLogits"));
}

}  // namespace napi
}  // namespace medllava
