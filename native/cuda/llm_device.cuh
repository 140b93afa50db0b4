// The LLaMA / Mistral model on a CUDA device: device memory for its parameters (DeviceParams), one
// KV cache, activation arena and stream per sequence, and the graph of native/model/llm_graph.h run
// over CudaOps — the layer order is not repeated here. defines: LlmDevice, LlmRunnerOn.
//
// Header-only so that it compiles twice: by nvcc into the addon (the real device) and by the host
// compiler into the test addon, where DeviceMemory is host memory and every launch runs under the
// SIMT emulator — which is how the tests run the whole model "on CUDA" without a GPU.
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../core/error.h"
#include "../model/llm.h"
#include "compat.cuh"
#include "device.cuh"       // defines: DeviceMemory, DeviceParams, mib
#include "ops_cuda.cuh"     // defines: CudaOps
#include "kernels.cuh"   // defines: topk_launch, kMaxHd

namespace medllava {
namespace cuda {

class LlmDevice {
 public:
  // One chat's state on the device: its KV cache, its activation arena and its own stream, so that
  // sequences share only the (read-only) weights and can run concurrently.
  struct Sequence {
    uint16_t* k = nullptr;  // (layers, capacity, kv_heads · head_dim) f16
    uint16_t* v = nullptr;
    int64_t capacity = 0;  // positions the cache holds (≤ the model's context)
    int64_t n_past = 0;
    medllava_stream_t stream = nullptr;
    float* arena = nullptr;
    size_t arena_n = 0;  // floats the arena was carved for (LoRA adapters added since need more)
    LlmScratch s;  // (max_batch, ·) activations
    float *logits = nullptr, *partial = nullptr, *ml = nullptr, *pick_val = nullptr;
    int32_t *ids = nullptr, *pick = nullptr;
  };

  // Uploads `m`'s parameters. E_OOM, before anything is allocated, when weights + activations + one
  // sequence's KV cache do not fit in what the device has free (the message says how much is needed).
  LlmDevice(const Llm& m, DeviceMemory& dev, int64_t max_batch = 256) : m_(m), dev_(dev), cfg_(m.config()), params_(m.params(), dev) {
    const LlmConfig& c = cfg_;
    tmax_ = max_batch < 1 ? 1 : max_batch;
    if (c.hidden / c.heads > kMaxHd) throw Error(ErrorCode::Unsupported, "CUDA attention supports head dims up to " + std::to_string(kMaxHd));
    const size_t weights = DeviceParams::stored_bytes(m.params());
    const size_t need = weights + sequence_bytes();
    const size_t free_bytes = dev.available();
    if (need > free_bytes)
      throw Error(ErrorCode::OOM, "the model needs " + mib(need) + " of device memory (weights " + mib(weights) + ", and per chat " +
                                      mib(arena_floats() * 4) + " of activations + a " + std::to_string(c.context) + "-token KV cache of " +
                                      mib(kv_bytes()) + "); " + mib(free_bytes) + " are free");
    params_.upload_all();
  }
  LlmDevice(const LlmDevice&) = delete;
  LlmDevice& operator=(const LlmDevice&) = delete;

  // K + V bytes of a cache of `tokens` positions (0: the model's whole context)
  size_t kv_bytes(int64_t tokens = 0) const {
    const LlmConfig& c = cfg_;
    return (size_t)(c.layers * (tokens > 0 ? tokens : c.context) * c.kv_heads * (c.hidden / c.heads)) * 2 * 2;
  }
  size_t sequence_bytes(int64_t tokens = 0) const { return kv_bytes(tokens) + arena_floats() * 4; }

  // A sequence whose cache holds `capacity` positions (0 or more than the context: the whole context).
  Sequence new_sequence(int64_t capacity = 0) {
    if (capacity <= 0 || capacity > cfg_.context) capacity = cfg_.context;
    if (sequence_bytes(capacity) > dev_.available())
      throw Error(ErrorCode::OOM, "a chat needs " + mib(sequence_bytes(capacity)) + " of device memory (KV cache " +
                                      mib(kv_bytes(capacity)) + ", activations " + mib(arena_floats() * 4) + "); " +
                                      mib(dev_.available()) + " are free");
    Sequence s;
    s.capacity = capacity;
    try {
      s.k = static_cast<uint16_t*>(dev_.alloc(kv_bytes(capacity) / 2));
      s.v = static_cast<uint16_t*>(dev_.alloc(kv_bytes(capacity) / 2));
      s.stream = dev_.new_stream();
      carve(s);
    } catch (...) {
      free_sequence(s);
      throw;
    }
    return s;
  }
  // (Re)allocates the sequence's activation arena for the model's current shape and carves it.
  void carve(Sequence& s) {
    if (s.arena) dev_.release(s.arena), s.arena = nullptr;
    s.arena_n = arena_floats();
    s.arena = static_cast<float*>(dev_.alloc(s.arena_n * 4));
    const LlmConfig& c = cfg_;
    float* p = s.arena;
    auto take = [&](int64_t n) { float* r = p; p += n; return r; };
    s.s.carve(take(s.s.floats(c, m_.ids(), tmax_)), c, m_.ids(), tmax_);
    s.logits = take(tmax_ * c.vocab);
    s.partial = take(c.heads * CudaOps::kMaxSplits * (c.hidden / c.heads)), s.ml = take(c.heads * CudaOps::kMaxSplits * 2);
    s.ids = reinterpret_cast<int32_t*>(take(tmax_));
    s.pick = reinterpret_cast<int32_t*>(take(1));
    s.pick_val = take(1);
  }
  void free_sequence(Sequence& s) {
    if (s.k) dev_.release(s.k);
    if (s.v) dev_.release(s.v);
    if (s.arena) dev_.release(s.arena);
    if (s.stream) dev_.free_stream(s.stream);
    s = Sequence{};
  }

