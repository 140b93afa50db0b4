// NativeTrainer: new NativeTrainer(llm, vision?, { deviceIndex? }) — on the CPU, or on the CUDA device the LLM
// was loaded on (native/cuda/train_device.cuh) — then
//   accumulate({ seqs: [{ tokens: Int32Array, labels: Int32Array, images: [{ at, index }], weight? }],
//                pixels: Float32Array[] }, gradScale) -> Promise<{ loss, tokens }>
//   zeroGrads() -> Promise<void>; gradNorm() -> Promise<number>
//   update({ groups: [{ vision: boolean, name, lr, weightDecay }], step, lrFactor, clip, beta1, beta2, eps }) -> Promise<void>
//   state(vision: boolean, name, which: 'grad' | 'm' | 'v') -> Promise<Float32Array | null> (null: the parameter is frozen)
//   setState(vision: boolean, name, which: 'value' | 'm' | 'v', values: Float32Array) -> Promise<void> (a resume's
//   restore: the master value or an AdamW moment; a device engine re-uploads before its next step)
//   dropoutStep() -> number (the step seed the next accumulate's LoRA dropout uses: setLoraDropout(p, it) resumes it)
//   allreduceGrads(timeoutMs) -> Promise<void> (data parallel: every rank's accumulated gradients summed in place on
//   every rank: over MPI for the CPU engine, over NCCL (bootstrapped by MPI) for a device engine)
//   shardOptimizer(owned: [{ vision, name }]) -> Promise<void> (ZeRO-1: AdamW moments kept for these only; CPU engine)
//   broadcastParams([{ vision, name, root }], timeoutMs) -> Promise<void> (each value from its owner rank to every rank)
//   optimizerBytes() -> number (AdamW moment bytes held, both tables)
//   setCheckpoint(on); setLoraDropout(p, seed) (accumulate call k then uses step seed seed + k);
//   setLossRows(n) (rows per loss-head chunk, 0: automatic); cancel() (a running accumulate stops at its next
//   layer with E_ABORTED, its gradients partial); dispose()
// The batch is copied on the JS thread (train_args.h).
#include "trainer_wrap.h"

#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "../cuda/backend.h"
#include "../dist/mpi.h"
#include "js_error.h"
#include "llm_wrap.h"
#include "ops_args.h"
#include "params_wrap.h"
#include "train_args.h"
#include "vision_wrap.h"

namespace medllava {
namespace napi {

Napi::Function TrainerWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeTrainer",
                     {InstanceMethod<&TrainerWrap::Accumulate>("accumulate"), InstanceMethod<&TrainerWrap::ZeroGrads>("zeroGrads"),
                      InstanceMethod<&TrainerWrap::GradNorm>("gradNorm"), InstanceMethod<&TrainerWrap::Update>("update"),
                      InstanceMethod<&TrainerWrap::State>("state"), InstanceMethod<&TrainerWrap::SetState>("setState"),
                      InstanceMethod<&TrainerWrap::DropoutStep>("dropoutStep"),
                      InstanceMethod<&TrainerWrap::AllreduceGrads>("allreduceGrads"),
                      InstanceMethod<&TrainerWrap::ShardOptimizer>("shardOptimizer"),
                      InstanceMethod<&TrainerWrap::BroadcastParams>("broadcastParams"),
                      InstanceMethod<&TrainerWrap::OptimizerBytes>("optimizerBytes"), InstanceMethod<&TrainerWrap::SetCheckpoint>("setCheckpoint"),
                      InstanceMethod<&TrainerWrap::SetLoraDropout>("setLoraDropout"),
                      InstanceMethod<&TrainerWrap::SetLossRows>("setLossRows"),
                      InstanceMethod<&TrainerWrap::Cancel>("cancel"),
                      InstanceMethod<&TrainerWrap::Dispose>("dispose")});
}

