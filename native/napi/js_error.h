// medllava::Error -> JS Error with .code, and a Promise-returning AsyncWorker (sharp's habit: JS
// validates and builds a plain struct, the worker computes off the main thread, a Promise returns).
#pragma once
#include <napi.h>

#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <vector>

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

// What a C++ exception that is not a medllava::Error means for the caller: E_OOM when an allocation
// failed, otherwise E_INTERNAL — our failure (a bug, or the system refusing a thread, a mutex, a
// mapping), never E_ARGUMENT, so a user can tell their own mistake from ours.
struct ForeignError {
  const char* code;
  std::string message;
};
inline ForeignError foreign_error(std::exception_ptr ep) {
  try {
    std::rethrow_exception(ep);
  } catch (const std::bad_alloc&) {
    return {"E_OOM", "out of memory: an allocation failed (free memory, or use a smaller context / model)"};
  } catch (const std::exception& e) {
    return {"E_INTERNAL", std::string("internal error in medllava (please report it): ") + e.what()};
  } catch (...) {
    return {"E_INTERNAL", "internal error in medllava (please report it): an unknown exception"};
  }
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
  } catch (...) {
    const ForeignError fe = foreign_error(std::current_exception());
    throw make_error(env, fe.code, fe.message);
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
    } catch (...) {
      ForeignError fe = foreign_error(std::current_exception());
      code_ = fe.code;
      SetError(fe.message);
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
  std::string code_ = "E_INTERNAL";
};

constexpr napi_typedarray_type kAnyTypedArray = (napi_typedarray_type)-1;
inline const char* typed_array_name(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: return "Int8Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_uint8_clamped_array: return "Uint8ClampedArray";
    case napi_int16_array: return "Int16Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint32_array: return "Uint32Array";
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_bigint64_array: return "BigInt64Array";
    case napi_biguint64_array: return "BigUint64Array";
    default: return "TypedArray";
  }
}

// Argument helpers: every message says which argument, what was expected and what was given.
inline std::string js_type_name(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsTypedArray()) return typed_array_name(v.As<Napi::TypedArray>().TypedArrayType());
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

// ---- Typed arrays coming in from JS -------------------------------------------------------------
// Every typed-array argument is checked for its element type (a Uint8Array read as floats would
// read 4x past its end) and, when a worker will read it, copied into memory the worker owns: JS
// can transfer or detach an ArrayBuffer (ArrayBuffer.prototype.transfer()) while the worker runs,
// and no N-API call pins it. A copy costs one memcpy next to work that is orders larger.

// `v` as a TypedArray of type `want` (kAnyTypedArray: any kind) holding `n` elements (n < 0: any);
// E_ARGUMENT for another kind or a detached buffer, E_SHAPE for a length.
inline Napi::TypedArray checked_typed(Napi::Env env, const Napi::Value& v, napi_typedarray_type want, const std::string& what,
                                      int64_t n = -1) {
  const char* want_name = want == kAnyTypedArray ? "TypedArray" : typed_array_name(want);
  if (!v.IsTypedArray() || (want != kAnyTypedArray && v.As<Napi::TypedArray>().TypedArrayType() != want))
    throw_js(env, ErrorCode::Argument, what + " must be a " + want_name + ", got " + js_type_name(v));
  Napi::TypedArray a = v.As<Napi::TypedArray>();
  if (a.ArrayBuffer().IsDetached())
    throw_js(env, ErrorCode::Argument, what + "'s ArrayBuffer is detached (transferred?); pass a live array");
  if (n >= 0 && (int64_t)a.ElementLength() != n)
    throw_js(env, ErrorCode::Shape,
             what + " holds " + std::to_string(a.ElementLength()) + " elements, expected " + std::to_string(n));
  return a;
}

inline const uint8_t* typed_data(const Napi::TypedArray& a) {
  return static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
}

// A worker-owned copy of a checked typed array's elements.
template <class T>
std::shared_ptr<std::vector<T>> copy_typed(Napi::Env env, const Napi::Value& v, napi_typedarray_type want, const std::string& what,
                                           int64_t n = -1) {
  Napi::TypedArray a = checked_typed(env, v, want, what, n);
  if (a.ByteLength() % sizeof(T)) throw_js(env, ErrorCode::Shape, what + " is not a whole number of elements");
  auto out = std::make_shared<std::vector<T>>(a.ByteLength() / sizeof(T));
  if (a.ByteLength()) std::memcpy(out->data(), typed_data(a), a.ByteLength());
  return out;
}

}  // namespace napi
}  // namespace medllava
