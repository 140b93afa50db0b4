// The addon's module: free functions and classes, exactly as lib/native.ts declares them.
// defines: the module init — NativeLlm / NativeLlmContext (llm_wrap.cc), NativeVision (vision_wrap.cc),
// NativeLinear (linear_wrap.cc), the file formats (formats.cc), cpuOp / cudaOp / opList / sampleLogits
// (ops_wrap.cc), getBackendInfo and the dispatch / thread / CUDA switches (here).
#include <napi.h>

#include <cstdlib>
#include <cstring>

#include "../core/cpu_features.h"
#include "../core/thread_pool.h"
#include "../cuda/backend.h"
#include "../ops/ops.h"
#include "formats.h"
#include "js_error.h"
#include "linear_wrap.h"
#include "ops_wrap.h"
#include "llm_wrap.h"
#include "image_wrap.h"
#include "trainer_wrap.h"
#include "mpi_wrap.h"
#include "vision_wrap.h"

namespace medllava {
namespace napi {
namespace {

Napi::Object cuda_info_object(Napi::Env env, const cuda_backend::Info& ci) {
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("compiled", ci.compiled);
  cuda.Set("available", ci.available);
  if (!ci.available) cuda.Set("reason", ci.reason);
  Napi::Array devices = Napi::Array::New(env, ci.devices.size());
  for (size_t i = 0; i < ci.devices.size(); ++i) {
    Napi::Object d = Napi::Object::New(env);
    d.Set("name", ci.devices[i].name);
    d.Set("memoryBytes", (double)ci.devices[i].memory_bytes);
    d.Set("computeCapability", ci.devices[i].compute_capability);
    devices.Set((uint32_t)i, d);
  }
  cuda.Set("devices", devices);
  return cuda;
}

Napi::Value GetBackendInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("threads", ThreadPool::instance().threads());
  auto names = cpu_feature_names();
  Napi::Array features = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); ++i) features.Set((uint32_t)i, names[i]);
  cpu.Set("features", features);
  cpu.Set("dispatch", cpu_dispatch_name());
  out.Set("cpu", cpu);
  out.Set("cuda", cuda_info_object(env, cuda_backend::info()));
  return out;
}