TrainerWrap::TrainerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TrainerWrap>(info) {
  Napi::Env env = info.Env();
  guard(env, [&] {
    if (info.Length() < 1 || !info[0].IsObject())
      throw_js(env, ErrorCode::Argument, "new NativeTrainer(llm: NativeLlm, vision?: NativeVision, { deviceIndex?, computeType? })");
    LlmWrap* l = Napi::ObjectWrap<LlmWrap>::Unwrap(info[0].As<Napi::Object>());
    if (!l || !l->llm()) throw_js(env, ErrorCode::Argument, "the language model has been disposed");
    llm_ = l->llm();
    if (info.Length() > 1 && info[1].IsObject()) {
      VisionWrap* v = Napi::ObjectWrap<VisionWrap>::Unwrap(info[1].As<Napi::Object>());
      if (!v || !v->vision()) throw_js(env, ErrorCode::Argument, "the vision tower has been disposed");
      vision_ = v->vision();
    }
    // a model on a CUDA device trains there (its device's ordinal from the options), else on the CPU
    if (llm_->on_device()) {
      const Napi::Object o = info.Length() > 2 && info[2].IsObject() ? info[2].As<Napi::Object>() : Napi::Object::New(env);
      const int device = o.Has("deviceIndex") ? (int)arg_int(o, "deviceIndex", 0, 1 << 16) : 0;
      trainer_ = cuda_backend::make_trainer(llm_, vision_, device);
      device_index_ = device;
    } else {
      trainer_ = std::make_shared<Trainer>(llm_, vision_);
    }
    // computeType: 'bf16' (mixed precision, the default on a device) or 'f32' (the CPU's only one)
    const Napi::Object o = info.Length() > 2 && info[2].IsObject() ? info[2].As<Napi::Object>() : Napi::Object::New(env);
    const std::string ct = o.Has("computeType") && !o.Get("computeType").IsUndefined() ? arg_string(o, "computeType")
                           : llm_->on_device()                                            ? "bf16"
                                                                                          : "f32";
    if (ct != "bf16" && ct != "f32") throw_js(env, ErrorCode::Argument, "computeType must be 'bf16' or 'f32', got '" + ct + "'");
    trainer_->set_compute_bf16(ct == "bf16");
    return env.Undefined();
  });
}

Trainer& TrainerWrap::trainer(Napi::Env env) {
  if (!trainer_) throw_js(env, ErrorCode::Argument, "this trainer has been disposed");
  if (busy_) throw_js(env, ErrorCode::Argument, "the trainer is busy: await the previous call first");
  return *trainer_;
}

template <class Work, class Result>
Napi::Value TrainerWrap::run(Napi::Env env, Work work, Result result) {  // the caller checked trainer(env)
  busy_ = true;
  Napi::ObjectReference self = Napi::Persistent(Value());  // alive until the worker is done
  auto keep = std::make_shared<Napi::ObjectReference>(std::move(self));
  return PromiseWorker::Start(env, std::move(work), std::move(result), [this, keep] { busy_ = false; });
}

Napi::Value TrainerWrap::Accumulate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    Trainer& t = trainer(env);
    if (info.Length() < 2 || !info[0].IsObject()) throw_js(env, ErrorCode::Argument, "accumulate(batch, gradScale)");
    const double scale = info[1].ToNumber().DoubleValue();
    if (!std::isfinite(scale)) throw_js(env, ErrorCode::Argument, "gradScale must be finite");
    auto batch = parse_train_batch(env, info[0]);
    auto res = std::make_shared<Trainer::Loss>();
    t.cancel.reset();  // here, on the JS thread: a cancel() after this call stops this step
    Trainer* tp = &t;
    auto keep = trainer_;
    return run(env, [tp, keep, batch, scale, res] { *res = tp->accumulate(*batch, (float)scale); },
               [res](Napi::Env e) -> Napi::Value {
                 Napi::Object r = Napi::Object::New(e);
                 r.Set("loss", res->loss);
                 r.Set("tokens", (double)res->tokens);
                 return r;
               });
  });
}

