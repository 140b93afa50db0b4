// The vision tower + projector on a CUDA device: the graph of native/model/vision.cc (CLIP and
// timm ViTs: optional pre-norm, LayerScale, fused qkv already split into row views by the CPU
// loader) with the kernels of native/cuda/*.cuh — patch embedding as a matmul over patches the host
// lays out, flash attention over all tokens, matmuls with their bias + GELU / quick_gelu epilogues
// fused. Header-only, like llm_device.cuh: compiled by nvcc into the addon and run under the SIMT
// emulator in the tests.
#pragma once
#include <cstdint>
#include <mutex>
#include <vector>

#include "../core/error.h"
#include "../model/vision.h"
#include "compat.cuh"
#include "llm_device.cuh"   // defines: DeviceMemory, mib
#include "matmul.cuh"       // defines: matmul_launch
#include "transformer.cuh"  // defines: layernorm_launch, flash_attention_launch, residual_launch

namespace medllava {
namespace cuda {

class VisionDevice {
 public:
  VisionDevice(const Vision& v, DeviceMemory& dev) : v_(v), dev_(dev) {
    const VisionConfig& c = v.cfg_;
    const int64_t D = c.hidden, hd = D / c.heads;
    if (hd > kMaxHd) throw Error(ErrorCode::Unsupported, "CUDA attention supports head dims up to " + std::to_string(kMaxHd));
    size_t weights = lin_bytes(v.patch_, v.patch_b_) + (size_t)(v.pos_.size() + v.pre_w_.size() * 2) * 4 +
                     lin_bytes(v.proj0_.w, v.proj0_.b) + (c.projector_mlp ? lin_bytes(v.proj2_.w, v.proj2_.b) : 0);
    for (const auto& L : v.layers_)
      weights += lin_bytes(L.q.w, L.q.b) + lin_bytes(L.k.w, L.k.b) + lin_bytes(L.v.w, L.v.b) + lin_bytes(L.o.w, L.o.b) +
                 lin_bytes(L.fc1.w, L.fc1.b) + lin_bytes(L.fc2.w, L.fc2.b) + (size_t)D * 4 * (4 + (L.ls1.empty() ? 0 : 2));
    const size_t need = weights + arena_floats() * 4;
    if (need > dev.available())
      throw Error(ErrorCode::OOM, "the vision tower needs " + mib(need) + " of device memory (weights " + mib(weights) + "); " +
                                      mib(dev.available()) + " are free");
    try {
      patch_ = lin(v.patch_, v.patch_b_);
      pos_ = vec(v.pos_);
      pre_w_ = vec(v.pre_w_);
      pre_b_ = vec(v.pre_b_);
      for (const auto& L : v.layers_) {
        Layer y;
        y.ln1_w = vec(L.ln1_w), y.ln1_b = vec(L.ln1_b), y.ln2_w = vec(L.ln2_w), y.ln2_b = vec(L.ln2_b);
        y.ls1 = vec(L.ls1), y.ls2 = vec(L.ls2);
        y.q = lin(L.q.w, L.q.b), y.k = lin(L.k.w, L.k.b), y.v = lin(L.v.w, L.v.b), y.o = lin(L.o.w, L.o.b);
        y.fc1 = lin(L.fc1.w, L.fc1.b), y.fc2 = lin(L.fc2.w, L.fc2.b);
        layers_.push_back(y);
      }
      proj0_ = lin(v.proj0_.w, v.proj0_.b);
      if (c.projector_mlp) proj2_ = lin(v.proj2_.w, v.proj2_.b);
      arena_ = static_cast<float*>(track(dev.alloc(arena_floats() * 4)));
    } catch (...) {
      free_all();
      throw;
    }
  }
  ~VisionDevice() { free_all(); }
  VisionDevice(const VisionDevice&) = delete;
  VisionDevice& operator=(const VisionDevice&) = delete;

