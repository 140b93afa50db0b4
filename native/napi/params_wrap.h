// The parameter table of a loaded model (Llm or Vision) as its JS wrapper exposes it: list it, mark
// parameters trainable, read and write their values. defines: params_list, params_set_trainable,
// params_read, params_write.
#pragma once
#include <napi.h>

#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "../model/params.h"
#include "js_error.h"

namespace medllava {
namespace napi {

// The table is changed only through these calls, which hold its exclusive lock; the model objects
// are created non-const (std::make_shared<Llm>) and shared as const for the forward passes.
template <class M>
ParamTable& mutable_params(const std::shared_ptr<const M>& m) {
  return const_cast<M&>(*m).params();
}

inline int param_id(Napi::Env env, const ParamTable& t, const Napi::Value& v) {
  if (!v.IsString()) throw_js(env, ErrorCode::Argument, "a parameter name (string) is expected, got " + js_type_name(v));
  const std::string name = v.As<Napi::String>().Utf8Value();
  const int id = t.find(name);
  if (id < 0) throw_js(env, ErrorCode::Argument, "there is no parameter named '" + name + "' (parameters() lists them)");
  return id;
}

// parameters() -> [{ name, shape, dtype, trainable, tiedTo }]
template <class M>
Napi::Value params_list(Napi::Env env, const std::shared_ptr<const M>& m) {
  const ParamTable& t = m->params();
  std::shared_lock<std::shared_mutex> lock(t.mutex());
  Napi::Array out = Napi::Array::New(env, (size_t)t.size());
  for (int i = 0; i < t.size(); ++i) {
    const Param& p = t[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", p.name);
    Napi::Array shape = Napi::Array::New(env, p.shape.size());
    for (size_t d = 0; d < p.shape.size(); ++d) shape.Set((uint32_t)d, Napi::Number::New(env, (double)p.shape[d]));
    o.Set("shape", shape);
    o.Set("dtype", dtype_name(p.stored));
    o.Set("trainable", p.trainable);
    o.Set("tiedTo", p.tied_to >= 0 ? Napi::Value(Napi::String::New(env, t[p.tied_to].name)) : env.Null());
    out.Set((uint32_t)i, o);
  }
  return out;
}

// setTrainable(names: string[], on = true) -> Promise<number> (trainable floats in the table)
template <class M>
Napi::Value params_set_trainable(const Napi::CallbackInfo& info, const std::shared_ptr<const M>& m) {
  Napi::Env env = info.Env();
  ParamTable& t = mutable_params(m);
  if (info.Length() < 1 || !info[0].IsArray()) throw_js(env, ErrorCode::Argument, "setTrainable(names: string[], on?: boolean)");
  if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsBoolean())
    throw_js(env, ErrorCode::Argument, "setTrainable: `on` must be a boolean, got " + js_type_name(info[1]));
  const bool on = info.Length() < 2 || info[1].IsUndefined() || info[1].As<Napi::Boolean>().Value();
  Napi::Array names = info[0].As<Napi::Array>();
  std::vector<int> ids;
  for (uint32_t i = 0; i < names.Length(); ++i) ids.push_back(param_id(env, t, names.Get(i)));
  auto n = std::make_shared<double>(0);
  auto keep = m;
  return PromiseWorker::Start(
      env,
      [keep, &t, ids, on, n] {
        t.sync_host();  // a device trainer's newest values first: the re-layout keeps them
        std::unique_lock<std::shared_mutex> lock(t.mutex());  // waits for forwards in flight
        t.set_trainable(ids, on);
        *n = (double)t.trainable_numel();
      },
      [n](Napi::Env e) { return Napi::Number::New(e, *n); });
}

// readParameter(name) -> Promise<Float32Array>: its current values as f32
template <class M>
Napi::Value params_read(const Napi::CallbackInfo& info, const std::shared_ptr<const M>& m) {
  Napi::Env env = info.Env();
  const ParamTable& t = m->params();
  const int id = param_id(env, t, info.Length() ? info[0] : env.Undefined());
  Napi::Float32Array out = Napi::Float32Array::New(env, (size_t)t[id].numel());
  auto pin = std::make_shared<Napi::ObjectReference>(Napi::Persistent(out.As<Napi::Object>()));
  float* o = out.Data();
  auto keep = m;
  return PromiseWorker::Start(
      env,
      [keep, &t, id, o] {
        t.sync_host();
        std::shared_lock<std::shared_mutex> lock(t.mutex());
        t.read(id, o);
      },
      [pin](Napi::Env) { return pin->Value(); });
}

// writeParameter(name, values: Float32Array, offset = 0) -> Promise<void>: values into elements
// [offset, offset + values.length) of a trainable parameter; the next forward (CPU or device) sees them
template <class M>
Napi::Value params_write(const Napi::CallbackInfo& info, const std::shared_ptr<const M>& m) {
  Napi::Env env = info.Env();
  ParamTable& t = mutable_params(m);
  const int id = param_id(env, t, info.Length() ? info[0] : env.Undefined());
  const Param& p = t[id];
  const int64_t offset = info.Length() > 2 && !info[2].IsUndefined() ? get_int(env, info[2], "offset", 0, p.numel()) : 0;
  auto values = copy_typed<float>(env, info.Length() > 1 ? info[1] : env.Undefined(), napi_float32_array,
                                  "writeParameter(name, values: Float32Array, offset?)", -1);
  if (offset + (int64_t)values->size() > p.numel())
    throw_js(env, ErrorCode::Shape, "writeParameter: " + std::to_string(values->size()) + " values from element " + std::to_string(offset) +
                                         " run past the end of '" + p.name + "' (" + std::to_string(p.numel()) + " elements)");
  auto keep = m;
  const std::string name = p.name;
  return PromiseWorker::Start(
      env,
      [keep, &t, id, offset, values, name] {
        t.sync_host();  // the other elements keep a device trainer's newest values
        std::unique_lock<std::shared_mutex> lock(t.mutex());
        float* v = t.values(id);
        if (!v) throw Error(ErrorCode::Argument, "'" + name + "' is frozen: mark it trainable (setTrainable) before writing it");
        std::copy(values->begin(), values->end(), v + offset);
        t.touch();
      },
      [](Napi::Env e) { return e.Undefined(); });
}

}  // namespace napi
}  // namespace medllava
