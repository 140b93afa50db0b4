// medllava_simt.node: the test-only addon that runs native/cuda kernels under the SIMT emulator.
// Never shipped (prebuilds hold medllava.node only); test/ loads it from build/test/.
#include <napi.h>

#include <cmath>
#include <cstring>
#include <atomic>
#include <map>
#include <shared_mutex>
#include <memory>
#include <system_error>
#include <vector>

#include "../../test/native/simt_selftest.cuh"
#include "../core/dtype.h"
#include "../cpu/ops_cpu.h"
#include "../cuda/matmul.cuh"  // defines: matmul_tiled_kernel, matmul_wmma_kernel, matmul_launch
#include "../cuda/bench.cuh"        // defines: peak_fma_kernel, peak_wmma_kernel
#include "../cuda/llm_device.cuh"   // defines: DeviceMemory, LlmDevice
#include "../cuda/kernels.cuh"  // defines: every op kernel and its launcher
#include "../cuda/vision_device.cuh"  // defines: VisionDevice
#include "../napi/llm_args.h"
#include "../napi/vision_args.h"
#include "../napi/js_error.h"
#include "../napi/op_harness.h"
#include "../napi/train_args.h"
#include "../train/train_step.h"
#include "../cuda/train_device.cuh"  // defines: DeviceTrainer
#include "../napi/ops_args.h"
#include "simt.h"

namespace medllava {
namespace napi {
namespace {

using SelfTest = void (*)(const float*, void*, int, int);
const std::map<std::string, SelfTest>& self_tests() {
  namespace st = cuda::simt_selftest;
  static const std::map<std::string, SelfTest> m = {
      {"warp_sum", st::warp_sum},
      {"shfl_variants", st::shfl_variants},
      {"votes", st::votes},
      {"atomics", st::atomics},
      {"reverse_dynamic", st::reverse_dynamic},
      {"read_before_write", st::read_before_write},
      {"block_sum", st::block_sum},
      {"wmma_tile", st::wmma_tile},
      {"bad_exited_lane", st::bad_exited_lane},
      {"bad_divergent_barrier", st::bad_divergent_barrier},
      {"bad_barrier_sites", st::bad_barrier_sites},
      {"bad_deadlock", st::bad_deadlock},
      {"bad_missing_lanes", st::bad_missing_lanes},
      {"bad_wmma_divergent", st::bad_wmma_divergent},
  };
  return m;
}

dim3 get_dim3(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!v.IsArray()) throw_js(env, ErrorCode::Argument, std::string(what) + " must be [x, y, z]");
  Napi::Array a = v.As<Napi::Array>();
  unsigned d[3] = {1, 1, 1};
  for (uint32_t i = 0; i < a.Length() && i < 3; ++i) d[i] = (unsigned)get_int(env, a.Get(i), what, 0, 0xffffffffLL);
  return dim3(d[0], d[1], d[2]);
}

Napi::Float32Array float32_arg(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw_js(env, ErrorCode::Argument, std::string(what) + " must be a Float32Array, got " + js_type_name(v));
  return v.As<Napi::Float32Array>();
}

struct Pins {
  std::vector<Napi::ObjectReference> refs;
  void pin(const Napi::Value& v) { refs.push_back(Napi::Persistent(v.As<Napi::Object>())); }
};

// run(name, input: Float32Array, outWords, grid, block, smemBytes, p0, p1, init: 'nan' | 'zero')
Napi::Value Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 9 || !info[0].IsString()) throw_js(env, ErrorCode::Argument, "run(name, input, outWords, grid, block, smem, p0, p1, init)");
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  auto it = self_tests().find(name);
  if (it == self_tests().end()) throw_js(env, ErrorCode::Argument, "no self-test kernel named '" + name + "'");
  Napi::Float32Array input = float32_arg(env, info[1], "input");
  const int64_t words = get_int(env, info[2], "outWords", 1, 1 << 24);
  const dim3 grid = get_dim3(env, info[3], "grid"), block = get_dim3(env, info[4], "block");
  const size_t smem = (size_t)get_int(env, info[5], "smem", 0, 1 << 20);
  const int p0 = (int)get_int(env, info[6], "p0", -(1LL << 31), (1LL << 31) - 1);
  const int p1 = (int)get_int(env, info[7], "p1", -(1LL << 31), (1LL << 31) - 1);
  const bool zero = info[8].IsString() && info[8].As<Napi::String>().Utf8Value() == "zero";
  Napi::Float32Array out = Napi::Float32Array::New(env, (size_t)words);
  std::memset(out.Data(), zero ? 0 : 0xff, (size_t)words * 4);  // 0xff bytes: NaN, unwritten shows
  auto pins = std::make_shared<Pins>();
  pins->pin(input);
  pins->pin(out);
  const float* in = input.Data();
  void* o = out.Data();
  SelfTest kernel = it->second;
  return PromiseWorker::Start(
      env, [=] { simt::launch(grid, block, smem, kernel, in, o, p0, p1); },
      [pins](Napi::Env) { return pins->refs[1].Value(); });
}

// matmul(a, w, wType, bias | null, M, N, K, activation, kernel: 'auto' | 'tiled' | 'tensor')
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 9) throw_js(env, ErrorCode::Argument, "matmul(a, w, wType, bias, M, N, K, activation, kernel)");
  Napi::Float32Array a = float32_arg(env, info[0], "a");
  const DType wt = parse_dtype(info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "");
  if (!info[1].IsTypedArray()) throw_js(env, ErrorCode::Argument, "w must be a TypedArray");
  Napi::TypedArray w = info[1].As<Napi::TypedArray>();
  const int64_t M = get_int(env, info[4], "M", 0, 1 << 24), N = get_int(env, info[5], "N", 1, 1 << 24),
                K = get_int(env, info[6], "K", 1, 1 << 24);
  const bool blocks = dtype_is_block(wt);
  if (blocks && K % dtype_block_elems(wt)) throw_js(env, ErrorCode::Shape, "matmul: K must be whole blocks");
  if ((int64_t)a.ElementLength() != M * K ||
      (blocks ? w.ByteLength() != dtype_bytes(wt, N * K)
              : ((int64_t)w.ElementLength() != N * K || w.ElementSize() != dtype_size(wt))))
    throw_js(env, ErrorCode::Shape, "matmul: a must hold M×K and w N×K elements of the stated type");
  const float* bias = nullptr;
  auto pins = std::make_shared<Pins>();
  if (!info[3].IsNull()) {
    Napi::Float32Array b = float32_arg(env, info[3], "bias");
    if ((int64_t)b.ElementLength() != N) throw_js(env, ErrorCode::Shape, "bias must hold N elements");
    bias = b.Data();
    pins->pin(b);
  }
  const std::string act_s = info[7].IsString() ? info[7].As<Napi::String>().Utf8Value() : "";
  const Activation act = act_s == "gelu" ? Activation::Gelu : act_s == "quick_gelu" ? Activation::QuickGelu : Activation::None;
  const std::string k = info[8].IsString() ? info[8].As<Napi::String>().Utf8Value() : "auto";
  const cuda::MatmulKernel which = k == "tiled" ? cuda::MatmulKernel::Tiled
                                   : k == "tensor" ? cuda::MatmulKernel::TensorCore
                                                   : cuda::MatmulKernel::Auto;
  Napi::Float32Array out = Napi::Float32Array::New(env, (size_t)(M * N));
  std::memset(out.Data(), 0xff, (size_t)(M * N) * 4);  // poison: an unwritten element stays NaN
  pins->pin(a);
  pins->pin(w);
  pins->pin(out);
  const float* ap = a.Data();
  const void* wp = static_cast<const uint8_t*>(w.ArrayBuffer().Data()) + w.ByteOffset();
  float* op = out.Data();
  return PromiseWorker::Start(
      env, [=] { cuda::matmul_launch(ap, wp, wt, bias, op, (int)M, (int)N, (int)K, act, which, nullptr); },
      [pins](Napi::Env) { return pins->refs.back().Value(); });
}

