// The LLaMA / Mistral forward pass on a CUDA device: the same graph as native/model/llm.cc (the CPU
// engine, which loads and checks the weights), with every op a kernel of native/cuda/*.cuh. Weights
// go to the device once, in their stored type; activations live in one arena planned for a batch of
// up to max_batch tokens (longer prompts run in chunks); each sequence owns an f16 KV cache on the
// device. Header-only so that it compiles twice: by nvcc into the addon (the real device) and by the
// host compiler into the test addon, where DeviceMemory is host memory and every launch runs under
// the SIMT emulator — which is how the tests run the whole model "on CUDA" without a GPU.
#pragma once
#include <cstdint>
#include <cstring>
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
  virtual void upload(void* dst, const void* src, size_t bytes) = 0;    // host → device, stream-ordered
  virtual void download(void* dst, const void* src, size_t bytes) = 0;  // device → host; waits for the stream
  virtual size_t available() = 0;                                       // bytes free on the device
  virtual medllava_stream_t stream() = 0;
  virtual void check(const char* what) = 0;  // E_CUDA with CUDA's message if a launch failed
};

inline std::string mib(size_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

class LlmDevice {
 public:
  struct Sequence {
    uint16_t* k = nullptr;  // (layers, context, kv_heads · head_dim) f16
    uint16_t* v = nullptr;
    int64_t n_past = 0;
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
    const size_t need = weights + arena_floats() * 4 + sequence_bytes();
    const size_t free_bytes = dev.available();
    if (need > free_bytes)
      throw Error(ErrorCode::OOM, "the model needs " + mib(need) + " of device memory (weights " + mib(weights) + ", activations " +
                                      mib(arena_floats() * 4) + ", one " + std::to_string(c.context) + "-token KV cache " +
                                      mib(sequence_bytes()) + "); " + mib(free_bytes) + " are free");
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
      arena_ = static_cast<float*>(track(dev.alloc(arena_floats() * 4)));
    } catch (...) {
      free_all();
      throw;
    }
    float* p = arena_;
    auto take = [&](int64_t n) { float* r = p; p += n; return r; };
    x_ = take(tmax_ * D), h_ = take(tmax_ * D), q_ = take(tmax_ * D), k_ = take(tmax_ * kvd), v_ = take(tmax_ * kvd);
    att_ = take(tmax_ * D), o_ = take(tmax_ * D), g_ = take(tmax_ * c.ffn), u_ = take(tmax_ * c.ffn);
    lora_ = take(tmax_ * lora_rank_), lora_out_ = take(tmax_ * scale_len_), logits_ = take(tmax_ * c.vocab), partial_ = take(c.heads * kMaxSplits * hd);
    ml_ = take(c.heads * kMaxSplits * 2), scale_ = take(scale_len_);
    ids_ = reinterpret_cast<int32_t*>(take(tmax_));
    pick_ = reinterpret_cast<int32_t*>(take(1));
    pick_val_ = take(1);
    if (scale_len_) {
      std::vector<float> s((size_t)scale_len_, m.lora_scale_);
      dev.upload(scale_, s.data(), s.size() * 4);
    }
  }
  ~LlmDevice() { free_all(); }
  LlmDevice(const LlmDevice&) = delete;
  LlmDevice& operator=(const LlmDevice&) = delete;

  size_t sequence_bytes() const {
    const LlmConfig& c = cfg_;
    return (size_t)(c.layers * c.context * c.kv_heads * (c.hidden / c.heads)) * 2 * 2;
  }
  Sequence new_sequence() {
    if (sequence_bytes() > dev_.available())
      throw Error(ErrorCode::OOM, "a KV cache needs " + mib(sequence_bytes()) + " of device memory; " + mib(dev_.available()) +
                                      " are free");
    Sequence s;
    s.k = static_cast<uint16_t*>(dev_.alloc(sequence_bytes() / 2));
    try {
      s.v = static_cast<uint16_t*>(dev_.alloc(sequence_bytes() / 2));
    } catch (...) {
      dev_.release(s.k);
      throw;
    }
    return s;
  }
  void free_sequence(Sequence& s) {
    if (s.k) dev_.release(s.k);
    if (s.v) dev_.release(s.v);
    s = Sequence{};
  }

  // As Llm::forward: `tokens` after the sequence's n_past positions; logits of every token (all) or
  // the last one into out (host; may be null: greedy() reads them on the device).
  void forward(Sequence& s, const int32_t* tokens, int64_t T, bool all, float* out, const float* embeddings = nullptr) {
    const LlmConfig& c = cfg_;
    if (T <= 0) throw Error(ErrorCode::Argument, "forward needs at least one token");
    if (s.n_past + T > c.context)
      throw Error(ErrorCode::ContextFull, "the context holds " + std::to_string(c.context) + " tokens; " +
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
        head(rows, all ? 0 : n - 1);
        if (out) dev_.download(out + (all ? t0 * c.vocab : 0), logits_, (size_t)(rows * c.vocab) * 4);
      }
    }
    dev_.check("forward");
  }

  // The most likely next token after the last forward (argmax of its last row, on the device).
  int32_t greedy(int64_t last_rows) {
    topk_launch(logits_ + (last_rows - 1) * cfg_.vocab, (int)cfg_.vocab, 1, pick_, pick_val_, dev_.stream());
    int32_t id = -1;
    dev_.download(&id, pick_, 4);
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
    dev_.upload(p, src, bytes);
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
  void linear(const Lin& l, const float* x, int64_t T, float* out) {
    matmul_launch(x, l.w, l.type, nullptr, out, (int)T, (int)l.out, (int)l.in, Activation::None, MatmulKernel::Auto, dev_.stream());
    if (!l.a) return;
    matmul_launch(x, l.a, l.a_type, nullptr, lora_, (int)T, (int)l.r, (int)l.in, Activation::None, MatmulKernel::Auto, dev_.stream());
    matmul_launch(lora_, l.b, l.b_type, nullptr, lora_out_, (int)T, (int)l.out, (int)l.r, Activation::None, MatmulKernel::Auto,
                  dev_.stream());
    residual_launch(out, lora_out_, scale_, T * l.out, (int)l.out, dev_.stream());
  }

  void chunk(Sequence& s, const int32_t* tokens, int64_t T, const float* embeddings) {
    const LlmConfig& c = cfg_;
    const int64_t D = c.hidden, hd = D / c.heads, kvd = c.kv_heads * hd;
    medllava_stream_t st = dev_.stream();
    std::vector<int32_t> ids((size_t)T);
    for (int64_t t = 0; t < T; ++t) ids[(size_t)t] = tokens[t] < 0 ? 0 : tokens[t];
    dev_.upload(ids_, ids.data(), (size_t)T * 4);
    embed_launch(embed_, m_.embed_.type, ids_, x_, (int)T, (int)D, st);
    for (int64_t t = 0; t < T; ++t)  // spliced image rows
      if (tokens[t] < 0) dev_.upload(x_ + t * D, embeddings + t * D, (size_t)D * 4);
    const bool adjacent = c.rope_mode == RopeMode::Adjacent;
    const int64_t n_kv = s.n_past + T;
    for (int64_t l = 0; l < c.layers; ++l) {
      const Layer& L = layers_[(size_t)l];
      uint16_t* kc = s.k + l * c.context * kvd;
      uint16_t* vc = s.v + l * c.context * kvd;
      rmsnorm_launch(x_, L.attn_norm, h_, (int)T, (int)D, c.rms_eps, st);
      linear(L.wq, h_, T, q_);
      linear(L.wk, h_, T, k_);
      linear(L.wv, h_, T, v_);
      rope_launch(q_, (int)T, (int)c.heads, (int)hd, (int)s.n_past, c.rope_theta, adjacent, st);
      rope_launch(k_, (int)T, (int)c.kv_heads, (int)hd, (int)s.n_past, c.rope_theta, adjacent, st);
      kv_append_launch(k_, kc, s.n_past, (int)T, (int)kvd, st);
      kv_append_launch(v_, vc, s.n_past, (int)T, (int)kvd, st);
      if (T == 1) {
        int splits = decode_splits((int)n_kv);
        if (splits > kMaxSplits) splits = kMaxSplits;
        attention_decode_launch<uint16_t>(q_, kc, vc, att_, partial_, ml_, (int)c.heads, (int)c.kv_heads, (int)hd, (int)n_kv, splits,
                                          st);
      } else {
        flash_attention_launch<uint16_t>(q_, kc, vc, att_, (int)T, (int)c.heads, (int)c.kv_heads, (int)hd, (int)n_kv, (int)s.n_past,
                                         true, st);
      }
      linear(L.wo, att_, T, o_);
      residual_launch(x_, o_, nullptr, T * D, (int)D, st);
      rmsnorm_launch(x_, L.ffn_norm, h_, (int)T, (int)D, c.rms_eps, st);
      linear(L.w_gate, h_, T, g_);
      linear(L.w_up, h_, T, u_);
      silu_mul_launch(g_, u_, g_, T * c.ffn, st);
      linear(L.w_down, g_, T, o_);
      residual_launch(x_, o_, nullptr, T * D, (int)D, st);
    }
    s.n_past += T;
  }

  // logits_(rows, vocab) for rows [first, first + rows) of the last chunk
  void head(int64_t rows, int64_t first) {
    const LlmConfig& c = cfg_;
    rmsnorm_launch(x_ + first * c.hidden, norm_, h_, (int)rows, (int)c.hidden, c.rms_eps, dev_.stream());
    linear(lm_head_, h_, rows, logits_);
  }

  const Llm& m_;
  DeviceMemory& dev_;
  LlmConfig cfg_;
  int64_t tmax_ = 0, lora_rank_ = 0, scale_len_ = 0;
  std::vector<void*> owned_;
  void* embed_ = nullptr;
  Lin lm_head_;
  float* norm_ = nullptr;
  std::vector<Layer> layers_;
  float* arena_ = nullptr;
  float *x_ = nullptr, *h_ = nullptr, *q_ = nullptr, *k_ = nullptr, *v_ = nullptr, *att_ = nullptr, *o_ = nullptr, *g_ = nullptr,
        *u_ = nullptr, *lora_ = nullptr, *lora_out_ = nullptr, *logits_ = nullptr, *partial_ = nullptr, *ml_ = nullptr, *scale_ = nullptr,
        *pick_val_ = nullptr;
  int32_t *ids_ = nullptr, *pick_ = nullptr;
};

}  // namespace cuda
}  // namespace medllava
