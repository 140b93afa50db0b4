// The vision graph, written once: a pre-norm ViT run to mm_vision_select_layer — OpenAI CLIP
// (pre_layrnorm, separate q/k/v, quick_gelu) or a timm ViT as BiomedCLIP-CXR (no pre-norm, fused
// qkv, LayerScale, GELU) — and the projector (linear or mlp2x_gelu), over an op set `Ops` (CpuOps,
// or CudaOps on a real or emulated device). defines: VisionConfig, VisionIds, VisionScratch,
// VisionLayerIO, vision_layer (one block: the layer order), vision_embed, vision_tower (inference),
// VisionActivations (the activation table), vision_forward_train, VisionGradScratch, vision_layer_backward,
// vision_backward_train (the backward pass: projector, and the tower when it trains).
#pragma once
#include <cstdint>
#include <vector>

#include "../ops/ops.h"
#include "llm_graph.h"  // defines: GradViews, linear_backward
#include "params.h"     // defines: WeightView

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

// Where one ViT block reads and writes, over B images of T tokens (N = B·T rows). Inference passes
// one set, in place (x_in = x_mid = x_out; a1 = a2 = o1 = o2; f_pre = f: the activation fused into
// fc1's epilogue; no statistics); a training forward passes the block's own saved buffers.
struct VisionLayerIO {
  const float* x_in = nullptr;  // (N, hidden) the block's input
  float *x_mid = nullptr, *x_out = nullptr;  // (N, hidden) after the attention / MLP residuals
  float *a1 = nullptr, *a2 = nullptr;        // (N, hidden) the LayerNorm outputs
  float *mean1 = nullptr, *rstd1 = nullptr, *mean2 = nullptr, *rstd2 = nullptr;  // (N) their statistics (null: not kept)
  float *q = nullptr, *k = nullptr, *v = nullptr, *att = nullptr;  // (N, hidden)
  float* lse = nullptr;                      // (B, heads, T) attention's log-sum-exp (null: not kept)
  float *o1 = nullptr, *o2 = nullptr;        // (N, hidden) the attention projection and fc2, before LayerScale
  float *f_pre = nullptr, *f = nullptr;      // (N, ffn) fc1's output before and after the activation
};

// One pre-LN ViT block (CLIP or timm: fused-qkv slices, LayerScale when there is one).
template <class Ops>
void vision_layer(Ops& ops, const VisionConfig& c, const VisionIds::Layer& L, const std::vector<WeightView>& W, int64_t B, int64_t T,
                  const VisionLayerIO& io) {
  auto at = [&](int id) { return id < 0 ? WeightView{} : W[(size_t)id]; };
  auto gamma = [&](int id) { return id < 0 ? nullptr : W[(size_t)id].f32(); };
  const int64_t D = c.hidden, N = B * T, hd = D / c.heads;
  ops.layernorm(io.x_in, at(L.ln1_w), at(L.ln1_b), io.a1, N, D, c.eps, io.mean1, io.rstd1);
  if (L.qkv_w >= 0) {
    const WeightView w = at(L.qkv_w), b = at(L.qkv_b);
    ops.matmul(io.a1, w.slice_rows(0, D), b.slice_rows(0, D), io.q, N, Activation::None);
    ops.matmul(io.a1, w.slice_rows(D, D), b.slice_rows(D, D), io.k, N, Activation::None);
    ops.matmul(io.a1, w.slice_rows(2 * D, D), b.slice_rows(2 * D, D), io.v, N, Activation::None);
  } else {
    ops.matmul(io.a1, at(L.q_w), at(L.q_b), io.q, N, Activation::None);
    ops.matmul(io.a1, at(L.k_w), at(L.k_b), io.k, N, Activation::None);
    ops.matmul(io.a1, at(L.v_w), at(L.v_b), io.v, N, Activation::None);
  }
  for (int64_t i = 0; i < B; ++i)  // each image attends within itself
    ops.attention_full(io.q + i * T * D, io.k + i * T * D, io.v + i * T * D, io.att + i * T * D, T, c.heads, hd,
                       io.lse ? io.lse + i * c.heads * T : nullptr);
  ops.matmul(io.att, at(L.o_w), at(L.o_b), io.o1, N, Activation::None);
  if (io.x_mid != io.x_in) ops.copy(io.x_mid, io.x_in, N * D);
  ops.residual(io.x_mid, io.o1, gamma(L.ls1), 1.0f, N * D, D);  // (γ ⊙) attention
  ops.layernorm(io.x_mid, at(L.ln2_w), at(L.ln2_b), io.a2, N, D, c.eps, io.mean2, io.rstd2);
  if (io.f_pre == io.f) {
    ops.matmul(io.a2, at(L.fc1_w), at(L.fc1_b), io.f, N, c.act);  // the activation in the epilogue
  } else {
    ops.matmul(io.a2, at(L.fc1_w), at(L.fc1_b), io.f_pre, N, Activation::None);
    ops.activation(io.f_pre, io.f, N * c.ffn, c.act);
  }
  ops.matmul(io.f, at(L.fc2_w), at(L.fc2_b), io.o2, N, Activation::None);
  if (io.x_out != io.x_mid) ops.copy(io.x_out, io.x_mid, N * D);
  ops.residual(io.x_out, io.o2, gamma(L.ls2), 1.0f, N * D, D);  // (γ ⊙) MLP
}