Napi::Float32Array poisoned(Napi::Env env, int64_t n) {
  Napi::Float32Array out = Napi::Float32Array::New(env, (size_t)n);
  std::memset(out.Data(), 0xff, (size_t)n * 4);  // NaN: an element no thread writes shows
  return out;
}

void check_hd(Napi::Env env, int64_t hd) {
  if (hd > cuda::kMaxHd) throw_js(env, ErrorCode::Unsupported, "attention: head dim " + std::to_string(hd) + " > " +
                                                                 std::to_string(cuda::kMaxHd));
}

// The device, emulated: host memory (poisoned with NaN bytes on allocation, so a kernel that reads
// what nobody wrote shows it), a byte budget standing in for the device's free memory.
class EmuDevice : public cuda::DeviceMemory {
 public:
  explicit EmuDevice(size_t budget) : budget_(budget) {}
  ~EmuDevice() override {
    for (auto& kv : live_) std::free(kv.first);
  }
  void* alloc(size_t bytes) override {
    if (bytes > available()) throw Error(ErrorCode::OOM, "emulated device: out of memory");
    void* p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (!p) throw Error(ErrorCode::OOM, "emulated device: host allocation failed");
    std::memset(p, 0xff, bytes);
    live_[p] = bytes;
    used_ += bytes;
    return p;
  }
  void release(void* p) override {
    auto it = live_.find(p);
    if (it == live_.end()) throw Error(ErrorCode::Cuda, "emulated device: release of a pointer it did not allocate");
    used_ -= it->second;
    live_.erase(it);
    std::free(p);
  }
  int index() const override { return 0; }
  void bind() override { ++binds_; }
  int64_t binds() const { return binds_; }
  void upload(void* dst, const void* src, size_t bytes, medllava_stream_t) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes, medllava_stream_t) override { std::memcpy(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes, medllava_stream_t) override { std::memcpy(dst, src, bytes); }
  void sync(medllava_stream_t) override {}
  size_t available() override { return budget_ - used_; }
  // launches run to completion under the emulator: streams are tokens, counted so a leak shows
  medllava_stream_t stream() override { return nullptr; }
  medllava_stream_t new_stream() override { return reinterpret_cast<medllava_stream_t>(++streams_); }
  void free_stream(medllava_stream_t) override { --streams_; }
  int64_t open_streams() const { return streams_; }
  void check(const char*) override {}
  size_t used() const { return used_; }

 private:
  size_t budget_, used_ = 0;
  int64_t streams_ = 0;
  std::atomic<int64_t> binds_{0};
  std::map<void*, size_t> live_;
};

// cudaOp(name, args): the CUDA twin of cpuOp (native/napi/ops_wrap.cc) — every op of
// native/ops/op_list.h through the one harness (native/napi/op_harness.h) on CudaOps over the emulated
// device, outputs poisoned first — plus two kernel-level extras: attentionDecode with a chosen split
// count, and the peak kernels of the microbenchmark.
Napi::Value CudaOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject()) throw_js(env, ErrorCode::Argument, "cudaOp(name, args)");
  const std::string op = info[0].As<Napi::String>().Utf8Value();
  const Napi::Object o = info[1].As<Napi::Object>();
  constexpr int64_t kMax = 1LL << 28;
  // kernel-level extras, below the op table: decode attention with a chosen split, the peak kernels
  if (op == "attentionDecode") {
    const int64_t T = 1, np = arg_int(o, "nPast", 0, kMax), H = arg_int(o, "H", 1, 4096),
                  KVH = arg_int(o, "KVH", 1, 4096), hd = arg_int(o, "hd", 1, 4096);
    if (H % KVH) throw_js(env, ErrorCode::Argument, "H must be a multiple of KVH");
    check_hd(env, hd);
    const int64_t n_kv = np + T;
    const float* q = arg_array<float>(o, "q", napi_float32_array, T * H * hd);
    const uint16_t* kc = arg_array<uint16_t>(o, "kCache", napi_uint16_array, n_kv * KVH * hd);
    const uint16_t* vc = arg_array<uint16_t>(o, "vCache", napi_uint16_array, n_kv * KVH * hd);
    Napi::Float32Array out = poisoned(env, T * H * hd);
    const int splits = o.Has("splits") ? (int)arg_int(o, "splits", 1, 1024) : cuda::decode_splits((int)n_kv);
    std::vector<float> partial((size_t)(H * splits * hd), NAN), ml((size_t)(H * splits * 2), NAN);
    cuda::attention_decode_launch<uint16_t>(q, kc, vc, out.Data(), partial.data(), ml.data(), (int)H, (int)KVH, (int)hd, (int)n_kv,
                                            splits, nullptr);
    return out;
  }
  if (op == "peakFma" || op == "peakWmma") {  // the microbenchmark's peak kernels, run small with their results stored
    const int blocks = (int)arg_int(o, "blocks", 1, 64), iters = (int)arg_int(o, "iters", 0, 1 << 16);
    const bool fma = op == "peakFma";
    Napi::Float32Array out = poisoned(env, fma ? blocks * 64 : blocks);
    if (fma) MEDLLAVA_LAUNCH(cuda::peak_fma_kernel, dim3(blocks), dim3(64), 0, nullptr, out.Data(), iters, 1);
    else MEDLLAVA_LAUNCH(cuda::peak_wmma_kernel, dim3(blocks), dim3(64), 0, nullptr, out.Data(), iters, 1);
    return out;
  }
  // every op of the table: the harness, on CudaOps over the emulated device
  JsOp j = parse_op(env, op, o);
  EmuDevice dev((size_t)1 << 40);
  const OpScratch sc = op_scratch(j.call);
  std::vector<int32_t> ids((size_t)sc.ids + 1);
  std::vector<float> scratch((size_t)sc.floats + 1, NAN);
  const int64_t heads = j.call.op == OpId::attention_cached ? j.call.i[2] : 0;
  cuda::CudaOps ops{dev, nullptr, ids.data(), scratch.data(), scratch.data() + heads * cuda::CudaOps::kMaxSplits * j.call.i[4]};
  return run_in_place(ops, j);
}