Napi::Value TrainerWrap::ZeroGrads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    auto keep = trainer_;
    trainer(env);
    return run(env, [keep] { keep->zero_grads(); }, [](Napi::Env e) { return e.Undefined(); });
  });
}

Napi::Value TrainerWrap::GradNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    auto keep = trainer_;
    trainer(env);
    auto norm = std::make_shared<double>(0);
    return run(env, [keep, norm] { *norm = keep->grad_norm(); }, [norm](Napi::Env e) { return Napi::Number::New(e, *norm); });
  });
}

Napi::Value TrainerWrap::Update(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    auto keep = trainer_;
    trainer(env);
    if (info.Length() < 1 || !info[0].IsObject()) throw_js(env, ErrorCode::Argument, "update(options)");
    const Napi::Object o = info[0].As<Napi::Object>();
    auto groups = std::make_shared<std::vector<ParamGroup>>();
    if (!o.Get("groups").IsArray()) throw_js(env, ErrorCode::Argument, "update: groups must be an array");
    Napi::Array ga = o.Get("groups").As<Napi::Array>();
    for (uint32_t i = 0; i < ga.Length(); ++i) {
      const Napi::Object g = ga.Get(i).As<Napi::Object>();
      ParamGroup pg;
      pg.vision = g.Get("vision").ToBoolean();
      if (pg.vision && !vision_) throw_js(env, ErrorCode::Argument, "update: a vision parameter, but the trainer has no vision tower");
      const ParamTable& t = pg.vision ? vision_->params() : llm_->params();
      pg.id = param_id(env, t, g.Get("name"));
      pg.lr = (float)arg_number(g, "lr");
      pg.weight_decay = (float)arg_number(g, "weightDecay");
      groups->push_back(pg);
    }
    const int64_t step = arg_int(o, "step", 1, 1LL << 40);
    const float lr_factor = (float)arg_number(o, "lrFactor"), clip = (float)arg_number(o, "clip");
    const float b1 = (float)arg_number(o, "beta1"), b2 = (float)arg_number(o, "beta2"), eps = (float)arg_number(o, "eps");
    return run(env, [keep, groups, step, lr_factor, clip, b1, b2, eps] { keep->update(*groups, step, lr_factor, clip, b1, b2, eps); },
               [](Napi::Env e) { return e.Undefined(); });
  });
}

Napi::Value TrainerWrap::State(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    trainer(env);
    const bool vis = info.Length() > 0 && info[0].ToBoolean();
    if (vis && !vision_) throw_js(env, ErrorCode::Argument, "state: the trainer has no vision tower");
    ParamTable& t = vis ? mutable_params(vision_) : mutable_params(llm_);
    const int id = param_id(env, t, info.Length() > 1 ? info[1] : env.Undefined());
    const std::string which = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "grad";
    if (which != "grad" && which != "m" && which != "v") throw_js(env, ErrorCode::Argument, "state: which must be 'grad', 'm' or 'v'");
    auto out = std::make_shared<std::vector<float>>();
    auto found = std::make_shared<bool>(false);
    ParamTable* tp = &t;
    auto engine = trainer_;
    auto keep_l = llm_;
    auto keep_v = vision_;
    return run(env,
               [tp, id, which, out, found, keep_l, keep_v, engine] {
                 engine->sync_state();  // a device engine's gradients and moments into the table
                 std::shared_lock<std::shared_mutex> lock(tp->mutex());
                 const float* g = which == "grad" ? tp->grads(id) : which == "m" ? tp->adam_m(id) : tp->adam_v(id);
                 if (!g) return;
                 *found = true;
                 out->assign(g, g + (*tp)[id].numel());
               },
               [out, found](Napi::Env e) -> Napi::Value {
                 if (!*found) return e.Null();
                 Napi::Float32Array a = Napi::Float32Array::New(e, out->size());
                 if (!out->empty()) std::memcpy(a.Data(), out->data(), out->size() * 4);
                 return a;
               });
  });
}