// The tokens of B images: patch embeddings (+ timm's conv bias) after the class token, plus the
// learned positions. cols (B, patches, 3·p·p), x (B·T, hidden), both backend memory.
template <class Ops>
void vision_embed(Ops& ops, const VisionConfig& c, const VisionIds& ids, const std::vector<WeightView>& W, const float* cols, int64_t B,
                  float* x) {
  auto at = [&](int id) { return id < 0 ? WeightView{} : W[(size_t)id]; };
  const int64_t D = c.hidden, np = c.patches(), T = np + 1, pp = 3 * c.patch * c.patch;
  for (int64_t i = 0; i < B; ++i) {
    float* xi = x + i * T * D;
    ops.matmul(cols + i * np * pp, at(ids.patch), at(ids.patch_b), xi + D, np, Activation::None);
    ops.copy(xi, at(ids.cls).f32(), D);                           // the class token
    ops.residual(xi, at(ids.pos).f32(), nullptr, 1.0f, T * D, D);  // + learned positions
  }
}

// cols (patches, 3·p·p): the image's patches in the conv weight's (c, y, x) order, backend memory
// → out (tokens, out_dim), backend memory. Inference: one image, one buffer set.
template <class Ops>
void vision_tower(Ops& ops, const VisionConfig& c, const VisionIds& ids, const std::vector<WeightView>& W, const float* cols,
                  VisionScratch& s, float* out) {
  auto at = [&](int id) { return id < 0 ? WeightView{} : W[(size_t)id]; };
  const int64_t D = c.hidden, T = c.patches() + 1;
  vision_embed(ops, c, ids, W, cols, 1, s.h);
  if (ids.pre_w >= 0) ops.layernorm(s.h, at(ids.pre_w), at(ids.pre_b), s.h, T, D, c.eps);
  VisionLayerIO io;
  io.x_in = io.x_mid = io.x_out = s.h;
  io.a1 = io.a2 = io.o1 = io.o2 = s.a;
  io.q = s.q, io.k = s.k, io.v = s.v, io.att = s.att;
  io.f_pre = io.f = s.f;
  for (const VisionIds::Layer& L : ids.layers) vision_layer(ops, c, L, W, 1, T, io);
  const int64_t first = c.keep_cls ? 0 : 1, n = T - first;
  if (c.projector_mlp) {
    ops.matmul(s.h + first * D, at(ids.proj0_w), at(ids.proj0_b), s.mid, n, Activation::Gelu);
    ops.matmul(s.mid, at(ids.proj2_w), at(ids.proj2_b), out, n, Activation::None);
  } else {
    ops.matmul(s.h + first * D, at(ids.proj0_w), at(ids.proj0_b), out, n, Activation::None);
  }
}