// emulatedGreedy(config, tensors, prompt: Int32Array, steps, { maxBatch, budgetBytes, embeddings }) ->
//   { tokens: Int32Array (steps greedy picks, argmax on the device), logits: Float32Array (the prompt's
//   last row), deviceBytes }: the whole LLM on the CUDA kernels under the emulator, from the same
//   weights NativeLlm.load maps.
Napi::Value EmulatedGreedy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsObject() || !info[1].IsObject())
    throw_js(env, ErrorCode::Argument, "emulatedGreedy(config, tensors, prompt, steps, options)");
  LlmConfig cfg;
  LlmTensorNames names;
  parse_llm_args(env, info[0].As<Napi::Object>(), info[1].As<Napi::Object>(), cfg, names);
  const Napi::Object o = info.Length() > 4 && info[4].IsObject() ? info[4].As<Napi::Object>() : Napi::Object::New(env);
  const Napi::Value pv = info[2];
  if (!pv.IsTypedArray() || pv.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw_js(env, ErrorCode::Argument, "prompt must be an Int32Array");
  Napi::Int32Array prompt = pv.As<Napi::Int32Array>();
  const int64_t T = (int64_t)prompt.ElementLength(), steps = get_int(env, info[3], "steps", 0, 1 << 20);
  const int64_t max_batch = o.Has("maxBatch") ? arg_int(o, "maxBatch", 1, 1 << 20) : 256;
  const size_t budget = o.Has("budgetBytes") ? (size_t)arg_int(o, "budgetBytes", 0, 1LL << 50) : (size_t)1 << 40;
  const float* emb = o.Has("embeddings") ? arg_array<float>(o, "embeddings", napi_float32_array, T * cfg.hidden, true) : nullptr;
  const Llm llm(cfg, names);
  EmuDevice dev(budget);
  cuda::LlmDevice model(llm, dev, max_batch);
  // an optional second chat, interleaved step by step with the first on its own KV cache, arena and stream
  const int32_t* p2 = nullptr;
  int64_t T2 = 0;
  if (o.Has("secondPrompt")) {
    p2 = arg_array<int32_t>(o, "secondPrompt", napi_int32_array, -1);
    T2 = (int64_t)o.Get("secondPrompt").As<Napi::TypedArray>().ElementLength();
  }
  cuda::LlmDevice::Sequence seq = model.new_sequence(), seq2;
  Napi::Float32Array logits = Napi::Float32Array::New(env, (size_t)cfg.vocab);
  Napi::Int32Array out = Napi::Int32Array::New(env, (size_t)steps), out2 = Napi::Int32Array::New(env, (size_t)(p2 ? steps : 0));
  double bytes = 0;
  try {
    if (p2) seq2 = model.new_sequence();
    model.forward(seq, prompt.Data(), T, false, logits.Data(), spans_from_dense(prompt.Data(), T, emb, cfg.hidden));
    if (p2) model.forward(seq2, p2, T2, false, nullptr);
    for (int64_t i = 0; i < steps; ++i) {
      const int32_t next = model.greedy(seq, 1);
      out[(size_t)i] = next;
      if (p2) out2[(size_t)i] = model.greedy(seq2, 1);
      if (i + 1 < steps) {
        model.forward(seq, &next, 1, false, nullptr);
        if (p2) {
          const int32_t n2 = out2[(size_t)i];
          model.forward(seq2, &n2, 1, false, nullptr);
        }
      }
    }
    bytes = (double)dev.used();
  } catch (...) {
    model.free_sequence(seq);
    model.free_sequence(seq2);
    throw;
  }
  model.free_sequence(seq);
  model.free_sequence(seq2);
  if (dev.open_streams() != 0) throw Error(ErrorCode::Cuda, "emulated device: a stream was not freed");
  Napi::Object r = Napi::Object::New(env);
  r.Set("tokens", out);
  r.Set("secondTokens", out2);
  r.Set("logits", logits);
  r.Set("deviceBytes", bytes);
  return r;
}

// A Vision from (config, tensors) with the emulated device attached — the addon's path with device
// 'cuda' — and the pixels argument (info[2]) checked.
struct EmulatedTower {
  std::unique_ptr<Vision> vision;
  std::shared_ptr<cuda::VisionRunnerOn<EmuDevice>> runner;
  const float* pixels = nullptr;
  size_t out_floats = 0;
};
EmulatedTower emulated_tower(const Napi::CallbackInfo& info, const char* usage) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsObject() || !info[1].IsObject()) throw_js(env, ErrorCode::Argument, usage);
  VisionConfig cfg;
  VisionTensorNames names;
  parse_vision_args(env, info[0].As<Napi::Object>(), info[1].As<Napi::Object>(), cfg, names);
  EmulatedTower t;
  t.vision = std::make_unique<Vision>(cfg, names);
  Napi::Object holder = Napi::Object::New(env);
  holder.Set("pixels", info[2]);
  t.pixels = arg_array<float>(holder, "pixels", napi_float32_array, 3 * cfg.image_size * cfg.image_size);
  t.runner = std::make_shared<cuda::VisionRunnerOn<EmuDevice>>(*t.vision, (size_t)1 << 40);
  t.vision->attach_device(t.runner);
  t.out_floats = (size_t)(t.vision->tokens() * cfg.out_dim);
  return t;
}

// emulatedVision(config, tensors, pixels: Float32Array) -> Float32Array: the vision tower + projector
// on the CUDA kernels under the emulator, from the same weights NativeVision.load maps.
Napi::Value EmulatedVision(const Napi::CallbackInfo& info) {
  EmulatedTower t = emulated_tower(info, "emulatedVision(config, tensors, pixels)");
  Napi::Float32Array out = Napi::Float32Array::New(info.Env(), t.out_floats);
  t.vision->encode(t.pixels, out.Data());
  return out;
}

// emulatedVisionEdited(config, tensors, pixels, edits: [{ name, offset, values: Float32Array }]) ->
//   { before, after }: encodes on the emulated device, marks the edited parameters trainable and writes
//   the values through the parameter table, and encodes again — the device must re-read the table.
Napi::Value EmulatedVisionEdited(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[3].IsArray()) throw_js(env, ErrorCode::Argument, "emulatedVisionEdited(config, tensors, pixels, edits)");
  EmulatedTower tower = emulated_tower(info, "emulatedVisionEdited(config, tensors, pixels, edits)");
  Vision& vision = *tower.vision;
  Napi::Float32Array before = Napi::Float32Array::New(env, tower.out_floats), after = Napi::Float32Array::New(env, tower.out_floats);
  vision.encode(tower.pixels, before.Data());
  Napi::Array edits = info[3].As<Napi::Array>();
  ParamTable& t = vision.params();
  for (uint32_t i = 0; i < edits.Length(); ++i) {
    const Napi::Object e = edits.Get(i).As<Napi::Object>();
    const int id = t.find(arg_string(e, "name"));
    if (id < 0) throw_js(env, ErrorCode::Argument, "no parameter named " + arg_string(e, "name"));
    const int64_t offset = arg_int(e, "offset", 0, t[id].numel());
    const int64_t count = (int64_t)e.Get("values").As<Napi::TypedArray>().ElementLength();
    const float* v = arg_array<float>(e, "values", napi_float32_array, -1);
    if (offset + count > t[id].numel()) throw_js(env, ErrorCode::Shape, "the edit runs past the parameter's end");
    std::unique_lock<std::shared_mutex> lock(t.mutex());
    t.set_trainable({id}, true);
    std::copy(v, v + count, t.values(id) + offset);
    t.touch();
  }
  vision.encode(tower.pixels, after.Data());
  Napi::Object r = Napi::Object::New(env);
  r.Set("before", before);
  r.Set("after", after);
  r.Set("binds", Napi::Number::New(env, (double)tower.runner->device().binds()));
  return r;
}