  // As Llm::forward (which checked the tokens and spans): `tokens` after the sequence's n_past positions, in
  // chunks of at most max_batch; logits of every token (all) or the last one into out (host; may be
  // null: greedy() reads them on the device).
  void forward(Sequence& s, const int32_t* tokens, int64_t T, bool all, float* out, const RowSpans& images = {}) {
    const LlmConfig& c = cfg_;
    if (T <= 0) throw Error(ErrorCode::Argument, "forward needs at least one token");
    if (s.n_past + T > s.capacity)
      throw Error(ErrorCode::ContextFull, "the context holds " + std::to_string(s.capacity) + " tokens; " +
                                              std::to_string(s.n_past) + " are used and " + std::to_string(T) + " more were given");
    dev_.bind();
    const std::vector<WeightView>& W = params_.views();
    if (s.arena_n != arena_floats()) carve(s);  // adapters were added (Llm::add_lora): more LoRA scratch
    CudaOps ops{dev_, s.stream, s.ids, s.partial, s.ml};
    for (int64_t t0 = 0; t0 < T; t0 += tmax_) {
      const int64_t n = T - t0 < tmax_ ? T - t0 : tmax_;
      const bool last_chunk = t0 + n == T;
      llm_blocks(ops, c, m_.ids(), W, tokens + t0, spans_in(images, t0, n, c.hidden), n, s.s, KvView{s.k, s.v, s.capacity, s.n_past});
      s.n_past += n;
      if (all || last_chunk) {
        const int64_t rows = all ? n : 1;
        llm_head(ops, c, m_.ids(), W, all ? 0 : n - 1, rows, s.s, s.logits);
        if (out) dev_.download(out + (all ? t0 * c.vocab : 0), s.logits, (size_t)(rows * c.vocab) * 4, s.stream);
      }
    }
    dev_.check("forward");
  }

  DeviceParams& params() { return params_; }  // a device trainer borrows its frozen weights

  // The most likely next token after the sequence's last forward (argmax of its last row, on the device).
  int32_t greedy(Sequence& s, int64_t last_rows) {
    dev_.bind();
    topk_launch(s.logits + (last_rows - 1) * cfg_.vocab, (int)cfg_.vocab, 1, s.pick, s.pick_val, s.stream);
    int32_t id = -1;
    dev_.download(&id, s.pick, 4, s.stream);
    dev_.check("argmax");
    return id;
  }

 private:
  size_t arena_floats() const {
    const LlmConfig& c = cfg_;
    const int64_t hd = c.hidden / c.heads;
    return (size_t)(LlmScratch{}.floats(c, m_.ids(), tmax_) + tmax_ * c.vocab + c.heads * CudaOps::kMaxSplits * (hd + 2) + tmax_ + 2 + 64);
  }

  const Llm& m_;
  DeviceMemory& dev_;
  LlmConfig cfg_;
  DeviceParams params_;
  int64_t tmax_ = 0;
};

// The LlmDeviceRunner (native/model/llm.h) over an LlmDevice on a `Device` — the CUDA runtime's in
// the addon, the emulated one in the tests, so the tests drive the same path Llm::forward takes.
// Each chat (sequence) has its own KV cache, activation arena and stream; chats share only the
// weights, so their forwards run concurrently (one at a time per chat: the context refuses overlaps).
template <class Device>
class LlmRunnerOn : public LlmDeviceRunner {
 public:
  template <class... DeviceArgs>
  explicit LlmRunnerOn(const Llm& m, DeviceArgs... args) : st_(std::make_shared<State>(args...)) {
    st_->model = std::make_unique<LlmDevice>(m, st_->dev);
  }
  std::shared_ptr<void> new_sequence(int64_t capacity) override {
    st_->dev.bind();
    auto* seq = new LlmDevice::Sequence(st_->model->new_sequence(capacity));
    auto st = st_;  // the device outlives every sequence on it
    return std::shared_ptr<void>(seq, [st](void* p) {
      auto* s = static_cast<LlmDevice::Sequence*>(p);
      st->dev.bind();
      st->model->free_sequence(*s);
      delete s;
    });
  }
  void forward(void* sequence, int64_t n_past, const int32_t* tokens, int64_t T, bool all, float* out,
               const RowSpans& images) override {
    auto* s = static_cast<LlmDevice::Sequence*>(sequence);
    s->n_past = n_past;  // the cache may have been truncated: positions from n_past on are rewritten
    st_->model->forward(*s, tokens, T, all, out, images);
  }
  Device& device() { return st_->dev; }
  LlmDevice& model() { return *st_->model; }

 private:
  struct State {
    template <class... DeviceArgs>
    explicit State(DeviceArgs... args) : dev(args...) {}
    ~State() {
      dev.bind();
      model.reset();  // its parameters leave the device before the device goes
    }
    Device dev;  // declared first: built first, destroyed last
    std::unique_ptr<LlmDevice> model;
  };
  std::shared_ptr<State> st_;
};

}  // namespace cuda
}  // namespace medllava