// Whether CUDA code is compiled in, without touching the driver.
Napi::Value CudaCompiled(const Napi::CallbackInfo& info) {
#if defined(MEDLLAVA_WITH_CUDA)
  return Napi::Boolean::New(info.Env(), true);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

Napi::Value CudaDisable(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw_js(info.Env(), ErrorCode::Argument, "cudaDisable(reason: string)");
  cuda_backend::disable(info[0].As<Napi::String>().Utf8Value());
  return info.Env().Undefined();
}

Napi::Value SetCpuDispatch(const Napi::CallbackInfo& info) {
  const std::string mode = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  if (mode == "auto") set_cpu_dispatch(CpuDispatch::Auto);
  else if (mode == "avx512-novnni") set_cpu_dispatch(CpuDispatch::Avx512NoVnni);
  else if (mode == "avx2") set_cpu_dispatch(CpuDispatch::Avx2);
  else if (mode == "scalar") set_cpu_dispatch(CpuDispatch::Scalar);
  else throw_js(info.Env(), ErrorCode::Argument, "setCpuDispatch(mode): mode must be 'auto', 'avx512-novnni', 'avx2' or 'scalar', got '" + mode + "'");
  return info.Env().Undefined();
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  const int64_t n = get_int(info.Env(), info.Length() ? info[0] : info.Env().Undefined(), "threads", 1, 1024);
  ThreadPool::instance().set_threads((int)n);
  return info.Env().Undefined();
}

Napi::Value MeasureFmaPeak(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int threads = (int)get_int(env, info.Length() > 0 ? info[0] : env.Undefined(), "threads", 1, 1024);
  const int ms = (int)get_int(env, info.Length() > 1 ? info[1] : env.Undefined(), "ms", 1, 60000);
  auto result = std::make_shared<double>(0);
  return PromiseWorker::Start(
      env, [=] { *result = measure_fma_peak(threads, ms); },
      [result](Napi::Env e) { return Napi::Number::New(e, *result); });
}

Napi::Value MeasureReadBandwidth(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int threads = (int)get_int(env, info.Length() > 0 ? info[0] : env.Undefined(), "threads", 1, 1024);
  const int64_t bytes = get_int(env, info.Length() > 1 ? info[1] : env.Undefined(), "bytes", 1 << 20, (int64_t)1 << 40);
  auto result = std::make_shared<double>(0);
  return PromiseWorker::Start(
      env, [=] { *result = measure_read_bandwidth(threads, bytes); },
      [result](Napi::Env e) { return Napi::Number::New(e, *result); });
}

// cudaBenchKernels(device = 0) -> Promise<{ peaks: {bandwidthGBs, fp32TFlops, tensorTFlops}, kernels: [{kernel, shape, ms, bytes, flops}] }>
Napi::Value CudaBenchKernels(const Napi::CallbackInfo& info) {
  auto peaks = std::make_shared<cuda_backend::DevicePeaks>();
  auto rows = std::make_shared<std::vector<cuda_backend::KernelBench>>();
  const int device = info.Length() > 0 && !info[0].IsUndefined() ? (int)get_int(info.Env(), info[0], "device", 0, 1023) : 0;
  return PromiseWorker::Start(
      info.Env(), [=] { *rows = cuda_backend::bench_kernels(*peaks, device); },
      [=](Napi::Env e) {
        Napi::Object r = Napi::Object::New(e), p = Napi::Object::New(e);
        p.Set("bandwidthGBs", peaks->bandwidth_gbs);
        p.Set("fp32TFlops", peaks->fp32_tflops);
        p.Set("tensorTFlops", peaks->tensor_tflops);
        Napi::Array ks = Napi::Array::New(e, rows->size());
        for (size_t i = 0; i < rows->size(); ++i) {
          Napi::Object k = Napi::Object::New(e);
          k.Set("kernel", (*rows)[i].kernel);
          k.Set("shape", (*rows)[i].shape);
          k.Set("ms", (*rows)[i].ms);
          k.Set("bytes", (*rows)[i].bytes);
          k.Set("flops", (*rows)[i].flops);
          ks.Set((uint32_t)i, k);
        }
        r.Set("peaks", p);
        r.Set("kernels", ks);
        return r;
      });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  const char* env_cuda = std::getenv("MEDLLAVA_CUDA");
  if (env_cuda && std::strcmp(env_cuda, "off") == 0) cuda_backend::disable("disabled by MEDLLAVA_CUDA=off");
  exports.Set("getBackendInfo", Napi::Function::New<guarded<GetBackendInfo>>(env, "getBackendInfo"));
  exports.Set("cudaCompiled", Napi::Function::New<guarded<CudaCompiled>>(env, "cudaCompiled"));
  exports.Set("cudaDisable", Napi::Function::New<guarded<CudaDisable>>(env, "cudaDisable"));
  exports.Set("setCpuDispatch", Napi::Function::New<guarded<SetCpuDispatch>>(env, "setCpuDispatch"));
  exports.Set("setThreads", Napi::Function::New<guarded<SetThreads>>(env, "setThreads"));
  exports.Set("measureFmaPeak", Napi::Function::New<guarded<MeasureFmaPeak>>(env, "measureFmaPeak"));
  exports.Set("measureReadBandwidth", Napi::Function::New<guarded<MeasureReadBandwidth>>(env, "measureReadBandwidth"));
  exports.Set("cudaBenchKernels", Napi::Function::New<guarded<CudaBenchKernels>>(env, "cudaBenchKernels"));
  exports.Set("NativeLinear", LinearWrap::Define(env));
  register_formats(env, exports);
  exports.Set("NativeLlm", LlmWrap::Define(env));
  exports.Set("NativeLlmContext", LlmContextWrap::Define(env));
  exports.Set("NativeVision", VisionWrap::Define(env));
  exports.Set("NativeTrainer", TrainerWrap::Define(env));
  exports.Set("mpi", MpiObject(env));
  exports.Set("NativeImage", ImageWrap::Define(env));
  register_ops(env, exports);
  return exports;
}

}  // namespace
}  // namespace napi
}  // namespace medllava

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return medllava::napi::Init(env, exports); }
NODE_API_MODULE(medllava, InitModule)