// emulatedLlm(config, tensors, steps: [{ tokens: Int32Array, truncate?: number, embeddings?, addLora?: { r, alpha,
//   seed, b } }], { cpu?: boolean }) -> Float32Array[] (each step's last logits): a Llm with the emulated device
//   attached (cpu: none, the CPU path), driven through Llm::new_cache / Llm::forward exactly as NativeLlmContext
//   drives the CUDA one (truncation included). addLora: before that step's forward, Llm::add_lora on all seven
//   targets, then every B set to `b` (trainable, written through the table as writeParameter does).
Napi::Value EmulatedLlm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsObject() || !info[1].IsObject() || !info[2].IsArray())
    throw_js(env, ErrorCode::Argument, "emulatedLlm(config, tensors, steps, options?)");
  LlmConfig cfg;
  LlmTensorNames names;
  parse_llm_args(env, info[0].As<Napi::Object>(), info[1].As<Napi::Object>(), cfg, names);
  const bool on_cpu = info.Length() > 3 && info[3].IsObject() && info[3].As<Napi::Object>().Get("cpu").ToBoolean();
  Llm llm(cfg, names);
  std::shared_ptr<cuda::LlmRunnerOn<EmuDevice>> runner;
  if (!on_cpu) runner = std::make_shared<cuda::LlmRunnerOn<EmuDevice>>(llm, (size_t)1 << 40), llm.attach_device(runner);
  Napi::Array steps = info[2].As<Napi::Array>(), outs = Napi::Array::New(env, steps.Length());
  {
    Llm::Cache cache = llm.new_cache();
    if (!on_cpu && (!cache.device || !cache.k.empty())) throw Error(ErrorCode::Cuda, "the cache is not the device's");
    for (uint32_t i = 0; i < steps.Length(); ++i) {
      const Napi::Object st = steps.Get(i).As<Napi::Object>();
      if (st.Has("addLora")) {
        const Napi::Object a = st.Get("addLora").As<Napi::Object>();
        llm.add_lora({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, arg_int(a, "r", 1, 1 << 16),
                     (float)arg_number(a, "alpha"), (uint64_t)arg_int(a, "seed", 0, 1LL << 53));
        ParamTable& t = llm.params();
        std::vector<int> bs;
        for (int k = 0; k < t.size(); ++k)
          if (t[k].name.find("lora_B") != std::string::npos) bs.push_back(k);
        t.set_trainable(bs, true);
        const float b = (float)arg_number(a, "b");
        for (int k : bs) std::fill(t.values(k), t.values(k) + t[k].numel(), b);
        t.touch();
      }
      if (st.Has("truncate")) {
        const int64_t n = arg_int(st, "truncate", 0, 1 << 30);
        if (n < cache.n_past) cache.n_past = n;  // as NativeLlmContext.truncate
      }
      const int32_t* tokens = arg_array<int32_t>(st, "tokens", napi_int32_array, -1);
      const int64_t T = (int64_t)st.Get("tokens").As<Napi::TypedArray>().ElementLength();
      const float* emb = st.Has("embeddings") ? arg_array<float>(st, "embeddings", napi_float32_array, T * cfg.hidden, true) : nullptr;
      Napi::Float32Array out = Napi::Float32Array::New(env, (size_t)cfg.vocab);
      llm.forward(cache, tokens, T, false, out.Data(), spans_from_dense(tokens, T, emb, cfg.hidden));
      outs.Set(i, out);
    }
  }  // the cache (its device sequence) goes first
  if (runner && runner->device().open_streams() != 0) throw Error(ErrorCode::Cuda, "emulated device: a stream was not freed");
  return outs;
}

// Where a training forward's activation table lives in these tests, from the options { device: 'cpu' |
// 'emulated', recompute?: boolean[] }: host memory filled with NaN for the CPU, or the emulated
// device (poisoned on allocation), so that a buffer nothing writes shows.
struct TrainTable {
  bool emulated = false;
  std::vector<bool> recompute;
  EmuDevice dev{(size_t)1 << 40};
  std::vector<float> host;
  float* table = nullptr;
  explicit TrainTable(const Napi::Object& o) {
    const std::string device = o.Has("device") ? arg_string(o, "device") : "cpu";
    if (device != "cpu" && device != "emulated") throw_js(o.Env(), ErrorCode::Argument, "device must be 'cpu' or 'emulated'");
    emulated = device == "emulated";
    if (o.Get("recompute").IsArray()) {
      Napi::Array r = o.Get("recompute").As<Napi::Array>();
      for (uint32_t i = 0; i < r.Length(); ++i) recompute.push_back(r.Get(i).ToBoolean());
    }
  }
  float* alloc(int64_t floats) {
    if (emulated) return table = static_cast<float*>(dev.alloc((size_t)floats * 4));
    host.assign((size_t)floats, NAN);
    return table = host.data();
  }
  ~TrainTable() {
    if (emulated && table) dev.release(table);
  }
};

Napi::Float32Array f32_copy(Napi::Env env, const float* p, int64_t n) {
  Napi::Float32Array a = Napi::Float32Array::New(env, (size_t)n);
  std::memcpy(a.Data(), p, (size_t)n * 4);
  return a;
}

// trainForward(config, tensors, tokens: Int32Array (B·T), B, T, { device: 'cpu' | 'emulated', recompute?: boolean[],
//   embeddings? }) -> { logits (B·T, vocab), layers: [{ rstd1, rstd2, lse, q, k }] (empty for recomputed layers'
//   shared buffers: null), floats }: the training forward (llm_forward_train) over the activation table, on
//   CpuOps or on CudaOps over the emulated device, from the same weights NativeLlm.load maps.
Napi::Value TrainForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[0].IsObject() || !info[1].IsObject())
    throw_js(env, ErrorCode::Argument, "trainForward(config, tensors, tokens, B, T, options)");
  LlmConfig cfg;
  LlmTensorNames names;
  parse_llm_args(env, info[0].As<Napi::Object>(), info[1].As<Napi::Object>(), cfg, names);
  const int64_t B = get_int(env, info[3], "B", 1, 4096), T = get_int(env, info[4], "T", 1, 1 << 20), N = B * T;
  const Napi::Object o = info.Length() > 5 && info[5].IsObject() ? info[5].As<Napi::Object>() : Napi::Object::New(env);
  Napi::Object holder = Napi::Object::New(env);
  holder.Set("tokens", info[2]);
  const int32_t* tokens = arg_array<int32_t>(holder, "tokens", napi_int32_array, N);
  const float* emb = o.Has("embeddings") ? arg_array<float>(o, "embeddings", napi_float32_array, N * cfg.hidden, true) : nullptr;
  TrainTable where(o);
  for (int64_t t = 0; t < N; ++t)
    if (tokens[t] >= cfg.vocab || (tokens[t] < 0 && !emb)) throw_js(env, ErrorCode::Argument, "a token is outside the vocabulary or needs embeddings");
  Llm llm(cfg, names);
  const int64_t floats = LlmActivations::floats(cfg, llm.ids(), B, T, where.recompute);
  LlmActivations A;
  float* table = where.alloc(floats);
  if (A.carve(table, cfg, llm.ids(), B, T, where.recompute) != table + floats)
    throw Error(ErrorCode::Internal, "the LLM's activation table is not the size floats() says");
  std::vector<int32_t> ids((size_t)N);
  std::vector<float> logits((size_t)(N * cfg.vocab));
  // the logits of every row through the lm_head (training itself makes them chunk by chunk in the
  // loss head and never keeps them)
  if (!where.emulated) {
    CpuOps ops;
    llm_forward_train(ops, cfg, llm.ids(), llm.params().views(), tokens, spans_from_dense(tokens, N, emb, cfg.hidden), A);
    llm_linear(ops, llm.params().views(), llm.ids(), llm.ids().lm_head, A.h_final, N, logits.data(), A.s);
  } else {
    cuda::DeviceParams dp(llm.params(), where.dev);
    dp.upload_all();
    cuda::CudaOps ops{where.dev, nullptr, ids.data(), nullptr, nullptr};
    llm_forward_train(ops, cfg, llm.ids(), dp.views(), tokens, spans_from_dense(tokens, N, emb, cfg.hidden), A);
    float* d = static_cast<float*>(where.dev.alloc(logits.size() * 4));
    llm_linear(ops, dp.views(), llm.ids(), llm.ids().lm_head, A.h_final, N, d, A.s);
    ops.to_host(logits.data(), d, N * cfg.vocab);
    where.dev.release(d);
  }
  auto copy = [&](const float* p, int64_t n) { return f32_copy(env, p, n); };
  const int64_t D = cfg.hidden, kvd = cfg.kv_heads * (D / cfg.heads);
  Napi::Object r = Napi::Object::New(env);
  r.Set("logits", copy(logits.data(), N * cfg.vocab));
  Napi::Array layers = Napi::Array::New(env);
  for (size_t l = 0; l < A.layers.size(); ++l) {
    const LlmActivations::Layer& y = A.layers[l];
    Napi::Object e = Napi::Object::New(env);
    e.Set("recompute", y.recompute);
    e.Set("x", copy(y.io.x_in, N * D));
    if (!y.recompute) {
      e.Set("rstd1", copy(y.io.rstd1, N));
      e.Set("rstd2", copy(y.io.rstd2, N));
      e.Set("lse", copy(y.lse, B * cfg.heads * T));
      e.Set("q", copy(y.io.q, N * D));
      e.Set("k", copy(y.io.k, N * kvd));
      e.Set("g", copy(y.io.g, N * cfg.ffn));
    }
    layers.Set((uint32_t)l, e);
  }
  r.Set("layers", layers);
  r.Set("rstdFinal", copy(A.rstd_final, N));
  r.Set("floats", Napi::Number::New(env, (double)floats));
  return r;
}