// ---- training forward -----------------------------------------------------------------------------
// The activation table of a training forward over B images, sized up front: the patches, the
// embeddings before the pre-norm (and its statistics), per block what backward needs (input, both
// LayerNorm statistics and outputs, q / k / v, attention output + log-sum-exp, the projections
// before LayerScale, fc1 before and after its activation), and the projector's hidden layer before
// and after GELU. A block marked `recompute` keeps only its input and shares one buffer set.
struct VisionActivations {
  struct Layer {
    VisionLayerIO io;
    bool recompute = false;
  };
  int64_t B = 0;
  float* cols = nullptr;                  // (B, patches, 3·p·p)
  float* x_emb = nullptr;                 // (B·T, hidden) the tokens before the pre-norm
  float *pre_mean = nullptr, *pre_rstd = nullptr;  // (B·T) the pre-norm's statistics (CLIP)
  std::vector<Layer> layers;
  float* x_final = nullptr;               // (B·T, hidden) the last block's output
  float *mid_pre = nullptr, *mid = nullptr;  // (B·tokens, out_dim) the projector's hidden layer (mlp2x_gelu)
  float* out = nullptr;                   // (B·tokens, out_dim) the projected image rows
  const CancelToken* cancel = nullptr;    // checked before each block, forward and backward (null: none)

  // floats of the table for B images through `layers_run` blocks (the ids' count); recompute[l] marks
  // the checkpointed blocks
  static int64_t floats(const VisionConfig& c, int64_t layers_run, int64_t B, const std::vector<bool>& recompute) {
    const int64_t T = c.patches() + 1, N = B * T, D = c.hidden, n = B * c.tokens();
    int64_t total = B * c.patches() * 3 * c.patch * c.patch + N * D + 2 * N, shared = 0;
    for (int64_t l = 0; l < layers_run; ++l) {
      total += N * D;
      if (l < (int64_t)recompute.size() && recompute[(size_t)l]) shared = per_layer(c, B); else total += per_layer(c, B);
    }
    return total + shared + N * D + 3 * n * c.out_dim;
  }
  // carves the table out of `p` (floats(…) floats); returns the end of what it used
  float* carve(float* p, const VisionConfig& c, int64_t layers_run, int64_t B_, const std::vector<bool>& recompute) {
    B = B_;
    const int64_t T = c.patches() + 1, N = B * T, D = c.hidden, n = B * c.tokens();
    auto take = [&](int64_t k) { float* r = p; p += k; return r; };
    auto fill = [&](VisionLayerIO& io) {
      io.x_mid = take(N * D), io.a1 = take(N * D), io.a2 = take(N * D);
      io.mean1 = take(N), io.rstd1 = take(N), io.mean2 = take(N), io.rstd2 = take(N);
      io.q = take(N * D), io.k = take(N * D), io.v = take(N * D), io.att = take(N * D), io.lse = take(B * c.heads * T);
      io.o1 = take(N * D), io.o2 = take(N * D), io.f_pre = take(N * c.ffn), io.f = take(N * c.ffn);
    };
    cols = take(B * c.patches() * 3 * c.patch * c.patch);
    x_emb = take(N * D), pre_mean = take(N), pre_rstd = take(N);
    layers.assign((size_t)layers_run, Layer{});
    for (int64_t l = 0; l < layers_run; ++l) {
      Layer& y = layers[(size_t)l];
      y.io.x_in = take(N * D);
      y.recompute = l < (int64_t)recompute.size() && recompute[(size_t)l];
      if (!y.recompute) fill(y.io);
    }
    VisionLayerIO shared;
    bool have = false;
    for (Layer& y : layers) {
      if (!y.recompute) continue;
      if (!have) fill(shared), have = true;
      const float* x_in = y.io.x_in;
      y.io = shared;
      y.io.x_in = x_in;
    }
    x_final = take(N * D), mid_pre = take(n * c.out_dim), mid = take(n * c.out_dim), out = take(n * c.out_dim);
    for (int64_t l = 0; l < layers_run; ++l)
      layers[(size_t)l].io.x_out = l + 1 < layers_run ? const_cast<float*>(layers[(size_t)l + 1].io.x_in) : x_final;
    return p;
  }

