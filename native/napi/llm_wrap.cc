#include "llm_wrap.h"

#include "../cuda/backend.h"
#include "llm_args.h"
#include "ops_args.h"

#include <algorithm>
#include <cstring>

#include "addon_data.h"
#include "image_wrap.h"
#include "js_error.h"
#include "params_wrap.h"
#include "native_object.h"

namespace medllava {
namespace napi {

namespace {
// The NativeLlmContext constructor of this env (addons may load in several worker threads, each with
// its own env): kept in the env's instance data, the one slot this addon uses.
Napi::Function context_ctor(Napi::Env env) { return addon_data(env).context.Value(); }

}  // namespace

Napi::Function LlmWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeLlm",
                     {StaticMethod<&LlmWrap::Load>("load"), InstanceMethod<&LlmWrap::CreateContext>("createContext"),
                      InstanceMethod<&LlmWrap::Dispose>("dispose"),
                      InstanceMethod<&LlmWrap::Parameters>("parameters"), InstanceMethod<&LlmWrap::SetTrainable>("setTrainable"),
                      InstanceMethod<&LlmWrap::ReadParameter>("readParameter"), InstanceMethod<&LlmWrap::WriteParameter>("writeParameter"),
                      InstanceMethod<&LlmWrap::AddLora>("addLora")});
}

LlmWrap::LlmWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LlmWrap>(info) {
  llm_ = unwrap_external<Llm>(info, "NativeLlm is created with NativeLlm.load(config, tensors)");
}

// NativeLlm.load(config, tensors) -> Promise<NativeLlm>: maps the files and checks every shape off the JS thread
Napi::Value LlmWrap::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsObject())
      throw_js(env, ErrorCode::Argument, "NativeLlm.load(config, tensors)");
    Napi::Object c = info[0].As<Napi::Object>(), t = info[1].As<Napi::Object>();
    LlmConfig cfg;
    LlmTensorNames names;
    parse_llm_args(env, c, t, cfg, names);
    const std::string device = c.Get("device").IsString() ? c.Get("device").As<Napi::String>().Utf8Value() : "cpu";
    if (device != "cpu" && device != "cuda") throw_js(env, ErrorCode::Argument, "config.device must be 'cpu' or 'cuda'");
    const int device_index = c.Has("deviceIndex") && !c.Get("deviceIndex").IsUndefined()
                                 ? (int)get_int(env, c.Get("deviceIndex"), "config.deviceIndex", 0, 1023)
                                 : 0;
    return load_async<Llm>(env, info.This().As<Napi::Function>(), [=]() -> std::shared_ptr<const Llm> {
      auto m = std::make_shared<Llm>(cfg, names);
      if (device == "cuda") m->attach_device(cuda_backend::load_llm(*m, device_index));
      return m;
    });
  });
}

Napi::Value LlmWrap::CreateContext(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    if (!llm_) throw_js(env, ErrorCode::Argument, "this model has been disposed");
    // createContext({ capacity }): a KV cache of `capacity` positions (default, or more than the
    // model's context: the whole context)
    int64_t capacity = llm_->config().context;
    if (info.Length() > 0 && !info[0].IsUndefined()) {
      if (!info[0].IsObject()) throw_js(env, ErrorCode::Argument, "createContext(options): options must be an object");
      const Napi::Value c = info[0].As<Napi::Object>().Get("capacity");
      if (!c.IsUndefined()) capacity = std::min(capacity, get_int(env, c, "options.capacity", 1, (int64_t)1 << 40));
    }
    return context_ctor(env).New({wrap_external<Llm>(env, llm_), Napi::Number::New(env, (double)capacity)});
  });
}

Napi::Value LlmWrap::Dispose(const Napi::CallbackInfo& info) {
  llm_.reset();  // contexts keep their own reference; the mapping goes when the last one does
  return info.Env().Undefined();
}