// visionTrainForward(config, tensors, pixels: Float32Array (B images, each 3·S·S), B, { device: 'cpu' |
//   'emulated', recompute?: boolean[] }) -> { out (B·tokens, out_dim), layers: [{ x, mean1, rstd1, mean2, rstd2,
//   lse, q, k, fPre, f }] (only x for recomputed blocks), preMean, preRstd, midPre, mid, floats }: the vision
//   training forward (vision_forward_train) over its activation table, on CpuOps or on the emulated device.
Napi::Value VisionTrainForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsObject() || !info[1].IsObject())
    throw_js(env, ErrorCode::Argument, "visionTrainForward(config, tensors, pixels, B, options)");
  VisionConfig cfg;
  VisionTensorNames names;
  parse_vision_args(env, info[0].As<Napi::Object>(), info[1].As<Napi::Object>(), cfg, names);
  const int64_t B = get_int(env, info[3], "B", 1, 1024), S = cfg.image_size;
  const Napi::Object o = info.Length() > 4 && info[4].IsObject() ? info[4].As<Napi::Object>() : Napi::Object::New(env);
  Napi::Object holder = Napi::Object::New(env);
  holder.Set("pixels", info[2]);
  const float* px = arg_array<float>(holder, "pixels", napi_float32_array, B * 3 * S * S);
  TrainTable where(o);
  Vision vision(cfg, names);
  const int64_t run = (int64_t)vision.ids().layers.size();
  const int64_t floats = VisionActivations::floats(cfg, run, B, where.recompute);
  float* table = where.alloc(floats);
  VisionActivations A;
  if (A.carve(table, cfg, run, B, where.recompute) != table + floats)
    throw Error(ErrorCode::Internal, "the vision activation table is not the size floats() says");
  const int64_t pp = cfg.patches() * 3 * cfg.patch * cfg.patch;
  for (int64_t i = 0; i < B; ++i) vision.im2col(px + i * 3 * S * S, A.cols + i * pp);  // host memory under the emulator too
  if (!where.emulated) {
    CpuOps ops;
    vision_forward_train(ops, cfg, vision.ids(), vision.params().views(), A);
  } else {
    cuda::DeviceParams dp(vision.params(), where.dev);
    dp.upload_all();
    cuda::CudaOps ops{where.dev, nullptr};
    vision_forward_train(ops, cfg, vision.ids(), dp.views(), A);
  }
  auto copy = [&](const float* p, int64_t n) { return f32_copy(env, p, n); };
  const int64_t T = cfg.patches() + 1, N = B * T, D = cfg.hidden, n = B * cfg.tokens();
  Napi::Object r = Napi::Object::New(env);
  r.Set("out", copy(A.out, n * cfg.out_dim));
  Napi::Array layers = Napi::Array::New(env);
  for (size_t l = 0; l < A.layers.size(); ++l) {
    const VisionLayerIO& io = A.layers[l].io;
    Napi::Object e = Napi::Object::New(env);
    e.Set("recompute", A.layers[l].recompute);
    e.Set("x", copy(io.x_in, N * D));
    if (!A.layers[l].recompute) {
      e.Set("mean1", copy(io.mean1, N)), e.Set("rstd1", copy(io.rstd1, N)), e.Set("mean2", copy(io.mean2, N));
      e.Set("rstd2", copy(io.rstd2, N)), e.Set("xMid", copy(io.x_mid, N * D)), e.Set("lse", copy(io.lse, B * cfg.heads * T));
      e.Set("q", copy(io.q, N * D)), e.Set("k", copy(io.k, N * D)), e.Set("fPre", copy(io.f_pre, N * cfg.ffn));
      e.Set("f", copy(io.f, N * cfg.ffn));
    }
    layers.Set((uint32_t)l, e);
  }
  r.Set("layers", layers);
  r.Set("xEmb", copy(A.x_emb, N * D));
  r.Set("preMean", copy(A.pre_mean, N));
  r.Set("preRstd", copy(A.pre_rstd, N));
  r.Set("midPre", copy(A.mid_pre, n * cfg.out_dim));
  r.Set("mid", copy(A.mid, n * cfg.out_dim));
  r.Set("floats", Napi::Number::New(env, (double)floats));
  return r;
}

// The arguments trainGradients and trainerSteps share: (llmConfig, llmTensors, visionConfig | null,
// visionTensors | null, batch, trainable: string[], options) → the models (the named parameters made
// trainable), the batch and the options.
struct TrainArgs {
  std::shared_ptr<Llm> llm;
  std::shared_ptr<Vision> vision;
  std::shared_ptr<TrainBatch> batch;
  std::vector<int> llm_ids, vision_ids;  // the trainable parameters of each table
  Napi::Object options;
  TrainArgs(const Napi::CallbackInfo& info, const char* usage) {
    Napi::Env env = info.Env();
    if (info.Length() < 7 || !info[0].IsObject() || !info[1].IsObject() || !info[5].IsArray() || !info[6].IsObject())
      throw_js(env, ErrorCode::Argument, usage);
    LlmConfig cfg;
    LlmTensorNames names;
    parse_llm_args(env, info[0].As<Napi::Object>(), info[1].As<Napi::Object>(), cfg, names);
    llm = std::make_shared<Llm>(cfg, names);
    if (info[2].IsObject() && info[3].IsObject()) {
      VisionConfig vc;
      VisionTensorNames vn;
      parse_vision_args(env, info[2].As<Napi::Object>(), info[3].As<Napi::Object>(), vc, vn);
      vision = std::make_shared<Vision>(vc, vn);
    }
    batch = parse_train_batch(env, info[4]);
    const Napi::Array tr = info[5].As<Napi::Array>();
    for (uint32_t i = 0; i < tr.Length(); ++i) {
      const std::string n = tr.Get(i).ToString().Utf8Value();
      const int a = llm->params().find(n), b = vision ? vision->params().find(n) : -1;
      if (a < 0 && b < 0) throw_js(env, ErrorCode::Argument, "no parameter named " + n);
      if (a >= 0) llm_ids.push_back(a); else vision_ids.push_back(b);
    }
    llm->params().set_trainable(llm_ids, true);
    if (vision) vision->params().set_trainable(vision_ids, true);
    options = info[6].As<Napi::Object>();
  }
};

