// The LLaMA / Mistral forward pass on a CUDA device: the same graph as native/model/llm.cc (the CPU
// engine, which loads and checks the weights), with every op a kernel of native/cuda/*.cuh. Weights
// go to the device once, in their stored type; each sequence (a chat) owns an f16 KV cache, an
// activation arena planned for a batch of up to max_batch tokens (longer prompts run in chunks) and
// a stream, so sequences share only the weights. Header-only so that it compiles twice: by nvcc into the addon (the real device) and by the
// host compiler into the test addon, where DeviceMemory is host memory and every launch runs under
// the SIMT emulator — which is how the tests run the whole model "on CUDA" without a GPU.
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../core/error.h"
#include "../model/llm.h"
#include "compat.cuh"
#include "matmul.cuh"       // defines: matmul_launch
#include "transformer.cuh"  // defines: the transformer launchers

namespace medllava {
namespace cuda {

// The device as the model code sees it. backend.cu implements it with the CUDA runtime; the test
// addon with host memory (poisoned on allocation) under the emulator.
class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  virtual void* alloc(size_t bytes) = 0;  // E_OOM / E_CUDA
  virtual void release(void* p) = 0;
  // host → device, ordered on `s` (the source may be reused when it returns)
  virtual void upload(void* dst, const void* src, size_t bytes, medllava_stream_t s) = 0;
  // device → host after everything queued on `s`; returns when the bytes are there
  virtual void download(void* dst, const void* src, size_t bytes, medllava_stream_t s) = 0;
  virtual size_t available() = 0;  // bytes free on the device
  virtual medllava_stream_t stream() = 0;  // the default stream (weight uploads)
  virtual medllava_stream_t new_stream() = 0;
  virtual void free_stream(medllava_stream_t s) = 0;
  virtual void check(const char* what) = 0;  // E_CUDA with CUDA's message if a launch failed
};

inline std::string mib(size_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

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
    float *x = nullptr, *h = nullptr, *q = nullptr, *kk = nullptr, *vv = nullptr, *att = nullptr, *o = nullptr, *g = nullptr,
          *u = nullptr, *lora = nullptr, *lora_out = nullptr, *logits = nullptr, *partial = nullptr, *ml = nullptr, *pick_val = nullptr;
    int32_t *ids = nullptr, *pick = nullptr;
  };

