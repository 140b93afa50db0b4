// Native objects built off the JS thread and wrapped afterwards: a static load() builds the C++
// object on the worker pool, then constructs the JS class around it through an External (the only
// way its constructor accepts), so users cannot construct half-initialised objects.
#pragma once
#include <napi.h>

#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>

#include "js_error.h"

namespace medllava {
namespace napi {

template <class T>
Napi::External<std::shared_ptr<const T>> wrap_external(Napi::Env env, std::shared_ptr<const T> p) {
  return Napi::External<std::shared_ptr<const T>>::New(env, new std::shared_ptr<const T>(std::move(p)),
                                                       [](Napi::Env, std::shared_ptr<const T>* h) { delete h; });
}

template <class T>
Napi::Value load_async(Napi::Env env, Napi::Function ctor, std::function<std::shared_ptr<const T>()> make) {
  auto result = std::make_shared<std::shared_ptr<const T>>();
  auto ctor_ref = std::make_shared<Napi::FunctionReference>(Napi::Persistent(ctor));
  return PromiseWorker::Start(
      env, [=] { *result = make(); },
      [=](Napi::Env e) { return ctor_ref->Value().New({wrap_external<T>(e, *result)}); });
}

// A [path, tensorName] pair from JS (the way load() arguments name tensors); E_ARGUMENT otherwise.
inline std::pair<std::string, std::string> tensor_ref(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsArray() || v.As<Napi::Array>().Length() != 2) throw_js(env, ErrorCode::Argument, what + " must be [path, tensorName]");
  Napi::Array a = v.As<Napi::Array>();
  if (!a.Get(0u).IsString() || !a.Get(1u).IsString()) throw_js(env, ErrorCode::Argument, what + " must be [path, tensorName]");
  return {a.Get(0u).As<Napi::String>().Utf8Value(), a.Get(1u).As<Napi::String>().Utf8Value()};
}

// config.<key> as a number; E_ARGUMENT otherwise.
inline double config_number(Napi::Env env, const Napi::Object& o, const char* key) {
  const Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw_js(env, ErrorCode::Argument, std::string("config.") + key + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

// config.<key> as an integer in [min, max]; E_ARGUMENT for a fraction, NaN or out-of-range value.
inline int64_t config_int(Napi::Env env, const Napi::Object& o, const char* key, int64_t min, int64_t max) {
  return get_int(env, o.Get(key), (std::string("config.") + key).c_str(), min, max);
}

// config.<key> as one of `allowed` (the first is the default when `fallback` and the key is absent);
// E_UNSUPPORTED naming the value otherwise — an unknown name never silently becomes a default.
inline std::string config_choice(Napi::Env env, const Napi::Object& o, const char* key, std::initializer_list<const char*> allowed,
                                 bool fallback = false) {
  const Napi::Value v = o.Get(key);
  if (fallback && v.IsUndefined()) return *allowed.begin();
  std::string list;
  for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + "'" + a + "'";
  if (!v.IsString()) throw_js(env, ErrorCode::Argument, std::string("config.") + key + " must be one of " + list + ", got " + js_type_name(v));
  const std::string s = v.As<Napi::String>().Utf8Value();
  for (const char* a : allowed)
    if (s == a) return s;
  throw_js(env, ErrorCode::Unsupported, std::string("config.") + key + " '" + s + "' is not supported (supported: " + list + ")");
}

// In a wrapped class's constructor: the object its External carries, or E_ARGUMENT saying how to make one.
template <class T>
std::shared_ptr<const T> unwrap_external(const Napi::CallbackInfo& info, const char* how) {
  if (info.Length() != 1 || !info[0].IsExternal()) throw make_error(info.Env(), "E_ARGUMENT", how);
  return *info[0].As<Napi::External<std::shared_ptr<const T>>>().Data();
}

}  // namespace napi
}  // namespace medllava