// trainGradients(llmConfig, llmTensors, visionConfig | null, visionTensors | null, batch, trainable: string[],
//   { device: 'cpu' | 'emulated', checkpoint?: boolean, gradScale?: number, loraDropout?, dropoutStep?, lossRows? })
//   -> { loss (sum over targets), tokens,
//   grads: { name: Float32Array } }: one train_step (native/train/train_step.h) with the named parameters trainable,
//   on CpuOps over host memory or on CudaOps over the emulated device (parameters mirrored by DeviceParams,
//   gradients in device buffers, the arena in device memory) — the device path of training, run under the emulator.
Napi::Value TrainGradients(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TrainArgs args(info, "trainGradients(llmConfig, llmTensors, visionConfig, visionTensors, batch, trainable, options)");
  Llm& llm = *args.llm;
  const std::shared_ptr<Vision>& vision = args.vision;
  const std::shared_ptr<TrainBatch>& batch = args.batch;
  const LlmConfig& cfg = llm.config();
  const Napi::Object o = args.options;
  const std::string device = o.Has("device") ? arg_string(o, "device") : "cpu";
  const float grad_scale = o.Has("gradScale") ? (float)arg_number(o, "gradScale") : 1.0f;
  TrainModel m;
  m.llm = &cfg, m.llm_ids = &llm.ids(), m.llm_table = &llm.params();
  if (vision) m.vision = &vision->config(), m.vision_ids = &vision->ids(), m.vision_table = &vision->params(), m.vision_rows = vision->tokens();
  if (o.Has("lossRows")) m.loss_rows = arg_int(o, "lossRows", 1, 1LL << 30);
  const TrainPlan p = plan_batch(m, *batch, o.Get("checkpoint").ToBoolean());
  if (o.Has("loraDropout")) m.lora_dropout = (float)arg_number(o, "loraDropout");
  if (o.Has("dropoutStep")) m.dropout_step = (uint64_t)arg_int(o, "dropoutStep", 0, 1LL << 53);
  std::vector<float> cols;
  if (p.images) {
    const VisionConfig& vc = vision->config();
    const int64_t pp = vc.patches() * 3 * vc.patch * vc.patch;
    cols.resize((size_t)(p.images * pp));
    for (int64_t i = 0; i < p.images; ++i) vision->im2col(batch->pixels[(size_t)i].data(), cols.data() + i * pp);
  }
  const int64_t floats = train_arena_floats(m, p);
  double sum = 0;
  std::map<std::string, std::vector<float>> grads;
  auto host_grads = [](ParamTable& t) {
    GradViews g((size_t)t.size(), nullptr);
    for (int i = 0; i < t.size(); ++i) g[(size_t)i] = t.grads(i);
    return g;
  };
  if (device == "cpu") {
    const GradViews lg = host_grads(llm.params());
    GradViews vg = vision ? host_grads(vision->params()) : GradViews{};
    m.llm_views = &llm.params().views(), m.llm_grads = &lg;
    if (vision) m.vision_views = &vision->params().views(), m.vision_grads = &vg;
    std::vector<float> arena((size_t)floats, NAN);
    CpuOps ops;
    sum = train_step(ops, m, p, arena.data(), cols, grad_scale);
    for (ParamTable* t : {&llm.params(), vision ? &vision->params() : nullptr})
      if (t)
        for (int i = 0; i < t->size(); ++i)
          if ((*t)[i].trainable && (*t)[i].tied_to < 0) grads[(*t)[i].name].assign(t->grads(i), t->grads(i) + (*t)[i].numel());
  } else if (device == "emulated") {
    EmuDevice dev((size_t)1 << 40);
    const medllava_stream_t st = dev.stream();
    // gradients in device memory: one buffer per parameter that owns storage, zeroed; tied ones share it
    std::vector<void*> owned;
    auto device_grads = [&](const ParamTable& t) {
      GradViews g((size_t)t.size(), nullptr);
      for (int i = 0; i < t.size(); ++i)
        if (t[i].trainable && t[i].tied_to < 0) {
          float* d = static_cast<float*>(dev.alloc((size_t)t[i].numel() * 4));
          cuda::fill_launch(d, 0.0f, t[i].numel(), st);
          owned.push_back(d);
          g[(size_t)i] = d;
        }
      for (int i = 0; i < t.size(); ++i)
        if (t[i].trainable && t[i].tied_to >= 0) g[(size_t)i] = g[(size_t)t[i].tied_to];
      return g;
    };
    cuda::DeviceParams lp(llm.params(), dev);
    const GradViews lg = device_grads(llm.params());
    std::unique_ptr<cuda::DeviceParams> vp;
    GradViews vg;
    if (vision) vp = std::make_unique<cuda::DeviceParams>(vision->params(), dev), vg = device_grads(vision->params());
    m.llm_views = &lp.views(), m.llm_grads = &lg;
    if (vision) m.vision_views = &vp->views(), m.vision_grads = &vg;
    float* arena = static_cast<float*>(dev.alloc((size_t)floats * 4));
    int32_t* ids = static_cast<int32_t*>(dev.alloc((size_t)(p.B * p.T) * 4));
    cuda::CudaOps ops{dev, st, ids, nullptr, nullptr};
    sum = train_step(ops, m, p, arena, cols, grad_scale);
    using TableGrads = std::pair<ParamTable*, const GradViews*>;
    for (const TableGrads& tg : {TableGrads(&llm.params(), &lg), TableGrads(vision ? &vision->params() : nullptr, &vg)})
      if (tg.first)
        for (int i = 0; i < tg.first->size(); ++i) {
          const Param& prm = (*tg.first)[i];
          if (!prm.trainable || prm.tied_to >= 0) continue;
          std::vector<float>& h = grads[prm.name];
          h.resize((size_t)prm.numel());
          dev.download(h.data(), (*tg.second)[(size_t)i], h.size() * 4, st);
        }
    dev.release(arena);
    dev.release(ids);
    for (void* d : owned) dev.release(d);
  } else {
    throw_js(env, ErrorCode::Argument, "device must be 'cpu' or 'emulated'");
  }
  Napi::Object r = Napi::Object::New(env), g = Napi::Object::New(env);
  r.Set("loss", sum);
  r.Set("tokens", (double)p.count);
  for (const auto& kv : grads) g.Set(kv.first, f32_copy(env, kv.second.data(), (int64_t)kv.second.size()));
  r.Set("grads", g);
  return r;
}