 private:
  static int64_t per_layer(const VisionConfig& c, int64_t B) {
    const int64_t N = B * (c.patches() + 1), D = c.hidden;
    return N * (3 * D + 4 + 4 * D + 2 * D + 2 * c.ffn) + B * c.heads * (c.patches() + 1);
  }
};

// The training forward over B images whose patches are in A.cols: the same blocks as inference,
// filling the activation table; A.out holds each image's projected rows, image after image.
template <class Ops>
void vision_forward_train(Ops& ops, const VisionConfig& c, const VisionIds& ids, const std::vector<WeightView>& W,
                          VisionActivations& A) {
  auto at = [&](int id) { return id < 0 ? WeightView{} : W[(size_t)id]; };
  const int64_t B = A.B, T = c.patches() + 1, N = B * T, D = c.hidden;
  float* x0 = const_cast<float*>(A.layers.empty() ? A.x_final : A.layers[0].io.x_in);
  vision_embed(ops, c, ids, W, A.cols, B, ids.pre_w >= 0 ? A.x_emb : x0);
  if (ids.pre_w >= 0) ops.layernorm(A.x_emb, at(ids.pre_w), at(ids.pre_b), x0, N, D, c.eps, A.pre_mean, A.pre_rstd);
  for (size_t l = 0; l < A.layers.size(); ++l) {
    check_cancel(A.cancel);
    vision_layer(ops, c, ids.layers[l], W, B, T, A.layers[l].io);
  }
  const int64_t first = c.keep_cls ? 0 : 1, n = T - first;
  for (int64_t i = 0; i < B; ++i) {  // the projector over each image's rows
    const float* xi = A.x_final + (i * T + first) * D;
    float* oi = A.out + i * n * c.out_dim;
    if (c.projector_mlp) {
      float *pre = A.mid_pre + i * n * c.out_dim, *mid = A.mid + i * n * c.out_dim;
      ops.matmul(xi, at(ids.proj0_w), at(ids.proj0_b), pre, n, Activation::None);
      ops.activation(pre, mid, n * c.out_dim, Activation::Gelu);
      ops.matmul(mid, at(ids.proj2_w), at(ids.proj2_b), oi, n, Activation::None);
    } else {
      ops.matmul(xi, at(ids.proj0_w), at(ids.proj0_b), oi, n, Activation::None);
    }
  }
}

// ---- backward --------------------------------------------------------------------------------------
// The gradient buffers of the vision backward over B images (backend memory).
struct VisionGradScratch {
  float *dx = nullptr, *da = nullptr, *dq = nullptr, *dk = nullptr, *dv = nullptr, *datt = nullptr, *dproj = nullptr;  // (N, hidden)
  float *df = nullptr, *df_pre = nullptr;        // (N, ffn)
  float *dmid = nullptr, *dmid_pre = nullptr;    // (B·tokens, out_dim)
  float *dx_emb = nullptr;                       // (N, hidden) the tokens before the pre-norm
  static int64_t floats(const VisionConfig& c, int64_t B) {
    const int64_t N = B * (c.patches() + 1);
    return N * (8 * c.hidden + 2 * c.ffn) + 2 * B * c.tokens() * c.out_dim;
  }
  float* carve(float* p, const VisionConfig& c, int64_t B) {
    const int64_t N = B * (c.patches() + 1), D = c.hidden, n = B * c.tokens();
    auto take = [&](int64_t k) { float* r = p; p += k; return r; };
    dx = take(N * D), da = take(N * D), dq = take(N * D), dk = take(N * D), dv = take(N * D), datt = take(N * D), dproj = take(N * D);
    df = take(N * c.ffn), df_pre = take(N * c.ffn), dmid = take(n * c.out_dim), dmid_pre = take(n * c.out_dim), dx_emb = take(N * D);
    return p;
  }
};

