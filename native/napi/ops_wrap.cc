#include "ops_wrap.h"

#include <cmath>
#include <cstring>

#include "../cpu/ops_cpu.h"
#include "../cuda/backend.h"
#include "../ops/ops.h"
#include "op_harness.h"
#include "js_error.h"
#include "ops_args.h"

namespace medllava {
namespace napi {

namespace {
// cpuOp(name, args): one op of native/ops/op_list.h on the CPU (the harness: native/napi/op_harness.h)
Napi::Value CpuOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject()) throw_js(env, ErrorCode::Argument, "cpuOp(name, args)");
  JsOp j = parse_op(env, info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::Object>());
  CpuOps ops;
  return run_in_place(ops, j);
}

// cudaOp(name, args, device = 0): the same op on that CUDA device, its buffers copied there and back
// (cuda_backend::run_op); E_CUDA without a device, E_UNSUPPORTED in a build without CUDA
Napi::Value CudaOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject()) throw_js(env, ErrorCode::Argument, "cudaOp(name, args)");
  const int device = info.Length() > 2 && !info[2].IsUndefined() ? (int)get_int(env, info[2], "device", 0, 1023) : 0;
  JsOp j = parse_op(env, info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::Object>());
  cuda_backend::run_op(j.call, device);
  return j.result;
}

// sampleLogits(logits: Float32Array, options, history: Int32Array, rngState) -> { token, logprob, rngState }
Napi::Value SampleLogits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4) throw_js(env, ErrorCode::Argument, "sampleLogits(logits, options, history, rngState)");
  const Napi::TypedArray l = checked_typed(env, info[0], napi_float32_array, "logits");
  if (l.ElementLength() == 0) throw_js(env, ErrorCode::Argument, "logits is empty");
  const SampleOptions o = sample_options(env, info[1]);
  const Napi::TypedArray h = checked_typed(env, info[2], napi_int32_array, "history");
  uint32_t rng = (uint32_t)get_int(env, info[3], "rngState", 0, 0xffffffffLL);
  const SampleResult r = sample_cpu(reinterpret_cast<const float*>(typed_data(l)), (int64_t)l.ElementLength(), o,
                                    reinterpret_cast<const int32_t*>(typed_data(h)), (int64_t)h.ElementLength(), &rng);
  return sample_result(env, r, rng);
}
}  // namespace

void register_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("cpuOp", Napi::Function::New<guarded<CpuOp>>(env, "cpuOp"));
  exports.Set("cudaOp", Napi::Function::New<guarded<CudaOp>>(env, "cudaOp"));
  exports.Set("opList", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return op_list(info.Env()); }, "opList"));
  exports.Set("sampleLogits", Napi::Function::New<guarded<SampleLogits>>(env, "sampleLogits"));
}

}  // namespace napi
}  // namespace medllava
