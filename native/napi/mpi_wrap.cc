// The addon's `mpi` object (lib/native.ts NativeMpi) over native/dist/mpi.h:
//   info() -> { compiled, initialized, rank, size, library, reason }
//   init() -> { …info } (E_UNSUPPORTED with the reason when there is no MPI)
//   allreduce(Float32Array | Float64Array, 'sum' | 'max', timeoutMs) -> Promise<void> (in place; the array is copied
//     to the worker and back)
//   bcast(Uint8Array, root, timeoutMs) -> Promise<void> (in place); barrier(timeoutMs) -> Promise<void>; finalize()
#include "mpi_wrap.h"

#include <cstring>
#include <memory>
#include <vector>

#include "../dist/mpi.h"
#include "js_error.h"
#include "ops_args.h"

namespace medllava {
namespace napi {

namespace {

Napi::Object info_object(Napi::Env env, const mpi::Info& i) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("compiled", i.compiled);
  o.Set("initialized", i.initialized);
  o.Set("rank", i.rank);
  o.Set("size", i.size);
  o.Set("library", i.library);
  if (!i.reason.empty()) o.Set("reason", i.reason);
  return o;
}

int64_t timeout_arg(Napi::Env env, const Napi::CallbackInfo& info, size_t at) {
  return get_int(env, info.Length() > at ? info[at] : Napi::Number::New(env, 600000), "timeoutMs", 1, (int64_t)1 << 40);
}

Napi::Value Info(const Napi::CallbackInfo& info) { return info_object(info.Env(), mpi::info()); }
Napi::Value Init(const Napi::CallbackInfo& info) { return info_object(info.Env(), mpi::init()); }
Napi::Value Finalize(const Napi::CallbackInfo& info) {
  mpi::finalize();
  return info.Env().Undefined();
}

Napi::Value Allreduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) throw_js(env, ErrorCode::Argument, "allreduce(Float32Array | Float64Array, op, timeoutMs)");
  Napi::TypedArray a = info[0].As<Napi::TypedArray>();
  const bool f64 = a.TypedArrayType() == napi_float64_array;
  if (!f64 && a.TypedArrayType() != napi_float32_array) throw_js(env, ErrorCode::Argument, "allreduce: a Float32Array or Float64Array");
  const std::string op = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "sum";
  if (op != "sum" && op != "max") throw_js(env, ErrorCode::Argument, "allreduce: op is 'sum' or 'max'");
  const int64_t timeout = timeout_arg(env, info, 2);
  const size_t bytes = a.ByteLength();
  auto buf = std::make_shared<std::vector<uint8_t>>(bytes);
  std::memcpy(buf->data(), static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset(), bytes);
  auto ref = std::make_shared<Napi::Reference<Napi::TypedArray>>(Napi::Persistent(a));
  const int64_t n = (int64_t)a.ElementLength();
  return PromiseWorker::Start(
      env, [=] { mpi::allreduce(buf->data(), n, f64 ? mpi::Type::F64 : mpi::Type::F32, op == "sum" ? mpi::Op::Sum : mpi::Op::Max, timeout); },
      [=](Napi::Env e) {
        Napi::TypedArray t = ref->Value();
        if (t.ByteLength() == bytes) std::memcpy(static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset(), buf->data(), bytes);
        return e.Undefined();
      });
}

Napi::Value Bcast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    throw_js(env, ErrorCode::Argument, "bcast(Uint8Array, root, timeoutMs)");
  Napi::Uint8Array a = info[0].As<Napi::Uint8Array>();
  const int root = (int)get_int(env, info[1], "root", 0, 1 << 30);
  const int64_t timeout = timeout_arg(env, info, 2);
  auto buf = std::make_shared<std::vector<uint8_t>>(a.Data(), a.Data() + a.ByteLength());
  auto ref = std::make_shared<Napi::Reference<Napi::Uint8Array>>(Napi::Persistent(a));
  return PromiseWorker::Start(
      env, [=] { mpi::bcast(buf->data(), (int64_t)buf->size(), root, timeout); },
      [=](Napi::Env e) {
        Napi::Uint8Array t = ref->Value();
        if (t.ByteLength() == buf->size()) std::memcpy(t.Data(), buf->data(), buf->size());
        return e.Undefined();
      });
}

Napi::Value Barrier(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t timeout = timeout_arg(env, info, 0);
  return PromiseWorker::Start(env, [=] { mpi::barrier(timeout); }, [](Napi::Env e) { return e.Undefined(); });
}

}  // namespace

Napi::Object MpiObject(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("info", Napi::Function::New<guarded<Info>>(env, "info"));
  o.Set("init", Napi::Function::New<guarded<Init>>(env, "init"));
  o.Set("allreduce", Napi::Function::New<guarded<Allreduce>>(env, "allreduce"));
  o.Set("bcast", Napi::Function::New<guarded<Bcast>>(env, "bcast"));
  o.Set("barrier", Napi::Function::New<guarded<Barrier>>(env, "barrier"));
  o.Set("finalize", Napi::Function::New<guarded<Finalize>>(env, "finalize"));
  return o;
}

}  // namespace napi
}  // namespace medllava
