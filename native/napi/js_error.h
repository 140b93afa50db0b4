// medllava::Error -> JS Error with .code, and a Promise-returning AsyncWorker (sharp's habit: JS
// validates and builds a plain struct, the worker computes off the main thread, a Promise returns).
#pragma once
#include <napi.h>

#include <functional>
#include <string>

#include "../core/error.h"

namespace medllava {
namespace napi {

inline Napi::Error make_error(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

[[noreturn]] inline void throw_js(Napi::Env env, ErrorCode code, const std::string& message) {
  throw make_error(env, error_code_name(code), message);
}

// Runs f() and turns any C++ exception into a JS Error with .code. node-addon-api only converts
// Napi::Error; anything else escaping a callback would std::terminate the process.
template <class F>
decltype(auto) guard(Napi::Env env, F&& f) {
  try {
    return f();
  } catch (const Napi::Error&) {
    throw;
  } catch (const Error& e) {
    throw make_error(env, e.code_name(), e.what());
  } catch (const std::bad_alloc&) {
    throw make_error(env, "E_OOM", "out of memory");
  } catch (const std::exception& e) {
    throw make_error(env, "E_ARGUMENT", e.what());
  }
}

// A free function registered through guarded<F> never lets a C++ exception escape.
template <Napi::Value (*F)(const Napi::CallbackInfo&)>
Napi::Value guarded(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] { return F(info); });
}

// Runs `work` on libuv's pool; resolves with `result(env)` or rejects with the error's code.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;
  using Result = std::function<Napi::Value(Napi::Env)>;
  using Done = std::function<void()>;  // runs on the JS thread after resolve/reject

  static Napi::Promise Start(Napi::Env env, Work work, Result result, Done done = nullptr) {
    auto* w = new PromiseWorker(env, std::move(work), std::move(result), std::move(done));
    Napi::Promise p = w->deferred_.Promise();
    w->Queue();
    return p;
  }

 protected:
  void Execute() override {
    try {
      work_();
    } catch (const Error& e) {
      code_ = e.code_name();
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code_ = "E_OOM";
      SetError("out of memory");
    } catch (const std::exception& e) {
      code_ = "E_ARGUMENT";
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::HandleScope scope(Env());
    try {
      deferred_.Resolve(result_(Env()));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
    if (done_) done_();
  }
  void OnError(const Napi::Error& e) override {
    Napi::HandleScope scope(Env());
    deferred_.Reject(make_error(Env(), code_.c_str(), e.Message()).Value());
    if (done_) done_();
  }

 private:
  PromiseWorker(Napi::Env env, Work work, Result result, Done done)
      : Napi::AsyncWorker(env, "medllava"), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)),
        result_(std::move(result)), done_(std::move(done)) {}
  Napi::Promise::Deferred deferred_;
  Work work_;
  Result result_;
  Done done_;
  std::string code_ = "E_ARGUMENT";
};

// Argument helpers: every message says which argument, what was expected and what was given.
inline std::string js_type_name(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsTypedArray()) {
    switch (v.As<Napi::TypedArray>().TypedArrayType()) {
      case napi_float32_array: return "Float32Array";
      case napi_uint16_array: return "Uint16Array";
      case napi_float64_array: return "Float64Array";
      case napi_uint8_array: return "Uint8Array";
      case napi_int32_array: return "Int32Array";
      default: return "TypedArray";
    }
  }
  if (v.IsArray()) return "Array";
  if (v.IsString()) return "string";
  if (v.IsNumber()) return "number";
  if (v.IsBoolean()) return "boolean";
  if (v.IsFunction()) return "function";
  return "object";
}

inline int64_t get_int(Napi::Env env, const Napi::Value& v, const char* what, int64_t min, int64_t max) {
  if (!v.IsNumber()) throw_js(env, ErrorCode::Argument, std::string(what) + " must be an integer, got " + js_type_name(v));
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != (double)(int64_t)d || d < (double)min || d > (double)max)
    throw_js(env, ErrorCode::Argument,
             std::string(what) + " must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " +
                 std::to_string(d));
  return (int64_t)d;
}

}  // namespace napi
}  // namespace medllava
