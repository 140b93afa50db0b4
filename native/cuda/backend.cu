// CUDA backend host code: device discovery, memory, and the launchers around native/cuda/*.cuh.
#include <cuda_runtime.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <vector>
#include <string>

#include "../core/error.h"
#include "backend.h"

#include <dlfcn.h>

#include <chrono>
#include <mutex>
#include <thread>

#include "../dist/mpi.h"
#include "bench.cuh"       // defines: peak_fma_kernel, peak_wmma_kernel
#include "device.cuh"      // defines: DeviceMemory
#include "llm_device.cuh"  // defines: LlmDevice (and through it every kernel)
#include "matmul.cuh"      // defines: matmul_tiled_kernel, matmul_wmma_kernel, matmul_launch
#include "ops_cuda.cuh"    // defines: CudaOps
#include "train_device.cuh"  // defines: DeviceTrainer
#include "vision_device.cuh"  // defines: VisionDevice

namespace medllava {
namespace cuda_backend {

namespace {
std::mutex g_mutex;
bool g_queried = false;
bool g_disabled = false;
Info g_info;

std::string cuda_message(cudaError_t e, const char* call) {
  return std::string(call) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

void check(cudaError_t e, const char* call) {
  if (e == cudaErrorMemoryAllocation) throw Error(ErrorCode::OOM, cuda_message(e, call));
  if (e != cudaSuccess) throw Error(ErrorCode::Cuda, cuda_message(e, call));
}

Info query_locked() {
  Info i;
  i.compiled = true;
  if (g_disabled) {
    i.reason = g_info.reason;
    return i;
  }
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    i.reason = cuda_message(e, "cudaGetDeviceCount");
    cudaGetLastError();  // clear the sticky error
    return i;
  }
  if (count == 0) {
    i.reason = "cudaGetDeviceCount: no CUDA devices";
    return i;
  }
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, d) != cudaSuccess) continue;
    i.devices.push_back({p.name, (uint64_t)p.totalGlobalMem, std::to_string(p.major) + "." + std::to_string(p.minor)});
  }
  i.available = !i.devices.empty();
  if (!i.available) i.reason = "cudaGetDeviceProperties failed for every device";
  return i;
}

struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) {
    if (bytes) check(cudaMalloc(&ptr, bytes), "cudaMalloc");
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
};
}  // namespace

Info info() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_queried) {
    g_info = query_locked();
    g_queried = true;
  }
  return g_info;
}

void disable(const std::string& reason) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_disabled = true;
  g_queried = true;
  g_info = Info{};
  g_info.compiled = true;
  g_info.reason = reason;
}

namespace {
void check_device(int device) {
  const Info i = info();
  if (!i.available) throw Error(ErrorCode::Cuda, "CUDA is not available: " + i.reason);
  if (device < 0 || device >= (int)i.devices.size())
    throw Error(ErrorCode::Argument, "CUDA device " + std::to_string(device) + " is not there: this machine has " +
                                         std::to_string(i.devices.size()) + " (0 to " + std::to_string((int)i.devices.size() - 1) + ")");
}
}  // namespace