Napi::Value TrainerWrap::SetState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    trainer(env);
    const bool vis = info.Length() > 0 && info[0].ToBoolean();
    if (vis && !vision_) throw_js(env, ErrorCode::Argument, "setState: the trainer has no vision tower");
    ParamTable& t = vis ? mutable_params(vision_) : mutable_params(llm_);
    const int id = param_id(env, t, info.Length() > 1 ? info[1] : env.Undefined());
    const std::string which = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "";
    if (which != "value" && which != "m" && which != "v") throw_js(env, ErrorCode::Argument, "setState: which must be 'value', 'm' or 'v'");
    if (info.Length() < 4 || !info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw_js(env, ErrorCode::Argument, "setState: the values are a Float32Array");
    Napi::Float32Array a = info[3].As<Napi::Float32Array>();
    auto data = std::make_shared<std::vector<float>>(a.Data(), a.Data() + a.ElementLength());  // copied on the JS thread
    ParamTable* tp = &t;
    const char w = which == "value" ? 'w' : which[0];
    auto keep_l = llm_;
    auto keep_v = vision_;
    auto engine = trainer_;
    return run(env,
               [tp, id, w, data, keep_l, keep_v, engine] {
                 engine->sync_state();  // a device engine's newest state into the table first, then overwritten
                 restore_param_state(*tp, id, w, data->data(), (int64_t)data->size());
               },
               [](Napi::Env e) { return e.Undefined(); });
  });
}

namespace {
// MPI over the CPU engine's host gradient buffer
struct MpiReducer : GradReducer {
  int64_t timeout_ms;
  explicit MpiReducer(int64_t t) : timeout_ms(t) {}
  void allreduce(float* data, int64_t n, void*) override { mpi::allreduce(data, n, mpi::Type::F32, mpi::Op::Sum, timeout_ms); }
};
}  // namespace

Napi::Value TrainerWrap::AllreduceGrads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    trainer(env);
    const int64_t timeout = get_int(env, info.Length() > 0 ? info[0] : Napi::Number::New(env, 600000), "timeoutMs", 1, (int64_t)1 << 40);
    auto engine = trainer_;
    auto keep_l = llm_;
    auto keep_v = vision_;
    const bool on_device = llm_->on_device();
    const int device = device_index_;
    return run(env,
               [engine, keep_l, keep_v, timeout, on_device, device] {
                 if (on_device) {
                   engine->allreduce_grads(cuda_backend::nccl_reducer(device, timeout));  // device buffers over NCCL
                 } else {
                   MpiReducer r(timeout);
                   engine->allreduce_grads(r);
                 }
               },
               [](Napi::Env e) { return e.Undefined(); });
  });
}

namespace {
struct NamedParam { bool vision; int id; int root; };
std::vector<NamedParam> named_params(Napi::Env env, const Napi::Value& v, const std::shared_ptr<const Llm>& llm,
                                     const std::shared_ptr<const Vision>& vision, bool with_root) {
  if (!v.IsArray()) throw_js(env, ErrorCode::Argument, "a list of { vision, name } is expected");
  std::vector<NamedParam> out;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); ++i) {
    const Napi::Object o = a.Get(i).As<Napi::Object>();
    NamedParam p;
    p.vision = o.Get("vision").ToBoolean();
    if (p.vision && !vision) throw_js(env, ErrorCode::Argument, "a vision parameter, but the trainer has no vision tower");
    p.id = param_id(env, p.vision ? vision->params() : llm->params(), o.Get("name"));
    p.root = with_root ? (int)arg_int(o, "root", 0, 1 << 30) : 0;
    out.push_back(p);
  }
  return out;
}
}  // namespace