  // Uploads `m`'s weights. E_OOM, before anything is allocated, when weights + activations + one
  // sequence's KV cache do not fit in what the device has free (the message says how much is needed).
  LlmDevice(const Llm& m, DeviceMemory& dev, int64_t max_batch = 256) : m_(m), dev_(dev), cfg_(m.config()) {
    const LlmConfig& c = cfg_;
    tmax_ = max_batch < 1 ? 1 : max_batch;
    const int64_t D = c.hidden, hd = D / c.heads, kvd = c.kv_heads * hd;
    if (hd > kMaxHd) throw Error(ErrorCode::Unsupported, "CUDA attention supports head dims up to " + std::to_string(kMaxHd));
    size_t weights = dtype_bytes(m.embed_.type, m.embed_.numel()) + lin_bytes(m.lm_head_) + (size_t)D * 4;
    for (const auto& L : m.layers_)
      weights += lin_bytes(L.wq) + lin_bytes(L.wk) + lin_bytes(L.wv) + lin_bytes(L.wo) + lin_bytes(L.w_gate) +
                 lin_bytes(L.w_up) + lin_bytes(L.w_down) + (size_t)D * 8;
    weights += (size_t)scale_len_ * 4;
    const size_t need = weights + sequence_bytes();
    const size_t free_bytes = dev.available();
    if (need > free_bytes)
      throw Error(ErrorCode::OOM, "the model needs " + mib(need) + " of device memory (weights " + mib(weights) + ", and per chat " +
                                      mib(arena_floats() * 4) + " of activations + a " + std::to_string(c.context) + "-token KV cache of " +
                                      mib(kv_bytes()) + "); " + mib(free_bytes) + " are free");
    try {
      embed_ = upload(m.embed_.data, dtype_bytes(m.embed_.type, m.embed_.numel()));
      lm_head_ = upload_linear(m.lm_head_);
      norm_ = static_cast<float*>(upload(m.norm_.data(), (size_t)D * 4));
      for (const auto& L : m.layers_) {
        Layer y;
        y.attn_norm = static_cast<float*>(upload(L.attn_norm.data(), (size_t)D * 4));
        y.ffn_norm = static_cast<float*>(upload(L.ffn_norm.data(), (size_t)D * 4));
        y.wq = upload_linear(L.wq), y.wk = upload_linear(L.wk), y.wv = upload_linear(L.wv), y.wo = upload_linear(L.wo);
        y.w_gate = upload_linear(L.w_gate), y.w_up = upload_linear(L.w_up), y.w_down = upload_linear(L.w_down);
        layers_.push_back(y);
      }
      if (scale_len_) {
        std::vector<float> sv((size_t)scale_len_, m.lora_scale_);
        scale_ = static_cast<float*>(upload(sv.data(), sv.size() * 4));
      }
    } catch (...) {
      free_all();
      throw;
    }
  }
  ~LlmDevice() { free_all(); }
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
      s.arena = static_cast<float*>(dev_.alloc(arena_floats() * 4));
      s.stream = dev_.new_stream();
    } catch (...) {
      free_sequence(s);
      throw;
    }
    const LlmConfig& c = cfg_;
    const int64_t D = c.hidden, hd = D / c.heads, kvd = c.kv_heads * hd;
    float* p = s.arena;
    auto take = [&](int64_t n) { float* r = p; p += n; return r; };
    s.x = take(tmax_ * D), s.h = take(tmax_ * D), s.q = take(tmax_ * D), s.kk = take(tmax_ * kvd), s.vv = take(tmax_ * kvd);
    s.att = take(tmax_ * D), s.o = take(tmax_ * D), s.g = take(tmax_ * c.ffn), s.u = take(tmax_ * c.ffn);
    s.lora = take(tmax_ * lora_rank_), s.lora_out = take(tmax_ * scale_len_), s.logits = take(tmax_ * c.vocab);
    s.partial = take(c.heads * kMaxSplits * hd), s.ml = take(c.heads * kMaxSplits * 2);
    s.ids = reinterpret_cast<int32_t*>(take(tmax_));
    s.pick = reinterpret_cast<int32_t*>(take(1));
    s.pick_val = take(1);
    return s;
  }
  void free_sequence(Sequence& s) {
    if (s.k) dev_.release(s.k);
    if (s.v) dev_.release(s.v);
    if (s.arena) dev_.release(s.arena);
    if (s.stream) dev_.free_stream(s.stream);
    s = Sequence{};
  }

  // As Llm::forward: `tokens` after the sequence's n_past positions; logits of every token (all) or
  // the last one into out (host; may be null: greedy() reads them on the device).
  void forward(Sequence& s, const int32_t* tokens, int64_t T, bool all, float* out, const float* embeddings = nullptr) {
    const LlmConfig& c = cfg_;
    if (T <= 0) throw Error(ErrorCode::Argument, "forward needs at least one token");
    if (s.n_past + T > s.capacity)
      throw Error(ErrorCode::ContextFull, "the context holds " + std::to_string(s.capacity) + " tokens; " +
                                              std::to_string(s.n_past) + " are used and " + std::to_string(T) + " more were given");
    for (int64_t t = 0; t < T; ++t) {
      if (tokens[t] >= c.vocab) throw Error(ErrorCode::Argument, "token id " + std::to_string(tokens[t]) + " is outside the vocabulary");
      if (tokens[t] < 0 && !embeddings)
        throw Error(ErrorCode::Argument, "token " + std::to_string(tokens[t]) + " needs image embeddings");
    }
    for (int64_t t0 = 0; t0 < T; t0 += tmax_) {
      const int64_t n = T - t0 < tmax_ ? T - t0 : tmax_;
      const bool last_chunk = t0 + n == T;
      chunk(s, tokens + t0, n, embeddings ? embeddings + t0 * c.hidden : nullptr);
      if (all || last_chunk) {
        const int64_t rows = all ? n : 1;
        head(s, rows, all ? 0 : n - 1);
        if (out) dev_.download(out + (all ? t0 * c.vocab : 0), s.logits, (size_t)(rows * c.vocab) * 4, s.stream);
      }
    }
    dev_.check("forward");
  }

  // The most likely next token after the sequence's last forward (argmax of its last row, on the device).
  int32_t greedy(Sequence& s, int64_t last_rows) {
    topk_launch(s.logits + (last_rows - 1) * cfg_.vocab, (int)cfg_.vocab, 1, s.pick, s.pick_val, s.stream);
    int32_t id = -1;
    dev_.download(&id, s.pick, 4, s.stream);
    dev_.check("argmax");
    return id;
  }

 private:
  struct Lin {
    const void* w = nullptr;
    DType type = DType::F32;
    int64_t out = 0, in = 0;
    const void* a = nullptr;  // LoRA (r, in) and (out, r), f32 / f16 / bf16
    const void* b = nullptr;
    DType a_type = DType::F32, b_type = DType::F32;
    int64_t r = 0;
  };
  struct Layer {
    float *attn_norm = nullptr, *ffn_norm = nullptr;
    Lin wq, wk, wv, wo, w_gate, w_up, w_down;
  };
  static constexpr int kMaxSplits = 64;

  size_t lin_bytes(const LinearWeight& w) {
    size_t b = dtype_bytes(w.t.type, w.t.numel());
    if (w.has_lora) {
      b += dtype_bytes(w.lora_a.type, w.lora_a.numel()) + dtype_bytes(w.lora_b.type, w.lora_b.numel());
      if (w.lora_a.shape[0] > lora_rank_) lora_rank_ = w.lora_a.shape[0];
      if (w.t.shape[0] > scale_len_) scale_len_ = w.t.shape[0];
    }
    return b;
  }
  size_t arena_floats() const {
    const LlmConfig& c = cfg_;
    const int64_t D = c.hidden, hd = D / c.heads, kvd = c.kv_heads * hd;
    return (size_t)(tmax_ * (6 * D + 2 * kvd + 2 * c.ffn + lora_rank_ + scale_len_ + c.vocab) + c.heads * kMaxSplits * (hd + 2) + scale_len_ +
                    tmax_ + 2 + 64);
  }
  void* track(void* p) {
    owned_.push_back(p);
    return p;
  }
  void* upload(const void* src, size_t bytes) {
    void* p = track(dev_.alloc(bytes));
    dev_.upload(p, src, bytes, dev_.stream());
    return p;
  }
  Lin upload_linear(const LinearWeight& w) {
    Lin l;
    l.w = upload(w.t.data, dtype_bytes(w.t.type, w.t.numel()));
    l.type = w.t.type, l.out = w.t.shape[0], l.in = w.t.shape[1];
    if (w.has_lora) {
      l.a = upload(w.lora_a.data, dtype_bytes(w.lora_a.type, w.lora_a.numel()));
      l.b = upload(w.lora_b.data, dtype_bytes(w.lora_b.type, w.lora_b.numel()));
      l.a_type = w.lora_a.type, l.b_type = w.lora_b.type, l.r = w.lora_a.shape[0];
    }
    return l;
  }
  void free_all() {
    for (void* p : owned_) dev_.release(p);
    owned_.clear();
  }

  // out(T, l.out) = x · Wᵀ (+ scale · B (A x))
  void linear(Sequence& s, const Lin& l, const float* x, int64_t T, float* out) {
    matmul_launch(x, l.w, l.type, nullptr, out, (int)T, (int)l.out, (int)l.in, Activation::None, MatmulKernel::Auto, s.stream);
    if (!l.a) return;
    matmul_launch(x, l.a, l.a_type, nullptr, s.lora, (int)T, (int)l.r, (int)l.in, Activation::None, MatmulKernel::Auto, s.stream);
    matmul_launch(s.lora, l.b, l.b_type, nullptr, s.lora_out, (int)T, (int)l.out, (int)l.r, Activation::None, MatmulKernel::Auto,
                  s.stream);
    residual_launch(out, s.lora_out, scale_, T * l.out, (int)l.out, s.stream);
  }

  void chunk(Sequence& s, const int32_t* tokens, int64_t T, const float* embeddings) {
    const LlmConfig& c = cfg_;
    const int64_t D = c.hidden, hd = D / c.heads, kvd = c.kv_heads * hd;
    medllava_stream_t st = s.stream;
    std::vector<int32_t> ids((size_t)T);
    for (int64_t t = 0; t < T; ++t) ids[(size_t)t] = tokens[t] < 0 ? 0 : tokens[t];
    dev_.upload(s.ids, ids.data(), (size_t)T * 4, st);
    embed_launch(embed_, m_.embed_.type, s.ids, s.x, (int)T, (int)D, st);
    for (int64_t t = 0; t < T; ++t)  // spliced image rows
      if (tokens[t] < 0) dev_.upload(s.x + t * D, embeddings + t * D, (size_t)D * 4, st);
    const bool adjacent = c.rope_mode == RopeMode::Adjacent;
    const int64_t n_kv = s.n_past + T;
    for (int64_t l = 0; l < c.layers; ++l) {
      const Layer& L = layers_[(size_t)l];
      uint16_t* kc = s.k + l * s.capacity * kvd;
      uint16_t* vc = s.v + l * s.capacity * kvd;
      rmsnorm_launch(s.x, L.attn_norm, s.h, (int)T, (int)D, c.rms_eps, st);
      linear(s, L.wq, s.h, T, s.q);
      linear(s, L.wk, s.h, T, s.kk);
      linear(s, L.wv, s.h, T, s.vv);
      rope_launch(s.q, (int)T, (int)c.heads, (int)hd, (int)s.n_past, c.rope_theta, adjacent, st);
      rope_launch(s.kk, (int)T, (int)c.kv_heads, (int)hd, (int)s.n_past, c.rope_theta, adjacent, st);
      kv_append_launch(s.kk, kc, s.n_past, (int)T, (int)kvd, st);
      kv_append_launch(s.vv, vc, s.n_past, (int)T, (int)kvd, st);
      if (T == 1) {
        int splits = decode_splits((int)n_kv);
        if (splits > kMaxSplits) splits = kMaxSplits;
        attention_decode_launch<uint16_t>(s.q, kc, vc, s.att, s.partial, s.ml, (int)c.heads, (int)c.kv_heads, (int)hd, (int)n_kv,
                                          splits, st);
      } else {
        flash_attention_launch<uint16_t>(s.q, kc, vc, s.att, (int)T, (int)c.heads, (int)c.kv_heads, (int)hd, (int)n_kv,
                                         (int)s.n_past, true, st);
      }
      linear(s, L.wo, s.att, T, s.o);
      residual_launch(s.x, s.o, nullptr, T * D, (int)D, st);
      rmsnorm_launch(s.x, L.ffn_norm, s.h, (int)T, (int)D, c.rms_eps, st);
      linear(s, L.w_gate, s.h, T, s.g);
      linear(s, L.w_up, s.h, T, s.u);
      silu_mul_launch(s.g, s.u, s.g, T * c.ffn, st);
      linear(s, L.w_down, s.g, T, s.o);
      residual_launch(s.x, s.o, nullptr, T * D, (int)D, st);
    }
    s.n_past += T;
  }

  // logits(rows, vocab) for rows [first, first + rows) of the last chunk
  void head(Sequence& s, int64_t rows, int64_t first) {
    const LlmConfig& c = cfg_;
    rmsnorm_launch(s.x + first * c.hidden, norm_, s.h, (int)rows, (int)c.hidden, c.rms_eps, s.stream);
    linear(s, lm_head_, s.h, rows, s.logits);
  }

  const Llm& m_;
  DeviceMemory& dev_;
  LlmConfig cfg_;
  int64_t tmax_ = 0, lora_rank_ = 0, scale_len_ = 0;
  std::vector<void*> owned_;
  void* embed_ = nullptr;
  Lin lm_head_;
  float* norm_ = nullptr;
  float* scale_ = nullptr;  // (scale_len_) copies of the LoRA scale, for the residual kernel's γ
  std::vector<Layer> layers_;
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
    auto* seq = new LlmDevice::Sequence(st_->model->new_sequence(capacity));
    auto st = st_;  // the device outlives every sequence on it
    return std::shared_ptr<void>(seq, [st](void* p) {
      auto* s = static_cast<LlmDevice::Sequence*>(p);
      st->model->free_sequence(*s);
      delete s;
    });
  }
  void forward(void* sequence, int64_t n_past, const int32_t* tokens, int64_t T, bool all, float* out,
               const float* embeddings) override {
    auto* s = static_cast<LlmDevice::Sequence*>(sequence);
    s->n_past = n_past;  // the cache may have been truncated: positions from n_past on are rewritten
    st_->model->forward(*s, tokens, T, all, out, embeddings);
  }
  Device& device() { return st_->dev; }

 private:
  struct State {
    template <class... DeviceArgs>
    explicit State(DeviceArgs... args) : dev(args...) {}
    Device dev;  // declared first: built first, destroyed last
    std::unique_ptr<LlmDevice> model;
  };
  std::shared_ptr<State> st_;
};

}  // namespace cuda
}  // namespace medllava