Napi::Function LlmContextWrap::Define(Napi::Env env) {
  Napi::Function f = DefineClass(env, "NativeLlmContext",
                                 {InstanceMethod<&LlmContextWrap::Eval>("eval"), InstanceMethod<&LlmContextWrap::EvalSample>("evalSample"),
                                  InstanceMethod<&LlmContextWrap::Reset>("reset"),
                                  InstanceMethod<&LlmContextWrap::Truncate>("truncate"),
                                  InstanceMethod<&LlmContextWrap::Dispose>("dispose"),
                                  InstanceAccessor<&LlmContextWrap::GetNPast>("nPast"),
                                  InstanceAccessor<&LlmContextWrap::GetCapacity>("capacity")});
  addon_data(env).context = Napi::Persistent(f);
  return f;
}

LlmContextWrap::LlmContextWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LlmContextWrap>(info) {
  const char* how = "contexts are created with NativeLlm.createContext()";
  if (info.Length() != 2 || !info[0].IsExternal() || !info[1].IsNumber()) throw make_error(info.Env(), "E_ARGUMENT", how);
  llm_ = *info[0].As<Napi::External<std::shared_ptr<const Llm>>>().Data();
  capacity_ = (int64_t)info[1].As<Napi::Number>().DoubleValue();
  cache_ = std::make_shared<Llm::Cache>();  // empty: the first eval allocates it off the JS thread
}

LlmContextWrap::~LlmContextWrap() {
  if (reported_) Napi::MemoryManagement::AdjustExternalMemory(Env(), -reported_);
}

// Tells V8 how many bytes the cache holds, so garbage collection feels them (once, after allocation).
void LlmContextWrap::ReportMemory(Napi::Env env) {
  if (reported_ || !cache_ || cache_->bytes == 0) return;
  reported_ = (int64_t)cache_->bytes;
  Napi::MemoryManagement::AdjustExternalMemory(env, reported_);
}

// eval(tokens: Int32Array, { allLogits?: boolean, images?: [{ at, image: NativeImage, row?, rows? }],
//   embeddings?: Float32Array }) -> Promise<Float32Array>. `images`: rows [row, row + rows) of each image
//   go at positions [at, at + rows) (tokens < 0 there), read natively by the worker; `embeddings`
//   (tokens × hidden), the older dense form, gives the rows of every token < 0.
Napi::Value LlmContextWrap::Eval(const Napi::CallbackInfo& info) { return Run(info, false); }

// evalSample(tokens, { embeddings?, sampling?, history?: Int32Array, rngState? }) -> Promise<{ token, logprob, rngState }>:
// the forward, then the next token chosen natively from the last logits (native/cpu/sample.cc) —
// the vocabulary's logits never cross to JS
Napi::Value LlmContextWrap::EvalSample(const Napi::CallbackInfo& info) { return Run(info, true); }