// Backward of one ViT block (vision_layer) over B images: gs.dx holds d(output) on entry, d(input)
// on exit; the block's parameter gradients accumulate into G (a fused qkv's q, k, v rows into the
// slices of its gradient).
template <class Ops>
void vision_layer_backward(Ops& ops, const VisionConfig& c, const VisionIds::Layer& L, const std::vector<WeightView>& W, const GradViews& G,
                           int64_t B, int64_t T, const VisionLayerIO& io, VisionGradScratch& gs) {
  auto at = [&](int id) { return id < 0 ? WeightView{} : W[(size_t)id]; };
  auto grad = [&](int id) { return id < 0 ? nullptr : G[(size_t)id]; };
  auto gamma = [&](int id) { return id < 0 ? nullptr : W[(size_t)id].f32(); };
  const int64_t D = c.hidden, N = B * T, hd = D / c.heads, F = c.ffn;
  // the MLP: x_out = x_mid + (γ2 ⊙) fc2(act(fc1(LN2 x_mid)))
  ops.fill(gs.dproj, 0.0f, N * D);
  ops.residual_backward(gs.dx, io.o2, gamma(L.ls2), 1.0f, gs.dproj, grad(L.ls2), N * D, D);
  ops.fill(gs.df, 0.0f, N * F);
  linear_backward(ops, at(L.fc2_w), grad(L.fc2_w), grad(L.fc2_b), io.f, gs.dproj, gs.df, N);
  ops.fill(gs.df_pre, 0.0f, N * F);
  ops.activation_backward(gs.df, io.f_pre, gs.df_pre, N * F, c.act);
  ops.fill(gs.da, 0.0f, N * D);
  linear_backward(ops, at(L.fc1_w), grad(L.fc1_w), grad(L.fc1_b), io.a2, gs.df_pre, gs.da, N);
  ops.layernorm_backward(gs.da, io.x_mid, at(L.ln2_w), io.mean2, io.rstd2, gs.dx, grad(L.ln2_w), grad(L.ln2_b), N, D);
  // attention: x_mid = x_in + (γ1 ⊙) o(attention(q, k, v of LN1 x_in))
  ops.fill(gs.dproj, 0.0f, N * D);
  ops.residual_backward(gs.dx, io.o1, gamma(L.ls1), 1.0f, gs.dproj, grad(L.ls1), N * D, D);
  ops.fill(gs.datt, 0.0f, N * D);
  linear_backward(ops, at(L.o_w), grad(L.o_w), grad(L.o_b), io.att, gs.dproj, gs.datt, N);
  ops.fill(gs.dq, 0.0f, N * D), ops.fill(gs.dk, 0.0f, N * D), ops.fill(gs.dv, 0.0f, N * D);
  for (int64_t i = 0; i < B; ++i) {
    const int64_t o = i * T * D;
    ops.attention_backward(io.q + o, io.k + o, io.v + o, io.att + o, io.lse + i * c.heads * T, gs.datt + o, gs.dq + o, gs.dk + o,
                           gs.dv + o, T, c.heads, c.heads, hd, false);
  }
  ops.fill(gs.da, 0.0f, N * D);
  if (L.qkv_w >= 0) {
    const WeightView w = at(L.qkv_w);
    float *gw = grad(L.qkv_w), *gb = grad(L.qkv_b);
    const float* d3[3] = {gs.dq, gs.dk, gs.dv};
    for (int64_t r = 0; r < 3; ++r)
      linear_backward(ops, w.slice_rows(r * D, D), gw ? gw + r * D * w.cols : nullptr, gb ? gb + r * D : nullptr, io.a1, d3[r], gs.da, N);
  } else {
    linear_backward(ops, at(L.q_w), grad(L.q_w), grad(L.q_b), io.a1, gs.dq, gs.da, N);
    linear_backward(ops, at(L.k_w), grad(L.k_w), grad(L.k_b), io.a1, gs.dk, gs.da, N);
    linear_backward(ops, at(L.v_w), grad(L.v_w), grad(L.v_b), io.a1, gs.dv, gs.da, N);
  }
  ops.layernorm_backward(gs.da, io.x_in, at(L.ln1_w), io.mean1, io.rstd1, gs.dx, grad(L.ln1_w), grad(L.ln1_b), N, D);
}