void matmul(const MatmulArgs& p, int device) {
  check_device(device);
  check(cudaSetDevice(device), "cudaSetDevice");
  if (dtype_is_block(p.w_type))
    throw Error(ErrorCode::Unsupported, std::string("CUDA matmul with ") + dtype_name(p.w_type) + " weights is not implemented yet");
  if (p.M == 0) return;
  if (p.M > INT32_MAX || p.N > INT32_MAX || p.K > INT32_MAX)
    throw Error(ErrorCode::Shape, "matmul: dimensions beyond 2^31 are not supported on CUDA");
  const size_t a_bytes = (size_t)(p.M * p.K) * 4, w_bytes = (size_t)(p.N * p.K) * dtype_size(p.w_type);
  const size_t o_bytes = (size_t)(p.M * p.N) * 4, b_bytes = p.bias ? (size_t)p.N * 4 : 0;
  size_t free_bytes = 0, total_bytes = 0;
  check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  const size_t need = a_bytes + w_bytes + o_bytes + b_bytes;
  if (need > free_bytes)
    throw Error(ErrorCode::OOM, "matmul needs " + std::to_string(need) + " bytes of device memory; " +
                                    std::to_string(free_bytes) + " are free");
  DeviceBuffer a(a_bytes), w(w_bytes), out(o_bytes), bias(b_bytes);
  check(cudaMemcpy(a.ptr, p.a, a_bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  check(cudaMemcpy(w.ptr, p.w, w_bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  if (p.bias) check(cudaMemcpy(bias.ptr, p.bias, b_bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  cuda::matmul_launch(static_cast<const float*>(a.ptr), w.ptr, p.w_type, p.bias ? static_cast<const float*>(bias.ptr) : nullptr,
                      static_cast<float*>(out.ptr), (int)p.M, (int)p.N, (int)p.K, p.act, cuda::MatmulKernel::Auto, nullptr);
  check(cudaGetLastError(), "matmul kernel launch");
  check(cudaDeviceSynchronize(), "matmul kernel");
  check(cudaMemcpy(p.out, out.ptr, o_bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
}

namespace {
// One device through the CUDA runtime: one default stream; uploads from pageable memory return once
// staged. Every call that reaches the runtime runs on a thread where bind() made the device current.
class CudaDevice : public cuda::DeviceMemory {
 public:
  explicit CudaDevice(int index = 0) : index_(index) {
    bind();
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ~CudaDevice() override {
    cudaSetDevice(index_);
    cudaStreamDestroy(stream_);
  }
  int index() const override { return index_; }
  void bind() override { check(cudaSetDevice(index_), "cudaSetDevice"); }
  void* alloc(size_t bytes) override {
    void* p = nullptr;
    check(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc");
    return p;
  }
  void release(void* p) override { cudaFree(p); }
  void upload(void* dst, const void* src, size_t bytes, medllava_stream_t s) override {
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync (to the device)");
  }
  void download(void* dst, const void* src, size_t bytes, medllava_stream_t s) override {
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync (from the device)");
    check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  }
  void copy(void* dst, const void* src, size_t bytes, medllava_stream_t s) override {
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync (on the device)");
  }
  void sync(medllava_stream_t s) override { check(cudaStreamSynchronize(s), "cudaStreamSynchronize"); }
  medllava_stream_t new_stream() override {
    // weights are uploaded on the default stream: finish that before another stream reads them
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    cudaStream_t s = nullptr;
    check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
    return s;
  }
  void free_stream(medllava_stream_t s) override { cudaStreamDestroy(s); }
  size_t available() override {
    size_t free_bytes = 0, total = 0;
    check(cudaMemGetInfo(&free_bytes, &total), "cudaMemGetInfo");
    return free_bytes;
  }
  medllava_stream_t stream() override { return stream_; }
  void check(const char* what) override { cuda_backend::check(cudaGetLastError(), what); }

 private:
  static void check(cudaError_t e, const char* call) { cuda_backend::check(e, call); }
  int index_ = 0;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

namespace {
// Median milliseconds of `reps` launches of f() on `stream`, after two warm-up launches.
template <class F>
double time_ms(cudaStream_t stream, F f, int reps = 20) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "cudaEventCreate");
  check(cudaEventCreate(&b), "cudaEventCreate");
  f();
  f();
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    check(cudaEventRecord(a, stream), "cudaEventRecord");
    f();
    check(cudaEventRecord(b, stream), "cudaEventRecord");
    check(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    t.push_back(ms);
  }
  check(cudaGetLastError(), "benchmark kernel");
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}
}  // namespace

std::vector<KernelBench> bench_kernels(DevicePeaks& peaks, int device) {
  check_device(device);
  CudaDevice dev(device);
  cudaStream_t st = dev.stream();
  std::vector<void*> bufs;
  auto buf = [&](size_t bytes) {
    void* p = dev.alloc(bytes);
    check(cudaMemsetAsync(p, 0, bytes, st), "cudaMemsetAsync");  // zeros: valid f32 / f16 / bf16 / block values
    bufs.push_back(p);
    return p;
  };
  std::vector<KernelBench> out;
  try {
    // peaks
    const size_t big = (size_t)1 << 30;
    void* src = buf(big);
    void* dst = buf(big);
    const double copy_ms = time_ms(st, [&] { check(cudaMemcpyAsync(dst, src, big, cudaMemcpyDeviceToDevice, st), "copy"); });
    peaks.bandwidth_gbs = 2.0 * (double)big / (copy_ms * 1e-3) / 1e9;
    int sms = 0;
    check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    float* sink = static_cast<float*>(buf((size_t)sms * 8 * 256 * 4));
    const int iters = 1 << 14;
    const double fma_ms = time_ms(st, [&] { MEDLLAVA_LAUNCH(cuda::peak_fma_kernel, dim3(sms * 8), dim3(256), 0, st, sink, iters, 0); });
    peaks.fp32_tflops = (double)sms * 8 * 256 * iters * 8 * 2 / (fma_ms * 1e-3) / 1e12;
    const double mma_ms = time_ms(st, [&] { MEDLLAVA_LAUNCH(cuda::peak_wmma_kernel, dim3(sms * 8), dim3(128), 0, st, sink, iters / 4, 0); });
    peaks.tensor_tflops = (double)sms * 8 * 4 * (iters / 4) * 4 * (16.0 * 16 * 16 * 2) / (mma_ms * 1e-3) / 1e12;

    auto add = [&](const char* k, std::string shape, double bytes, double flops, double ms) {
      out.push_back({k, std::move(shape), ms, bytes, flops});
    };
    // projector (LLaVA-Med v1.5 widths), bf16 weights, wmma with the fused GELU epilogue
    struct Proj {
      int K, N;
      Activation act;
    };
    for (const Proj& pr : {Proj{1024, 4096, Activation::Gelu}, Proj{4096, 4096, Activation::None}}) {
      const int M = 576, K = pr.K, N = pr.N;
      const Activation act = pr.act;
      float* a = static_cast<float*>(buf((size_t)M * K * 4));
      void* w = buf((size_t)N * K * 2);
      float* o = static_cast<float*>(buf((size_t)M * N * 4));
      const double ms = time_ms(st, [&] { cuda::matmul_launch(a, w, DType::BF16, nullptr, o, M, N, K, act, cuda::MatmulKernel::Auto, st); });
      add("matmul_wmma_kernel<bf16>", "576×" + std::to_string(K) + " → " + std::to_string(N), (double)N * K * 2 + (double)M * (K + N) * 4,
          2.0 * M * K * N, ms);
    }
    // ViT-L/336 patch attention, one layer
    {
      const int T = 577, H = 16, hd = 64;
      float* q = static_cast<float*>(buf((size_t)T * H * hd * 4 * 4));
      const double ms = time_ms(st, [&] {
        cuda::flash_attention_launch<float>(q, q + T * H * hd, q + 2 * T * H * hd, q + 3 * T * H * hd, T, H, H, hd, T, 0, false, st);
      });
      add("flash_attention_kernel<f32>", "ViT-L/336: 577 tokens, 16 heads × 64", 4.0 * T * H * hd * 4, 4.0 * T * T * hd * H, ms);
    }
    // Mistral-7B decode attention, one layer, contexts 1k / 4k / 32k
    for (int ctx : {1024, 4096, 32768}) {
      const int H = 32, KVH = 8, hd = 128;
      uint16_t* kv = static_cast<uint16_t*>(buf((size_t)ctx * KVH * hd * 2 * 2));
      float* q = static_cast<float*>(buf((size_t)H * hd * 4 * 2));
      const int splits = cuda::decode_splits(ctx);
      float* part = static_cast<float*>(buf((size_t)H * splits * (hd + 2) * 4));
      const double ms = time_ms(st, [&] {
        cuda::attention_decode_launch<uint16_t>(q, kv, kv + (size_t)ctx * KVH * hd, q + H * hd, part, part + H * splits * hd, H, KVH, hd,
                                                ctx, splits, st);
      });
      add("attention_decode_kernel + combine", "Mistral-7B layer, context " + std::to_string(ctx), (double)ctx * KVH * hd * 4,
          4.0 * ctx * hd * H, ms);
    }
    // decode GEMV, one Mistral-7B FFN matrix (14336 × 4096)
    for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_K}) {
      const int N = 14336, K = 4096;
      void* w = buf(dtype_bytes(t, (int64_t)N * K));
      float* a = static_cast<float*>(buf((size_t)K * 4));
      float* o = static_cast<float*>(buf((size_t)N * 4));
      const double ms = time_ms(st, [&] { cuda::matmul_launch(a, w, t, nullptr, o, 1, N, K, Activation::None, cuda::MatmulKernel::Auto, st); });
      add((std::string("matmul_q_gemv_kernel ") + dtype_name(t)).c_str(), "1×4096 → 14336", (double)dtype_bytes(t, (int64_t)N * K),
          2.0 * N * K, ms);
    }
    // element-wise and norms at 7B / ViT shapes
    {
      const int D = 4096, T = 512, F = 14336;
      float* x = static_cast<float*>(buf((size_t)T * F * 4 * 3));
      add("rmsnorm_kernel", "512 × 4096", 3.0 * T * D * 4, 3.0 * T * D,
          time_ms(st, [&] { cuda::rmsnorm_launch(x, x, x + T * D, T, D, 1e-5f, st); }));
      add("layernorm_kernel", "577 × 1024", 3.0 * 577 * 1024 * 4, 5.0 * 577 * 1024,
          time_ms(st, [&] { cuda::layernorm_launch(x, x, x, x + 577 * 1024, 577, 1024, 1e-5f, st); }));
      add("rope_kernel", "512 tokens × 32 heads × 128", 2.0 * T * D * 4, 6.0 * T * D,
          time_ms(st, [&] { cuda::rope_launch(x, T, 32, 128, 0, 10000.0f, false, st); }));
      add("silu_mul_kernel", "512 × 14336", 3.0 * T * F * 4, 4.0 * T * F,
          time_ms(st, [&] { cuda::silu_mul_launch(x, x + (size_t)T * F, x + 2 * (size_t)T * F, (int64_t)T * F, st); }));
      add("residual_kernel", "512 × 4096", 3.0 * T * D * 4, 2.0 * T * D,
          time_ms(st, [&] { cuda::residual_launch(x, x + T * D, nullptr, 1.0f, (int64_t)T * D, D, st); }));
      add("kv_append_kernel", "512 × 1024", T * 1024 * 6.0, 0,
          time_ms(st, [&] { cuda::kv_append_launch(x, reinterpret_cast<uint16_t*>(x + T * D), 0, T, 1024, st); }));
      int32_t* ids = static_cast<int32_t*>(buf((size_t)T * 4));
      void* table = buf((size_t)32000 * D * 2);
      add("embed_kernel f16", "512 tokens × 4096", T * D * 6.0, 0,
          time_ms(st, [&] { cuda::embed_launch(table, DType::F16, ids, x, T, D, st); }));
      add("topk_kernel", "k = 40 of 32000", 40.0 * 32000 * 4, 0,
          time_ms(st, [&] { cuda::topk_launch(x, 32000, 40, ids, x + 40000, st); }, 5));
    }
  } catch (...) {
    for (void* p : bufs) dev.release(p);
    throw;
  }
  for (void* p : bufs) dev.release(p);
  return out;
}

void run_op(OpCall& call, int device) {
  check_device(device);
  CudaDevice dev(device);
  const medllava_stream_t st = dev.stream();
  std::vector<void*> ptr(call.bufs.size(), nullptr);
  std::vector<void*> owned;
  try {
    for (size_t k = 0; k < call.bufs.size(); ++k) {
      const OpBuf& b = call.bufs[k];
      if (!b.bytes) continue;
      ptr[k] = dev.alloc(b.bytes);
      owned.push_back(ptr[k]);
      if (b.in) dev.upload(ptr[k], b.host, b.bytes, st);
      else check(cudaMemsetAsync(ptr[k], 0xff, b.bytes, st), "cudaMemsetAsync");  // poisoned: NaN floats
    }
    const OpScratch sc = op_scratch(call);
    int32_t* ids = sc.ids ? static_cast<int32_t*>(dev.alloc((size_t)sc.ids * 4)) : nullptr;
    if (ids) owned.push_back(ids);
    float* partial = sc.floats ? static_cast<float*>(dev.alloc((size_t)sc.floats * 4)) : nullptr;
    if (partial) owned.push_back(partial);
    const int64_t heads = call.op == OpId::attention_cached ? call.i[2] : 0;
    cuda::CudaOps ops{dev, st, ids, partial, partial ? partial + heads * cuda::CudaOps::kMaxSplits * call.i[4] : nullptr};
    exec_op(ops, call, ptr.data());
    dev.check(("cudaOp " + std::to_string((int)call.op)).c_str());
    for (size_t k = 0; k < call.bufs.size(); ++k)
      if (call.bufs[k].out && ptr[k]) dev.download(call.bufs[k].host, ptr[k], call.bufs[k].bytes, st);
  } catch (...) {
    for (void* p : owned) dev.release(p);
    throw;
  }
  for (void* p : owned) dev.release(p);
}

std::shared_ptr<VisionDeviceRunner> load_vision(const Vision& v, int device) {
  check_device(device);
  return std::make_shared<cuda::VisionRunnerOn<CudaDevice>>(v, device);
}

std::shared_ptr<LlmDeviceRunner> load_llm(const Llm& m, int device) {
  check_device(device);
  return std::make_shared<cuda::LlmRunnerOn<CudaDevice>>(m, device);
}

std::unique_ptr<Trainer> make_trainer(std::shared_ptr<const Llm> llm, std::shared_ptr<const Vision> vision, int device) {
  check_device(device);
  return std::make_unique<cuda::DeviceTrainer<CudaDevice>>(std::move(llm), std::move(vision), device);
}

// ---- NCCL, opened at run time (it is not in Debian; nothing links against it) ----
// The few declarations used, as NCCL's nccl.h (v2) defines them.
namespace {
typedef struct ncclComm* ncclComm_t;
struct ncclUniqueId { char internal[128]; };
enum { ncclSuccess = 0, ncclInProgress = 7 };
enum { ncclFloat32 = 7 };
enum { ncclSum = 0 };

struct Nccl {
  void* lib = nullptr;
  int (*GetUniqueId)(ncclUniqueId*) = nullptr;
  int (*CommInitRank)(ncclComm_t*, int, ncclUniqueId, int) = nullptr;
  int (*AllReduce)(const void*, void*, size_t, int, int, ncclComm_t, cudaStream_t) = nullptr;
  int (*GroupStart)() = nullptr;
  int (*GroupEnd)() = nullptr;
  int (*CommAbort)(ncclComm_t) = nullptr;
  int (*CommGetAsyncError)(ncclComm_t, int*) = nullptr;
  const char* (*GetErrorString)(int) = nullptr;
};

class NcclReducer : public GradReducer {
 public:
  NcclReducer(int device, int64_t timeout_ms) : device_(device), timeout_ms_(timeout_ms) {
    n_.lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_GLOBAL);
    if (!n_.lib) n_.lib = dlopen("libnccl.so", RTLD_NOW | RTLD_GLOBAL);
    if (!n_.lib)
      throw Error(ErrorCode::Unsupported, std::string("data-parallel training on CUDA needs NCCL, and libnccl.so.2 cannot be opened (") +
                                              dlerror() + "): install NVIDIA's libnccl2, or train on the CPU across MPI ranks");
    sym(n_.GetUniqueId, "ncclGetUniqueId"), sym(n_.CommInitRank, "ncclCommInitRank"), sym(n_.AllReduce, "ncclAllReduce");
    sym(n_.GroupStart, "ncclGroupStart"), sym(n_.GroupEnd, "ncclGroupEnd"), sym(n_.CommAbort, "ncclCommAbort");
    sym(n_.CommGetAsyncError, "ncclCommGetAsyncError"), sym(n_.GetErrorString, "ncclGetErrorString");
    const mpi::Info w = mpi::info();
    if (!w.initialized) throw Error(ErrorCode::Argument, "NCCL is bootstrapped over MPI: initialise MPI first (run under mpirun)");
    // llm.c's way: rank 0 makes the unique id, MPI carries it to the others
    ncclUniqueId id{};
    if (w.rank == 0) check(n_.GetUniqueId(&id), "ncclGetUniqueId");
    mpi::bcast(&id, sizeof id, 0, timeout_ms);
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    const int rc = n_.CommInitRank(&comm_, w.size, id, w.rank);
    if (rc != ncclSuccess)
      throw Error(ErrorCode::Cuda, std::string("ncclCommInitRank: ") + n_.GetErrorString(rc) +
                                       " (two NCCL ranks cannot share one GPU: give each rank its own cudaDevice)");
  }
  void allreduce(float* data, int64_t n, void* stream) override {
    check(n_.AllReduce(data, data, (size_t)n, ncclFloat32, ncclSum, comm_, (cudaStream_t)stream), "ncclAllReduce");
  }
  void finish(void* stream) override {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms_);
    for (;;) {
      const cudaError_t q = cudaStreamQuery((cudaStream_t)stream);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) cuda_check(q, "cudaStreamQuery");
      int async = ncclSuccess;
      n_.CommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        n_.CommAbort(comm_);
        throw Error(ErrorCode::Cuda, std::string("NCCL: ") + n_.GetErrorString(async));
      }
      if (std::chrono::steady_clock::now() > deadline) {
        n_.CommAbort(comm_);  // unblocks the stream
        throw Error(ErrorCode::Timeout, "an NCCL all-reduce did not complete within " + std::to_string(timeout_ms_) +
                                            " ms: another rank has died or stopped; exit this process");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

 private:
  template <class F>
  void sym(F& f, const char* name) {
    f = reinterpret_cast<F>(dlsym(n_.lib, name));
    if (!f) throw Error(ErrorCode::Unsupported, std::string("libnccl has no ") + name + " (NCCL ≥ 2.4 is needed)");
  }
  void check(int rc, const char* what) {
    if (rc != ncclSuccess) throw Error(ErrorCode::Cuda, std::string(what) + ": " + n_.GetErrorString(rc));
  }
  static void cuda_check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) throw Error(ErrorCode::Cuda, std::string(what) + ": " + cudaGetErrorString(e));
  }
  Nccl n_;
  ncclComm_t comm_ = nullptr;
  int device_;
  int64_t timeout_ms_;
};
}  // namespace

GradReducer& nccl_reducer(int device, int64_t timeout_ms) {
  static std::mutex mu;
  static std::unique_ptr<NcclReducer> r;  // one communicator per process, kept for its lifetime
  std::lock_guard<std::mutex> lock(mu);
  if (!r) r = std::make_unique<NcclReducer>(device, timeout_ms);
  return *r;
}

}  // namespace cuda_backend
}  // namespace medllava