Napi::Value LlmContextWrap::Run(const Napi::CallbackInfo& info, bool sample) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    if (!cache_) throw_js(env, ErrorCode::Argument, "this context has been disposed");
    if (busy_) throw_js(env, ErrorCode::Argument, "an eval is already running on this context; await it first");
    if (info.Length() < 1) throw_js(env, ErrorCode::Argument, "eval(tokens: Int32Array, options)");
    // the worker reads copies: JS may detach or transfer its buffers while the eval runs
    auto tokens = copy_typed<int32_t>(env, info[0], napi_int32_array, "eval(tokens): tokens");
    const int64_t T = (int64_t)tokens->size();
    if (T == 0) throw_js(env, ErrorCode::Argument, "eval needs at least one token");
    if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsObject())
      throw_js(env, ErrorCode::Argument, "eval(tokens, options): options must be an object, got " + js_type_name(info[1]));
    Napi::Object opts = info.Length() > 1 && info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
    const bool all = !sample && opts.Get("allLogits").ToBoolean();
    const int64_t D = llm_->config().hidden;
    std::shared_ptr<std::vector<float>> emb;
    RowSpans spans;
    std::vector<std::shared_ptr<const ImageRows>> held;  // the images the spans point into, kept for the worker
    if (!opts.Get("embeddings").IsUndefined()) {
      emb = copy_typed<float>(env, opts.Get("embeddings"), napi_float32_array, "eval options.embeddings (tokens × hidden)", T * D);
      spans = spans_from_dense(tokens->data(), T, emb->data(), D);
    }
    if (!opts.Get("images").IsUndefined()) {
      if (!opts.Get("images").IsArray()) throw_js(env, ErrorCode::Argument, "eval options.images must be an array");
      if (emb) throw_js(env, ErrorCode::Argument, "eval takes options.images or options.embeddings, not both");
      Napi::Array a = opts.Get("images").As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); ++i) {
        const std::string what = "eval options.images[" + std::to_string(i) + "]";
        if (!a.Get(i).IsObject()) throw_js(env, ErrorCode::Argument, what + " must be { at, image, row?, rows? }");
        const Napi::Object e = a.Get(i).As<Napi::Object>();
        auto img = ImageWrap::from(env, e.Get("image"), what + ".image");
        if (img->width != D)
          throw_js(env, ErrorCode::Shape, what + ".image has rows of " + std::to_string(img->width) + ", the model's width is " + std::to_string(D));
        const int64_t at = get_int(env, e.Get("at"), (what + ".at").c_str(), 0, T - 1);
        const int64_t row = e.Get("row").IsUndefined() ? 0 : get_int(env, e.Get("row"), (what + ".row").c_str(), 0, img->rows);
        const int64_t count = e.Get("rows").IsUndefined() ? img->rows - row : get_int(env, e.Get("rows"), (what + ".rows").c_str(), 0, img->rows - row);
        spans.push_back({at, count, img->data.data() + row * D});
        held.push_back(std::move(img));
      }
    }
    SampleOptions so;
    auto history = std::make_shared<std::vector<int32_t>>();
    auto rng = std::make_shared<uint32_t>(0);
    auto picked = std::make_shared<SampleResult>();
    if (sample) {
      so = sample_options(env, opts.Get("sampling"));
      if (!opts.Get("history").IsUndefined()) history = copy_typed<int32_t>(env, opts.Get("history"), napi_int32_array, "evalSample options.history");
      if (!opts.Get("rngState").IsUndefined()) *rng = (uint32_t)get_int(env, opts.Get("rngState"), "rngState", 0, 0xffffffffLL);
    }
    const int64_t V = llm_->config().vocab;
    // sampling: the logits stay in a worker-side buffer; eval: `out` is ours until the promise resolves
    auto logits = sample ? std::make_shared<std::vector<float>>((size_t)V) : nullptr;
    Napi::Float32Array out = sample ? Napi::Float32Array() : Napi::Float32Array::New(env, (size_t)((all ? T : 1) * V));
    auto pins = std::make_shared<std::vector<Napi::ObjectReference>>();
    if (!sample) pins->push_back(Napi::Persistent(out.As<Napi::Object>()));
    pins->push_back(Napi::Persistent(Value()));
    busy_ = true;
    auto llm = llm_;
    auto cache = cache_;
    const int64_t capacity = capacity_;
    float* op = sample ? logits->data() : out.Data();
    return PromiseWorker::Start(
        env,
        [=] {
          (void)logits;  // held by this closure: `op` points into it while sampling
          if (cache->capacity == 0) {  // first eval: allocate and zero the KV cache here, off the JS thread
            const int64_t n_past = cache->n_past;
            *cache = llm->new_cache(capacity);
            cache->n_past = n_past;
          }
          (void)emb, (void)held;  // the spans point into these, held by this closure
          llm->forward(*cache, tokens->data(), T, all, op, spans);
          if (sample) *picked = sample_cpu(op, V, so, history->data(), (int64_t)history->size(), rng.get());
        },
        [pins, sample, picked, rng](Napi::Env e) -> Napi::Value {
          if (sample) return sample_result(e, *picked, *rng);
          return (*pins)[0].Value();
        },
        [this, env] {
          busy_ = false;
          ReportMemory(env);
        });
  });
}

Napi::Value LlmContextWrap::Reset(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (busy_) throw make_error(env, "E_ARGUMENT", "cannot reset while an eval is running");
  if (cache_) cache_->n_past = 0;
  return env.Undefined();
}

