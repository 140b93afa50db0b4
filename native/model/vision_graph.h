// The vision graph, written once: a pre-norm ViT run to mm_vision_select_layer — OpenAI CLIP
// (pre_layrnorm, separate q/k/v, quick_gelu) or a timm ViT as BiomedCLIP-CXR (no pre-norm, fused
// qkv, LayerScale, GELU) — and the projector (linear or mlp2x_gelu), over an op set `Ops` (CpuOps,
// or CudaOps on a real or emulated device). defines: VisionConfig, VisionIds, VisionScratch,
// vision_tower.
#pragma once
#include <cstdint>
#include <vector>

#include "../ops/ops.h"
#include "params.h"  // defines: WeightView

namespace medllava {

struct VisionConfig {
  int64_t image_size = 0, patch = 0, hidden = 0, layers = 0, heads = 0, ffn = 0;
  float eps = 1e-5f;
  Activation act = Activation::QuickGelu;
  int64_t select_layer = -2;      // LLaVA's: hidden_states[select_layer]
  bool keep_cls = false;          // mm_vision_select_feature 'cls_patch'
  bool projector_mlp = true;      // mlp2x_gelu (else linear)
  int64_t out_dim = 0;            // the LLM's width
  int64_t grid() const { return image_size / patch; }
  int64_t patches() const { return grid() * grid(); }
  int64_t tokens() const { return patches() + (keep_cls ? 1 : 0); }  // image tokens handed to the LLM
};

// Where each parameter sits in the table (-1: absent). A fused qkv (rows q | k | v) is read as three
// row slices.
struct VisionIds {
  struct Layer {
    int ln1_w = -1, ln1_b = -1, ln2_w = -1, ln2_b = -1;
    int q_w = -1, q_b = -1, k_w = -1, k_b = -1, v_w = -1, v_b = -1, qkv_w = -1, qkv_b = -1;
    int o_w = -1, o_b = -1, fc1_w = -1, fc1_b = -1, fc2_w = -1, fc2_b = -1, ls1 = -1, ls2 = -1;
  };
  int patch = -1, patch_b = -1, cls = -1, pos = -1, pre_w = -1, pre_b = -1;
  std::vector<Layer> layers;  // only the layers LLaVA reads
  int proj0_w = -1, proj0_b = -1, proj2_w = -1, proj2_b = -1;
};

// The tower's buffers in the backend's memory, T = patches + 1 tokens.
struct VisionScratch {
  float *h = nullptr, *a = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *att = nullptr;  // (T, hidden)
  float *f = nullptr;  // (T, ffn)
  float *mid = nullptr;  // (T, out_dim): the projector's hidden layer
  static int64_t floats(const VisionConfig& c) {
    const int64_t T = c.patches() + 1;
    return T * (6 * c.hidden + c.ffn + c.out_dim);
  }
  void carve(float* p, const VisionConfig& c) {
    const int64_t T = c.patches() + 1, D = c.hidden;
    auto take = [&](int64_t n) { float* r = p; p += n; return r; };
    h = take(T * D), a = take(T * D), q = take(T * D), k = take(T * D), v = take(T * D), att = take(T * D);
    f = take(T * c.ffn), mid = take(T * c.out_dim);
  }
};

// cols (patches, 3·p·p): the image's patches in the conv weight's (c, y, x) order, backend memory
// → out (tokens, out_dim), backend memory
template <class Ops>
void vision_tower(Ops& ops, const VisionConfig& c, const VisionIds& ids, const std::vector<WeightView>& W, const float* cols,
                  VisionScratch& s, float* out) {
  auto at = [&](int id) { return id < 0 ? WeightView{} : W[(size_t)id]; };
  auto gamma = [&](int id) { return id < 0 ? nullptr : W[(size_t)id].f32(); };
  const int64_t D = c.hidden, np = c.patches(), T = np + 1, hd = D / c.heads;
  ops.matmul(cols, at(ids.patch), at(ids.patch_b), s.h + D, np, Activation::None);  // patch embeddings (+ timm's conv bias)
  ops.copy(s.h, at(ids.cls).f32(), D);                                                // the class token
  ops.residual(s.h, at(ids.pos).f32(), nullptr, 1.0f, T * D, D);                    // + learned positions
  if (ids.pre_w >= 0) ops.layernorm(s.h, at(ids.pre_w), at(ids.pre_b), s.h, T, D, c.eps);
  for (const VisionIds::Layer& L : ids.layers) {
    ops.layernorm(s.h, at(L.ln1_w), at(L.ln1_b), s.a, T, D, c.eps);
    if (L.qkv_w >= 0) {
      const WeightView w = at(L.qkv_w), b = at(L.qkv_b);
      ops.matmul(s.a, w.slice_rows(0, D), b.slice_rows(0, D), s.q, T, Activation::None);
      ops.matmul(s.a, w.slice_rows(D, D), b.slice_rows(D, D), s.k, T, Activation::None);
      ops.matmul(s.a, w.slice_rows(2 * D, D), b.slice_rows(2 * D, D), s.v, T, Activation::None);
    } else {
      ops.matmul(s.a, at(L.q_w), at(L.q_b), s.q, T, Activation::None);
      ops.matmul(s.a, at(L.k_w), at(L.k_b), s.k, T, Activation::None);
      ops.matmul(s.a, at(L.v_w), at(L.v_b), s.v, T, Activation::None);
    }
    ops.attention_full(s.q, s.k, s.v, s.att, T, c.heads, hd);
    ops.matmul(s.att, at(L.o_w), at(L.o_b), s.a, T, Activation::None);
    ops.residual(s.h, s.a, gamma(L.ls1), 1.0f, T * D, D);  // (γ ⊙) attention
    ops.layernorm(s.h, at(L.ln2_w), at(L.ln2_b), s.a, T, D, c.eps);
    ops.matmul(s.a, at(L.fc1_w), at(L.fc1_b), s.f, T, c.act);
    ops.matmul(s.f, at(L.fc2_w), at(L.fc2_b), s.a, T, Activation::None);
    ops.residual(s.h, s.a, gamma(L.ls2), 1.0f, T * D, D);  // (γ ⊙) MLP
  }
  const int64_t first = c.keep_cls ? 0 : 1, n = T - first;
  if (c.projector_mlp) {
    ops.matmul(s.h + first * D, at(ids.proj0_w), at(ids.proj0_b), s.mid, n, Activation::Gelu);
    ops.matmul(s.mid, at(ids.proj2_w), at(ids.proj2_b), out, n, Activation::None);
  } else {
    ops.matmul(s.h + first * D, at(ids.proj0_w), at(ids.proj0_b), out, n, Activation::None);
  }
}

}  // namespace medllava
