// Typed-array arguments of the per-op runners (cpuOp here, the emulated CUDA twin in the test
// addon): fetched by key, checked for type and length, with an E_ARGUMENT / E_SHAPE naming the key.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>

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

}  // namespace napi
}  // namespace medllava