// The backward pass after vision_forward_train, from d_out (B·tokens, out_dim): the gradient of each
// image's projected rows (the LLM backward's rows at the image's positions). Runs the projector's
// backward and, when `tower` (some tower parameter trains), every block's, the pre-norm's and the
// embedding's (class token, positions, patch projection). A frozen tower costs nothing here.
template <class Ops>
void vision_backward_train(Ops& ops, const VisionConfig& c, const VisionIds& ids, const std::vector<WeightView>& W, const GradViews& G,
                           VisionActivations& A, const float* d_out, bool tower, VisionGradScratch& gs) {
  auto at = [&](int id) { return id < 0 ? WeightView{} : W[(size_t)id]; };
  auto grad = [&](int id) { return id < 0 ? nullptr : G[(size_t)id]; };
  const int64_t B = A.B, T = c.patches() + 1, N = B * T, D = c.hidden, first = c.keep_cls ? 0 : 1, n = T - first, O = c.out_dim;
  if (tower) ops.fill(gs.dx, 0.0f, N * D);
  for (int64_t i = 0; i < B; ++i) {
    const float* xi = A.x_final + (i * T + first) * D;
    float* dxi = tower ? gs.dx + (i * T + first) * D : nullptr;
    const float* doi = d_out + i * n * O;
    if (c.projector_mlp) {
      const float *pre = A.mid_pre + i * n * O, *mid = A.mid + i * n * O;
      float *dmid = gs.dmid + i * n * O, *dpre = gs.dmid_pre + i * n * O;
      ops.fill(dmid, 0.0f, n * O);
      linear_backward(ops, at(ids.proj2_w), grad(ids.proj2_w), grad(ids.proj2_b), mid, doi, dmid, n);
      ops.fill(dpre, 0.0f, n * O);
      ops.activation_backward(dmid, pre, dpre, n * O, Activation::Gelu);
      linear_backward(ops, at(ids.proj0_w), grad(ids.proj0_w), grad(ids.proj0_b), xi, dpre, dxi, n);
    } else {
      linear_backward(ops, at(ids.proj0_w), grad(ids.proj0_w), grad(ids.proj0_b), xi, doi, dxi, n);
    }
  }
  if (!tower) return;
  for (size_t l = A.layers.size(); l-- > 0;) {
    check_cancel(A.cancel);
    VisionActivations::Layer& y = A.layers[l];
    if (y.recompute) vision_layer(ops, c, ids.layers[l], W, B, T, y.io);  // refill the shared buffers
    vision_layer_backward(ops, c, ids.layers[l], W, G, B, T, y.io, gs);
  }
  float* dx_emb = gs.dx;
  if (ids.pre_w >= 0) {
    ops.fill(gs.dx_emb, 0.0f, N * D);
    ops.layernorm_backward(gs.dx, A.x_emb, at(ids.pre_w), A.pre_mean, A.pre_rstd, gs.dx_emb, grad(ids.pre_w), grad(ids.pre_b), N, D);
    dx_emb = gs.dx_emb;
  }
  // x = [cls | patches · Wᵀ + b] + pos, per image
  if (grad(ids.pos)) ops.bias_backward(dx_emb, grad(ids.pos), B, T * D);
  const int64_t pp = 3 * c.patch * c.patch;
  for (int64_t i = 0; i < B; ++i) {
    if (grad(ids.cls)) ops.bias_backward(dx_emb + i * T * D, grad(ids.cls), 1, D);
    WeightView pw = at(ids.patch);
    pw.cols = pp;
    linear_backward(ops, pw, grad(ids.patch), grad(ids.patch_b), A.cols + i * c.patches() * pp, dx_emb + (i * T + 1) * D, nullptr,
                    c.patches());
  }
}

}  // namespace medllava