  // pixels (3, S, S) normalised → out (tokens, out_dim), both host memory
  void encode(const float* pixels, float* out) {
    const VisionConfig& c = v_.cfg_;
    const int64_t D = c.hidden, grid = c.image_size / c.patch, np = grid * grid, T = np + 1, hd = D / c.heads, pp = 3 * c.patch * c.patch;
    medllava_stream_t st = dev_.stream();
    float *h = arena_, *a = h + T * D, *q = a + T * D, *k = q + T * D, *v = k + T * D, *att = v + T * D, *f = att + T * D,
          *cols = f + T * c.ffn;
    std::vector<float> host_cols((size_t)(np * pp));
    v_.im2col(pixels, host_cols.data());
    dev_.upload(cols, host_cols.data(), host_cols.size() * 4, st);
    linear(patch_, cols, np, h + D, Activation::None);                 // patch embeddings (+ timm's conv bias)
    dev_.upload(h, v_.cls_.data(), (size_t)D * 4, st);                   // the class token
    residual_launch(h, pos_, nullptr, T * D, (int)D, st);               // + learned positions
    if (pre_w_) layernorm_launch(h, pre_w_, pre_b_, h, (int)T, (int)D, c.eps, st);
    for (const Layer& L : layers_) {
      layernorm_launch(h, L.ln1_w, L.ln1_b, a, (int)T, (int)D, c.eps, st);
      linear(L.q, a, T, q, Activation::None);
      linear(L.k, a, T, k, Activation::None);
      linear(L.v, a, T, v, Activation::None);
      flash_attention_launch<float>(q, k, v, att, (int)T, (int)c.heads, (int)c.heads, (int)hd, (int)T, 0, false, st);
      linear(L.o, att, T, a, Activation::None);
      residual_launch(h, a, L.ls1, T * D, (int)D, st);                  // (γ ⊙) attention
      layernorm_launch(h, L.ln2_w, L.ln2_b, a, (int)T, (int)D, c.eps, st);
      linear(L.fc1, a, T, f, c.act);
      linear(L.fc2, f, T, a, Activation::None);
      residual_launch(h, a, L.ls2, T * D, (int)D, st);                  // (γ ⊙) MLP
    }
    const int64_t first = c.keep_cls ? 0 : 1, n = T - first;
    float* res = q;  // (n, out_dim) fits: the q..att buffers hold 4·T·D ≥ 2·n·out_dim floats (arena_floats)
    if (c.projector_mlp) {
      linear(proj0_, h + first * D, n, res, Activation::Gelu);
      linear(proj2_, res, n, res + n * c.out_dim, Activation::None);
      res += n * c.out_dim;
    } else {
      linear(proj0_, h + first * D, n, res, Activation::None);
    }
    dev_.download(out, res, (size_t)(n * c.out_dim) * 4, st);
    dev_.check("vision encode");
  }

 private:
  struct Lin {
    const void* w = nullptr;
    DType type = DType::F32;
    int64_t out = 0, in = 0;
    const float* b = nullptr;
  };
  struct Layer {
    float *ln1_w = nullptr, *ln1_b = nullptr, *ln2_w = nullptr, *ln2_b = nullptr, *ls1 = nullptr, *ls2 = nullptr;
    Lin q, k, v, o, fc1, fc2;
  };

  static size_t lin_bytes(const TensorRef& w, const std::vector<float>& b) { return dtype_bytes(w.type, w.numel()) + b.size() * 4; }
  size_t arena_floats() const {
    const VisionConfig& c = v_.cfg_;
    const int64_t D = c.hidden, grid = c.image_size / c.patch, np = grid * grid, T = np + 1;
    // h, a, q, k, v, att (T·D each), f (T·ffn), patches (np·3·p·p); the projector reuses q… (needs 2·T·out_dim)
    const int64_t proj = 2 * T * c.out_dim, qkva = 4 * T * D;
    return (size_t)(2 * T * D + (proj > qkva ? proj : qkva) + T * c.ffn + np * 3 * c.patch * c.patch + 64);
  }
  void* track(void* p) {
    owned_.push_back(p);
    return p;
  }
  float* vec(const std::vector<float>& x) {
    if (x.empty()) return nullptr;
    void* p = track(dev_.alloc(x.size() * 4));
    dev_.upload(p, x.data(), x.size() * 4, dev_.stream());
    return static_cast<float*>(p);
  }
  Lin lin(const TensorRef& w, const std::vector<float>& b) {
    Lin l;
    const size_t bytes = dtype_bytes(w.type, w.numel());
    void* p = track(dev_.alloc(bytes));
    dev_.upload(p, w.data, bytes, dev_.stream());
    l.w = p, l.type = w.type, l.out = w.shape[0], l.in = w.shape[1], l.b = vec(b);
    return l;
  }
  void linear(const Lin& l, const float* x, int64_t T, float* out, Activation act) {
    matmul_launch(x, l.w, l.type, l.b, out, (int)T, (int)l.out, (int)l.in, act, MatmulKernel::Auto, dev_.stream());
  }
  void free_all() {
    for (void* p : owned_) dev_.release(p);
    owned_.clear();
  }

  const Vision& v_;
  DeviceMemory& dev_;
  std::vector<void*> owned_;
  Lin patch_, proj0_, proj2_;
  float *pos_ = nullptr, *pre_w_ = nullptr, *pre_b_ = nullptr, *arena_ = nullptr;
  std::vector<Layer> layers_;
};

// The VisionDeviceRunner (native/model/vision.h) over a VisionDevice on a `Device`: the CUDA
// runtime's in the addon, the emulated one in the tests. Encodes are serialised (one arena).
template <class Device>
class VisionRunnerOn : public VisionDeviceRunner {
 public:
  template <class... DeviceArgs>
  explicit VisionRunnerOn(const Vision& v, DeviceArgs... args) : dev_(args...), tower_(v, dev_) {}
  void encode(const float* pixels, float* out) override {
    std::lock_guard<std::mutex> lock(mu_);
    tower_.encode(pixels, out);
  }

 private:
  Device dev_;  // declared before the tower: built first, destroyed last
  VisionDevice tower_;
  std::mutex mu_;
};

}  // namespace cuda
}  // namespace medllava