// trainerSteps(llmConfig, llmTensors, visionConfig | null, visionTensors | null, batch, trainable: string[],
//   { device: 'cpu' | 'emulated', steps, lr, loraDropout?, seed?, lossRows?, bf16?, shareRunner?, hostWrite?: { step, name,
//   value }, abortAt?: { step, check }, resumeAt?: step, resumeSkip?: 'value' | 'm' | 'v' | 'dropout', reduceTimes?: k }) -> (also paramBytes: the device engine's own parameter memory)
//   { losses, norms, grads: { name: Float32Array } (after the first step's backward), values, v (the final values and
//   AdamW second moments, read from the host tables) }: the training engine itself — the CPU Trainer, or DeviceTrainer
//   over the emulated device (step, norm and AdamW on the device; the host tables synced lazily) — for `steps` steps
//   of accumulate, norm and update on the same batch.
Napi::Value TrainerSteps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TrainArgs args(info, "trainerSteps(llmConfig, llmTensors, visionConfig, visionTensors, batch, trainable, options)");
  const std::shared_ptr<Llm>& llm = args.llm;
  const std::shared_ptr<Vision>& vision = args.vision;
  const std::shared_ptr<TrainBatch>& batch = args.batch;
  const std::vector<int>&lt_ids = args.llm_ids, &vt_ids = args.vision_ids;
  const Napi::Object o = args.options;
  const std::string device = o.Has("device") ? arg_string(o, "device") : "cpu";
  const int64_t steps = arg_int(o, "steps", 1, 1000);
  const float lr = (float)arg_number(o, "lr");
  std::unique_ptr<Trainer> t;
  double param_bytes = 0;
  if (device != "cpu" && device != "emulated") throw_js(env, ErrorCode::Argument, "device must be 'cpu' or 'emulated'");
  // shareRunner: the model is "on the device" (inference runners attached), as a model loaded with device
  // 'cuda': the engine borrows their frozen weights
  if (device == "emulated" && o.Get("shareRunner").ToBoolean()) {
    llm->attach_device(std::make_shared<cuda::LlmRunnerOn<EmuDevice>>(*llm, (size_t)1 << 40));
    if (vision) vision->attach_device(std::make_shared<cuda::VisionRunnerOn<EmuDevice>>(*vision, (size_t)1 << 40));
  }
  auto make_engine = [&](uint64_t dropout_seed) {
    if (device == "cpu") t = std::make_unique<Trainer>(llm, vision);
    else t = std::make_unique<cuda::DeviceTrainer<EmuDevice>>(llm, vision, (size_t)1 << 40);
    if (o.Has("loraDropout")) t->lora_dropout = (float)arg_number(o, "loraDropout");
    t->dropout_seed = dropout_seed;
    if (o.Has("lossRows")) t->loss_rows = arg_int(o, "lossRows", 1, 1LL << 30);
    if (o.Has("bf16")) t->set_compute_bf16(o.Get("bf16").ToBoolean());
  };
  make_engine(o.Has("seed") ? (uint64_t)arg_int(o, "seed", 0, 1LL << 53) : 0);
  // resumeAt: before that step, the engine is dropped as a process that stops would lose it: the trainable values and
  // AdamW moments are read from the host tables, the parameters made frozen and trainable again (values decoded from
  // the stored weights, state zero), a new engine made and the saved state restored as a resume does
  // (restore_param_state), the dropout stream continued from the old engine's next step seed
  const int64_t resume_at = o.Has("resumeAt") ? arg_int(o, "resumeAt", 1, steps - 1) : -1;
  // resumeSkip: 'value' | 'm' | 'v' | 'dropout' — that piece is not restored (the test shows each one matters)
  const std::string resume_skip = o.Has("resumeSkip") ? arg_string(o, "resumeSkip") : "";
  // reduceTimes k: after each accumulate the engine's allreduce_grads runs with a reducer that multiplies every
  // gradient buffer by k — what summing over k ranks that trained the same batch gives — on the host for the CPU
  // engine, on the (emulated) device buffers for the device engine
  const double reduce_times = o.Has("reduceTimes") ? arg_number(o, "reduceTimes") : 0;
  struct TimesReducer : GradReducer {
    float k = 1;
    EmuDevice* dev = nullptr;  // null: host memory
    void allreduce(float* data, int64_t n, void* stream) override {
      if (!dev) {
        for (int64_t i = 0; i < n; ++i) data[i] *= k;
        return;
      }
      std::vector<float> h((size_t)n);
      dev->download(h.data(), data, (size_t)n * 4, (medllava_stream_t)stream);
      dev->sync((medllava_stream_t)stream);
      for (float& x : h) x *= k;
      dev->upload(data, h.data(), (size_t)n * 4, (medllava_stream_t)stream);
    }
  };
  std::vector<ParamGroup> groups;
  for (int id : lt_ids) groups.push_back({false, id, lr, 0.0f});
  for (int id : vt_ids) groups.push_back({true, id, lr, 0.0f});
  // hostWrite { step, name, value }: before that step, the parameter's host values are set as
  // writeParameter does (sync_host, exclusive lock, touch): the engine must pick them up
  int64_t write_step = -1, write_id = -1;
  float write_value = 0;
  if (o.Has("hostWrite")) {
    const Napi::Object w = o.Get("hostWrite").As<Napi::Object>();
    write_step = arg_int(w, "step", 0, steps - 1);
    write_id = llm->params().find(arg_string(w, "name"));
    write_value = (float)arg_number(w, "value");
    if (write_id < 0 || !llm->params()[(int)write_id].trainable) throw_js(env, ErrorCode::Argument, "hostWrite: a trainable LLM parameter");
  }
  // abortAt { step, check }: before that step, an accumulate cancelled at its check-th check (E_ABORTED expected)
  int64_t abort_step = -1, abort_check = 0;
  if (o.Has("abortAt")) {
    const Napi::Object a = o.Get("abortAt").As<Napi::Object>();
    abort_step = arg_int(a, "step", 0, steps - 1), abort_check = arg_int(a, "check", 0, 1 << 20);
  }
  Napi::Array losses = Napi::Array::New(env), norms = Napi::Array::New(env);
  Napi::Object grads = Napi::Object::New(env);
  for (int64_t s = 0; s < steps; ++s) {
    if (s == resume_at) {
      t->sync_state();
      const uint64_t next_seed = t->dropout_seed + t->calls;
      struct Saved { ParamTable* tab; int id; std::vector<float> w, m, v; };
      std::vector<Saved> saved;
      for (ParamTable* tab : {&llm->params(), vision ? &vision->params() : nullptr}) {
        if (!tab) continue;
        tab->sync_host();
        for (int i = 0; i < tab->size(); ++i) {
          const Param& prm = (*tab)[i];
          if (!prm.trainable || prm.tied_to >= 0) continue;
          const size_t n = (size_t)prm.numel();
          saved.push_back({tab, i, std::vector<float>(tab->values(i), tab->values(i) + n),
                           std::vector<float>(tab->adam_m(i), tab->adam_m(i) + n), std::vector<float>(tab->adam_v(i), tab->adam_v(i) + n)});
        }
      }
      t.reset();
      llm->params().set_trainable(lt_ids, false), llm->params().set_trainable(lt_ids, true);
      if (vision) vision->params().set_trainable(vt_ids, false), vision->params().set_trainable(vt_ids, true);
      make_engine(resume_skip == "dropout" ? (o.Has("seed") ? (uint64_t)arg_int(o, "seed", 0, 1LL << 53) : 0) : next_seed);
      for (const Saved& sv : saved) {
        if (resume_skip != "value") restore_param_state(*sv.tab, sv.id, 'w', sv.w.data(), (int64_t)sv.w.size());
        if (resume_skip != "m") restore_param_state(*sv.tab, sv.id, 'm', sv.m.data(), (int64_t)sv.m.size());
        if (resume_skip != "v") restore_param_state(*sv.tab, sv.id, 'v', sv.v.data(), (int64_t)sv.v.size());
      }
    }
    if (s == write_step) {
      ParamTable& tab = llm->params();
      tab.sync_host();
      std::unique_lock<std::shared_mutex> lock(tab.mutex());
      float* v = tab.values((int)write_id);
      std::fill(v, v + tab[(int)write_id].numel(), write_value);
      tab.touch();
    }
    if (s == abort_step) {  // stopped at its abort_check-th cancellation check, then the trainer goes on
      t->cancel.reset(abort_check);
      bool aborted = false;
      try {
        t->accumulate(*batch, 1.0f);
      } catch (const Error& e) {
        aborted = e.code() == ErrorCode::Aborted;
        if (!aborted) throw;
      }
      if (!aborted) throw Error(ErrorCode::Internal, "abortAt: the step ran to its end");
      t->zero_grads();
      t->cancel.reset();
    }
    const Trainer::Loss l = t->accumulate(*batch, 1.0f);
    if (reduce_times > 0) {
      TimesReducer r;
      r.k = (float)reduce_times;
      if (auto* d = dynamic_cast<cuda::DeviceTrainer<EmuDevice>*>(t.get())) r.dev = &d->device();
      t->allreduce_grads(r);
    }
    if (auto* d = dynamic_cast<cuda::DeviceTrainer<EmuDevice>*>(t.get())) param_bytes = (double)d->own_param_bytes();
    const double norm = t->grad_norm();
    t->sync_state();
    if (s == 0)
      for (ParamTable* tab : {&llm->params(), vision ? &vision->params() : nullptr})
        if (tab)
          for (int i = 0; i < tab->size(); ++i)
            if ((*tab)[i].trainable && (*tab)[i].tied_to < 0) grads.Set((*tab)[i].name, f32_copy(env, tab->grads(i), (*tab)[i].numel()));
    t->update(groups, s + 1, 1.0f, 1.0f, 0.9f, 0.999f, 1e-8f);
    losses.Set((uint32_t)s, l.loss);
    norms.Set((uint32_t)s, norm);
  }
  // the final values (as an inference forward reads them: after the table's host sync) and moments
  Napi::Object values = Napi::Object::New(env), moments = Napi::Object::New(env);
  for (ParamTable* tab : {&llm->params(), vision ? &vision->params() : nullptr}) {
    if (!tab) continue;
    tab->sync_host();
    for (int i = 0; i < tab->size(); ++i)
      if ((*tab)[i].trainable && (*tab)[i].tied_to < 0) values.Set((*tab)[i].name, f32_copy(env, tab->values(i), (*tab)[i].numel()));
  }
  t->sync_state();
  for (ParamTable* tab : {&llm->params(), vision ? &vision->params() : nullptr})
    if (tab)
      for (int i = 0; i < tab->size(); ++i)
        if ((*tab)[i].trainable && (*tab)[i].tied_to < 0) moments.Set((*tab)[i].name, f32_copy(env, tab->adam_v(i), (*tab)[i].numel()));
  t.reset();
  Napi::Object r = Napi::Object::New(env);
  r.Set("losses", losses), r.Set("norms", norms), r.Set("grads", grads), r.Set("values", values), r.Set("v", moments);
  r.Set("paramBytes", param_bytes);
  return r;
}