// truncate(n): forget every cached position from n on (a prompt sharing the first n tokens continues from there)
Napi::Value LlmContextWrap::Truncate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    if (busy_) throw_js(env, ErrorCode::Argument, "cannot truncate while an eval is running");
    const int64_t n = get_int(env, info.Length() ? info[0] : env.Undefined(), "n", 0, (int64_t)1 << 40);
    if (cache_ && n < cache_->n_past) cache_->n_past = n;
    return env.Undefined();
  });
}

Napi::Value LlmContextWrap::GetNPast(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cache_ ? (double)cache_->n_past : 0);
}

Napi::Value LlmContextWrap::GetCapacity(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), (double)capacity_); }

Napi::Value LlmContextWrap::Dispose(const Napi::CallbackInfo& info) {
  // an eval in flight holds its own reference to the cache, which goes when it ends; otherwise the
  // cache is freed on the worker pool (unmapping a large cache takes tens of ms: not on the JS thread)
  if (cache_ && cache_.use_count() == 1 && cache_->bytes >= ((size_t)1 << 20)) {
    PromiseWorker::Start(info.Env(), [c = std::move(cache_)]() mutable { c.reset(); }, [](Napi::Env e) { return e.Undefined(); });
  }
  cache_.reset();
  llm_.reset();
  if (reported_) Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -reported_);
  reported_ = 0;
  return info.Env().Undefined();
}

// the parameter table: parameters(), setTrainable(names, on?), readParameter(name), writeParameter(name, values, offset?)
#define MEDLLAVA_PARAMS_METHOD(Method, body)                                                              \
  Napi::Value LlmWrap::Method(const Napi::CallbackInfo& info) {                                             \
    Napi::Env env = info.Env();                                                                          \
    return guard(env, [&]() -> Napi::Value {                                                             \
      if (!llm_) throw_js(env, ErrorCode::Argument, "this NativeLlm has been disposed");                       \
      return body;                                                                                       \
    });                                                                                                  \
  }
MEDLLAVA_PARAMS_METHOD(Parameters, params_list(env, llm_))
MEDLLAVA_PARAMS_METHOD(SetTrainable, params_set_trainable(info, llm_))
MEDLLAVA_PARAMS_METHOD(ReadParameter, params_read(info, llm_))
MEDLLAVA_PARAMS_METHOD(WriteParameter, params_write(info, llm_))

// addLora({ targets: string[], r, alpha, seed? }) -> Promise<number> (the pairs added): Llm::add_lora
Napi::Value LlmWrap::AddLora(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    if (!llm_) throw_js(env, ErrorCode::Argument, "this model has been disposed");
    if (info.Length() < 1 || !info[0].IsObject() || !info[0].As<Napi::Object>().Get("targets").IsArray())
      throw_js(env, ErrorCode::Argument, "addLora({ targets: string[], r, alpha, seed? })");
    const Napi::Object o = info[0].As<Napi::Object>();
    auto targets = std::make_shared<std::vector<std::string>>();
    const Napi::Array t = o.Get("targets").As<Napi::Array>();
    for (uint32_t i = 0; i < t.Length(); ++i) targets->push_back(t.Get(i).ToString().Utf8Value());
    const int64_t r = arg_int(o, "r", 1, 1 << 16);
    const double alpha = arg_number(o, "alpha");
    const int64_t seed = o.Has("seed") ? arg_int(o, "seed", 0, 1LL << 53) : 0;
    auto llm = llm_;
    auto pairs = std::make_shared<int>(0);
    return PromiseWorker::Start(
        env, [llm, targets, r, alpha, seed, pairs] { *pairs = const_cast<Llm&>(*llm).add_lora(*targets, r, (float)alpha, (uint64_t)seed); },
        [pairs](Napi::Env e) { return Napi::Number::New(e, *pairs); });
  });
}
#undef MEDLLAVA_PARAMS_METHOD

}  // namespace napi
}  // namespace medllava
