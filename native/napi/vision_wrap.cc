#include "vision_wrap.h"

#include "js_error.h"
#include "native_object.h"

namespace medllava {
namespace napi {

namespace {
Ref ref(Napi::Env env, const Napi::Object& o, const char* key) { return tensor_ref(env, o.Get(key), std::string("tensors.") + key); }
// an optional tensor: absent (undefined) → an empty Ref
Ref opt(Napi::Env env, const Napi::Object& o, const char* key) { return o.Get(key).IsUndefined() ? Ref{} : ref(env, o, key); }
}  // namespace

Napi::Function VisionWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeVision",
                     {StaticMethod<&VisionWrap::Load>("load"), InstanceMethod<&VisionWrap::Encode>("encode"),
                      InstanceMethod<&VisionWrap::Dispose>("dispose"), InstanceAccessor<&VisionWrap::GetTokens>("tokens")});
}

VisionWrap::VisionWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<VisionWrap>(info) {
  vision_ = unwrap_external<Vision>(info, "NativeVision is created with NativeVision.load(config, tensors)");
}

// NativeVision.load(config, tensors) -> Promise<NativeVision>
Napi::Value VisionWrap::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsObject()) throw_js(env, ErrorCode::Argument, "NativeVision.load(config, tensors)");
    Napi::Object c = info[0].As<Napi::Object>(), t = info[1].As<Napi::Object>();
    VisionConfig cfg;
    cfg.image_size = (int64_t)config_number(env, c, "imageSize");
    cfg.patch = (int64_t)config_number(env, c, "patchSize");
    cfg.hidden = (int64_t)config_number(env, c, "hidden");
    cfg.layers = (int64_t)config_number(env, c, "layers");
    cfg.heads = (int64_t)config_number(env, c, "heads");
    cfg.ffn = (int64_t)config_number(env, c, "ffn");
    cfg.eps = (float)config_number(env, c, "layerNormEps");
    cfg.select_layer = (int64_t)config_number(env, c, "selectLayer");
    cfg.out_dim = (int64_t)config_number(env, c, "outDim");
    cfg.act = c.Get("activation").ToString().Utf8Value() == "gelu" ? Activation::Gelu : Activation::QuickGelu;
    cfg.keep_cls = c.Get("selectFeature").ToString().Utf8Value() == "cls_patch";
    cfg.projector_mlp = c.Get("projector").ToString().Utf8Value() == "mlp2x_gelu";
    VisionTensorNames n;
    n.patch_embed = ref(env, t, "patchEmbed");
    n.patch_bias = opt(env, t, "patchBias");
    n.class_embed = ref(env, t, "classEmbed");
    n.pos_embed = ref(env, t, "posEmbed");
    n.pre_ln_w = opt(env, t, "preLnW");
    n.pre_ln_b = n.pre_ln_w.second.empty() ? medllava::Ref{} : ref(env, t, "preLnB");
    n.proj0_w = ref(env, t, "proj0W");
    n.proj0_b = ref(env, t, "proj0B");
    if (cfg.projector_mlp) {
      n.proj2_w = ref(env, t, "proj2W");
      n.proj2_b = ref(env, t, "proj2B");
    }
    if (!t.Get("layers").IsArray()) throw_js(env, ErrorCode::Argument, "tensors.layers must be an array");
    Napi::Array layers = t.Get("layers").As<Napi::Array>();
    for (uint32_t i = 0; i < layers.Length(); ++i) {
      if (!layers.Get(i).IsObject()) throw_js(env, ErrorCode::Argument, "tensors.layers[i] must be an object");
      Napi::Object L = layers.Get(i).As<Napi::Object>();
      VisionTensorNames::Layer y;
      const bool fused = !L.Get("qkvW").IsUndefined();
      if (fused) {
        y.qkv_w = ref(env, L, "qkvW");
        y.qkv_b = ref(env, L, "qkvB");
      } else {
        y.q_w = ref(env, L, "qW"), y.q_b = ref(env, L, "qB"), y.k_w = ref(env, L, "kW"), y.k_b = ref(env, L, "kB");
        y.v_w = ref(env, L, "vW"), y.v_b = ref(env, L, "vB");
      }
      y.ln1_w = ref(env, L, "ln1W"), y.ln1_b = ref(env, L, "ln1B"), y.o_w = ref(env, L, "oW"), y.o_b = ref(env, L, "oB");
      y.ln2_w = ref(env, L, "ln2W"), y.ln2_b = ref(env, L, "ln2B"), y.fc_a_w = ref(env, L, "fcAW"), y.fc_a_b = ref(env, L, "fcAB");
      y.fc_b_w = ref(env, L, "fcBW"), y.fc_b_b = ref(env, L, "fcBB");
      y.ls1 = opt(env, L, "ls1");
      y.ls2 = y.ls1.second.empty() ? medllava::Ref{} : ref(env, L, "ls2");
      n.layers.push_back(std::move(y));
    }
    return load_async<Vision>(env, info.This().As<Napi::Function>(), [=] { return std::make_shared<const Vision>(cfg, n); });
  });
}

// encode(pixels: Float32Array of 3·S·S) -> Promise<Float32Array (tokens × outDim)>
Napi::Value VisionWrap::Encode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    if (!vision_) throw_js(env, ErrorCode::Argument, "this vision tower has been disposed");
    if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw_js(env, ErrorCode::Argument, "encode(pixels: Float32Array)");
    Napi::Float32Array px = info[0].As<Napi::Float32Array>();
    const int64_t S = vision_->config().image_size;
    if ((int64_t)px.ElementLength() != 3 * S * S)
      throw_js(env, ErrorCode::Shape, "pixels must hold 3 × " + std::to_string(S) + " × " + std::to_string(S) + " values");
    Napi::Float32Array out = Napi::Float32Array::New(env, (size_t)(vision_->tokens() * vision_->config().out_dim));
    auto pins = std::make_shared<std::vector<Napi::ObjectReference>>();
    pins->push_back(Napi::Persistent(px.As<Napi::Object>()));
    pins->push_back(Napi::Persistent(out.As<Napi::Object>()));
    auto v = vision_;
    const float* in = px.Data();
    float* o = out.Data();
    return PromiseWorker::Start(env, [=] { v->encode(in, o); }, [pins](Napi::Env) { return (*pins)[1].Value(); });
  });
}

Napi::Value VisionWrap::GetTokens(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), vision_ ? (double)vision_->tokens() : 0);
}

Napi::Value VisionWrap::Dispose(const Napi::CallbackInfo& info) {
  vision_.reset();
  return info.Env().Undefined();
}

}  // namespace napi
}  // namespace medllava