// setOptions({ blockOrder: 'forward' | 'reverse' | 'shuffle', seed, reverseThreads, poisonShared })
Napi::Value SetOptions(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw_js(env, ErrorCode::Argument, "setOptions(options)");
  Napi::Object o = info[0].As<Napi::Object>();
  simt::Options opt;
  const std::string order = o.Get("blockOrder").IsString() ? o.Get("blockOrder").As<Napi::String>().Utf8Value() : "forward";
  if (order == "forward") opt.block_order = simt::BlockOrder::Forward;
  else if (order == "reverse") opt.block_order = simt::BlockOrder::Reverse;
  else if (order == "shuffle") opt.block_order = simt::BlockOrder::Shuffle;
  else throw_js(env, ErrorCode::Argument, "blockOrder must be 'forward', 'reverse' or 'shuffle'");
  if (o.Has("seed")) opt.seed = (uint64_t)get_int(env, o.Get("seed"), "seed", 0, 1LL << 53);
  opt.reverse_threads = o.Get("reverseThreads").ToBoolean();
  opt.poison_shared = !o.Has("poisonShared") || o.Get("poisonShared").ToBoolean();
  simt::set_options(opt);
  return env.Undefined();
}

Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const simt::Stats s = simt::stats();
  Napi::Object o = Napi::Object::New(env);
  o.Set("launches", (double)s.launches);
  o.Set("blocks", (double)s.blocks);
  o.Set("threads", (double)s.threads);
  o.Set("switches", (double)s.switches);
  return o;
}

// throwFrom(kind, where): throws a C++ exception of `kind` ('medllava' | 'system_error' | 'bad_alloc' |
// 'logic' | 'unknown') through the addon's own guard ('sync') or PromiseWorker ('async'), so the test can
// check the code each becomes (E_INTERNAL for ours, E_OOM for allocation, never E_ARGUMENT).
[[noreturn]] void throw_kind(const std::string& kind) {
  if (kind == "medllava") throw Error(ErrorCode::Shape, "a medllava error");
  if (kind == "system_error") throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again), "thread");
  if (kind == "bad_alloc") throw std::bad_alloc();
  if (kind == "logic") throw std::logic_error("an invariant broke");
  throw 42;
}

Napi::Value ThrowFrom(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string kind = info[0].ToString().Utf8Value(), where = info[1].ToString().Utf8Value();
  if (where == "sync") throw_kind(kind);
  return PromiseWorker::Start(env, [kind] { throw_kind(kind); }, [](Napi::Env e) { return e.Undefined(); });
}

// emulatedToBf16(x: Float32Array) -> Uint16Array: the to_bf16 kernel (mixed-precision compute copies) under the
//   emulator, its output's bf16 bits
Napi::Value EmulatedToBf16(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw_js(env, ErrorCode::Argument, "emulatedToBf16(x: Float32Array)");
  Napi::Float32Array x = info[0].As<Napi::Float32Array>();
  const int64_t n = (int64_t)x.ElementLength();
  EmuDevice dev((size_t)1 << 30);
  float* d = static_cast<float*>(dev.alloc((size_t)n * 4 + 4));
  void* o = dev.alloc((size_t)n * 2 + 2);
  dev.upload(d, x.Data(), (size_t)n * 4, nullptr);
  cuda::to_bf16_launch(d, o, n, nullptr);
  Napi::Uint16Array out = Napi::Uint16Array::New(env, (size_t)n);
  dev.download(out.Data(), o, (size_t)n * 2, nullptr);
  dev.release(d), dev.release(o);
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("throwFrom", Napi::Function::New<guarded<ThrowFrom>>(env, "throwFrom"));
  exports.Set("run", Napi::Function::New<guarded<Run>>(env, "run"));
  exports.Set("matmul", Napi::Function::New<guarded<Matmul>>(env, "matmul"));
  exports.Set("cudaOp", Napi::Function::New<guarded<CudaOp>>(env, "cudaOp"));
  exports.Set("emulatedGreedy", Napi::Function::New<guarded<EmulatedGreedy>>(env, "emulatedGreedy"));
  exports.Set("emulatedVision", Napi::Function::New<guarded<EmulatedVision>>(env, "emulatedVision"));
  exports.Set("emulatedVisionEdited", Napi::Function::New<guarded<EmulatedVisionEdited>>(env, "emulatedVisionEdited"));
  exports.Set("trainForward", Napi::Function::New<guarded<TrainForward>>(env, "trainForward"));
  exports.Set("visionTrainForward", Napi::Function::New<guarded<VisionTrainForward>>(env, "visionTrainForward"));
  exports.Set("emulatedLlm", Napi::Function::New<guarded<EmulatedLlm>>(env, "emulatedLlm"));
  exports.Set("trainGradients", Napi::Function::New<guarded<TrainGradients>>(env, "trainGradients"));
  exports.Set("trainerSteps", Napi::Function::New<guarded<TrainerSteps>>(env, "trainerSteps"));
  exports.Set("emulatedToBf16", Napi::Function::New<guarded<EmulatedToBf16>>(env, "emulatedToBf16"));
  exports.Set("setOptions", Napi::Function::New<guarded<SetOptions>>(env, "setOptions"));
  exports.Set("stats", Napi::Function::New<guarded<Stats>>(env, "stats"));
  return exports;
}

}  // namespace
}  // namespace napi
}  // namespace medllava

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return medllava::napi::Init(env, exports); }
NODE_API_MODULE(medllava_simt, InitModule)
