// A training batch from JS, copied on the JS thread (workers never read JS memory):
//   { seqs: [{ tokens: Int32Array, labels: Int32Array, images?: [{ at, index }], weight? }], pixels?: Float32Array[] }
// Shared by NativeTrainer and the test addon. defines: parse_train_batch.
#pragma once
#include <napi.h>

#include <memory>
#include <string>

#include "../train/train_step.h"
#include "js_error.h"
#include "ops_args.h"

namespace medllava {
namespace napi {

inline std::shared_ptr<TrainBatch> parse_train_batch(Napi::Env env, const Napi::Value& v) {
  if (!v.IsObject()) throw_js(env, ErrorCode::Argument, "a batch must be an object { seqs, pixels? }");
  const Napi::Object o = v.As<Napi::Object>();
  auto batch = std::make_shared<TrainBatch>();
  if (!o.Get("seqs").IsArray()) throw_js(env, ErrorCode::Argument, "batch.seqs must be an array");
  Napi::Array seqs = o.Get("seqs").As<Napi::Array>();
  for (uint32_t i = 0; i < seqs.Length(); ++i) {
    if (!seqs.Get(i).IsObject()) throw_js(env, ErrorCode::Argument, "batch.seqs[" + std::to_string(i) + "] must be an object");
    const Napi::Object s = seqs.Get(i).As<Napi::Object>();
    TrainSequence q;
    const int32_t* tok = arg_array<int32_t>(s, "tokens", napi_int32_array, -1);
    const size_t n = s.Get("tokens").As<Napi::TypedArray>().ElementLength();
    const int32_t* lab = arg_array<int32_t>(s, "labels", napi_int32_array, -1);
    const size_t nl = s.Get("labels").As<Napi::TypedArray>().ElementLength();
    q.tokens.assign(tok, tok + n);
    q.labels.assign(lab, lab + nl);
    if (s.Has("weight")) q.weight = (float)arg_number(s, "weight");
    if (s.Get("images").IsArray()) {
      Napi::Array ims = s.Get("images").As<Napi::Array>();
      for (uint32_t k = 0; k < ims.Length(); ++k) {
        if (!ims.Get(k).IsObject()) throw_js(env, ErrorCode::Argument, "an image entry must be { at, index }");
        const Napi::Object im = ims.Get(k).As<Napi::Object>();
        q.images.push_back({arg_int(im, "at", 0, 1LL << 40), arg_int(im, "index", 0, 1LL << 40)});
      }
    }
    batch->seqs.push_back(std::move(q));
  }
  if (o.Get("pixels").IsArray()) {
    Napi::Array px = o.Get("pixels").As<Napi::Array>();
    for (uint32_t i = 0; i < px.Length(); ++i) {
      Napi::Object h = Napi::Object::New(env);
      h.Set("pixels", px.Get(i));
      const float* p = arg_array<float>(h, "pixels", napi_float32_array, -1);
      const size_t n = px.Get(i).As<Napi::TypedArray>().ElementLength();
      batch->pixels.emplace_back(p, p + n);
    }
  }
  return batch;
}

}  // namespace napi
}  // namespace medllava