Napi::Value TrainerWrap::ShardOptimizer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    trainer(env);
    if (llm_->on_device()) throw_js(env, ErrorCode::Unsupported, "a sharded optimizer state (ZeRO-1) is for the CPU engine only");
    auto list = std::make_shared<std::vector<NamedParam>>(named_params(env, info.Length() ? info[0] : env.Undefined(), llm_, vision_, false));
    ParamTable* tables[2] = {&mutable_params(llm_), vision_ ? &mutable_params(vision_) : nullptr};
    auto keep_l = llm_;
    auto keep_v = vision_;
    return run(env,
               [tables, list, keep_l, keep_v] {
                 for (int k = 0; k < 2; ++k) {
                   if (!tables[k]) continue;
                   ParamTable& t = *tables[k];
                   std::unique_lock<std::shared_mutex> lock(t.mutex());
                   std::vector<bool> owned((size_t)t.size(), false);
                   for (const NamedParam& p : *list)
                     if (p.vision == (k == 1)) owned[(size_t)p.id] = true;
                   t.set_moment_owners(owned);
                 }
               },
               [](Napi::Env e) { return e.Undefined(); });
  });
}

Napi::Value TrainerWrap::BroadcastParams(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    trainer(env);
    auto list = std::make_shared<std::vector<NamedParam>>(named_params(env, info.Length() ? info[0] : env.Undefined(), llm_, vision_, true));
    const int64_t timeout = get_int(env, info.Length() > 1 ? info[1] : Napi::Number::New(env, 600000), "timeoutMs", 1, (int64_t)1 << 40);
    ParamTable* tables[2] = {&mutable_params(llm_), vision_ ? &mutable_params(vision_) : nullptr};
    auto keep_l = llm_;
    auto keep_v = vision_;
    return run(env,
               [tables, list, timeout, keep_l, keep_v] {
                 for (const NamedParam& p : *list) {
                   ParamTable& t = *tables[p.vision ? 1 : 0];
                   std::unique_lock<std::shared_mutex> lock(t.mutex());
                   float* v = t.values(p.id);
                   if (!v) throw Error(ErrorCode::Argument, t[p.id].name + " is not trainable");
                   mpi::bcast(v, t[p.id].numel() * 4, p.root, timeout);
                   t.touch();
                 }
               },
               [](Napi::Env e) { return e.Undefined(); });
  });
}

Napi::Value TrainerWrap::OptimizerBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    trainer(env);
    double b = (double)mutable_params(llm_).moment_bytes();
    if (vision_) b += (double)mutable_params(vision_).moment_bytes();
    return Napi::Number::New(env, b);
  });
}

Napi::Value TrainerWrap::DropoutStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    Trainer& t = trainer(env);
    return Napi::Number::New(env, (double)(t.dropout_seed + t.calls));
  });
}

Napi::Value TrainerWrap::SetCheckpoint(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    trainer(env).checkpoint = info.Length() > 0 && info[0].ToBoolean();
    return env.Undefined();
  });
}

Napi::Value TrainerWrap::SetLoraDropout(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    Trainer& t = trainer(env);
    const double p = info.Length() > 0 ? info[0].ToNumber().DoubleValue() : 0;
    if (!(p >= 0 && p < 1)) throw_js(env, ErrorCode::Argument, "LoRA dropout must be in [0, 1)");
    t.lora_dropout = (float)p;
    t.dropout_seed = (uint64_t)get_int(env, info.Length() > 1 ? info[1] : Napi::Number::New(env, 0), "seed", 0, 1LL << 53);
    t.calls = 0;
    return env.Undefined();
  });
}

Napi::Value TrainerWrap::Cancel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    if (trainer_) trainer_->cancel.request();  // callable while busy: that is its point
    return env.Undefined();
  });
}

Napi::Value TrainerWrap::SetLossRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    Trainer& t = trainer(env);
    t.loss_rows = get_int(env, info.Length() > 0 ? info[0] : Napi::Number::New(env, 0), "lossChunkRows", 0, 1LL << 30);
    return env.Undefined();
  });
}

Napi::Value TrainerWrap::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    if (busy_) throw_js(env, ErrorCode::Argument, "the trainer is busy: await the previous call first");
    trainer_.reset();
    llm_.reset();
    vision_.reset();
    return env.Undefined();
  });
}

}  // namespace napi
}  // namespace medllava
