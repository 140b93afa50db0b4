// Typed-array arguments of the per-op runners (cpuOp here, the emulated CUDA twin in the test
// addon): fetched by key, checked for type and length, with an E_ARGUMENT / E_SHAPE naming the key.
#pragma once
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "../core/dtype.h"
#include "../ops/ops.h"
#include "js_error.h"

namespace medllava {
namespace napi {

inline int64_t arg_int(const Napi::Object& o, const char* key, int64_t min, int64_t max) {
  return get_int(o.Env(), o.Get(key), key, min, max);
}

inline double arg_number(const Napi::Object& o, const char* key) {
  const Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw_js(o.Env(), ErrorCode::Argument, std::string(key) + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

// the optional `scale` of the residual add (default 1)
inline float arg_scale(const Napi::Object& o) {
  const Napi::Value v = o.Get("scale");
  return v.IsUndefined() ? 1.0f : (float)arg_number(o, "scale");
}

inline std::string arg_string(const Napi::Object& o, const char* key) {
  const Napi::Value v = o.Get(key);
  if (!v.IsString()) throw_js(o.Env(), ErrorCode::Argument, std::string(key) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

// A typed array of element type T holding exactly n elements (n < 0: any length); null → nullptr if allowed.
template <class T>
T* arg_array(const Napi::Object& o, const char* key, napi_typedarray_type type, int64_t n, bool nullable = false) {
  const Napi::Value v = o.Get(key);
  if (nullable && (v.IsNull() || v.IsUndefined())) return nullptr;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    throw_js(o.Env(), ErrorCode::Argument, std::string(key) + " has the wrong type (" + js_type_name(v) + ")");
  Napi::TypedArray a = v.As<Napi::TypedArray>();
  if (n >= 0 && (int64_t)a.ElementLength() != n)
    throw_js(o.Env(), ErrorCode::Shape, std::string(key) + " holds " + std::to_string(a.ElementLength()) + " elements, expected " +
                                             std::to_string(n));
  return reinterpret_cast<T*>(static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset());
}

// The embedding gather's arguments { table: Uint8Array, type, ids: Int32Array, T, D, vocab }, checked
// (rows whole blocks, ids in range) — for cpuOp and the test addon's cudaOp alike.
struct EmbedArgs {
  const uint8_t* table;
  DType type;
  const int32_t* ids;
  int64_t T, D;
};
inline EmbedArgs embed_args(const Napi::Object& o) {
  constexpr int64_t kMaxElems = 1LL << 28;
  Napi::Env env = o.Env();
  EmbedArgs e;
  e.T = arg_int(o, "T", 0, kMaxElems);
  e.D = arg_int(o, "D", 1, kMaxElems);
  const int64_t V = arg_int(o, "vocab", 1, kMaxElems);
  e.type = parse_dtype(arg_string(o, "type"));
  if (dtype_is_block(e.type) && e.D % dtype_block_elems(e.type)) throw_js(env, ErrorCode::Shape, "embed: rows must be whole blocks");
  e.table = arg_array<uint8_t>(o, "table", napi_uint8_array, (int64_t)dtype_bytes(e.type, V * e.D));
  e.ids = arg_array<int32_t>(o, "ids", napi_int32_array, e.T);
  for (int64_t i = 0; i < e.T; ++i)
    if (e.ids[i] < 0 || e.ids[i] >= V) throw_js(env, ErrorCode::Argument, "embed: token id out of range");
  return e;
}

// Sampling options from JS { temperature, topK, topP, minP, repetitionPenalty } (each optional), checked.
inline SampleOptions sample_options(Napi::Env env, const Napi::Value& v) {
  SampleOptions o;
  if (v.IsUndefined()) return o;
  if (!v.IsObject()) throw_js(env, ErrorCode::Argument, "sampling options must be an object, got " + js_type_name(v));
  const Napi::Object so = v.As<Napi::Object>();
  auto num = [&](const char* key, double def, bool (*ok)(double), const char* what) {
    const Napi::Value x = so.Get(key);
    if (x.IsUndefined()) return def;
    const double d = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : NAN;
    if (!std::isfinite(d) || !ok(d)) throw_js(env, ErrorCode::Argument, std::string(key) + " must be " + what);
    return d;
  };
  o.temperature = num("temperature", 0, [](double d) { return d >= 0; }, "≥ 0");
  // top-k beyond the vocabulary is off; clamped before the cast (a huge double does not fit int64)
  o.top_k = (int64_t)std::min(num("topK", 0, [](double d) { return d >= 0 && d == std::floor(d); }, "an integer ≥ 0"), 2147483647.0);
  o.top_p = num("topP", 1, [](double d) { return d > 0 && d <= 1; }, "in (0, 1]");
  o.min_p = num("minP", 0, [](double d) { return d >= 0 && d < 1; }, "in [0, 1)");
  o.repetition_penalty = num("repetitionPenalty", 1, [](double d) { return d > 0; }, "> 0");
  return o;
}

// The result of a sampling step for JS: { token, logprob, rngState }.
inline Napi::Object sample_result(Napi::Env env, const SampleResult& r, uint32_t rng) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("token", Napi::Number::New(env, r.token));
  out.Set("logprob", Napi::Number::New(env, r.logprob));
  out.Set("rngState", Napi::Number::New(env, rng));
  return out;
}

}  // namespace napi
}  // namespace medllava
