#include "vision.h"

#include <cstring>

#include "../core/error.h"

namespace medllava {

namespace {
void expect_numel(const TensorRef& t, int64_t n) {
  if (t.numel() != n)
    throw Error(ErrorCode::Shape, t.where + " has " + std::to_string(t.numel()) + " elements, expected " + std::to_string(n));
}
}  // namespace

Vision::Linear Vision::linear(const Ref& w, const Ref* b, int64_t out, int64_t in) {
  Linear l{store_.get(w.first, w.second), {}};
  if (l.w.shape.size() != 2 || l.w.shape[0] != out || l.w.shape[1] != in)
    throw Error(ErrorCode::Shape, l.w.where + ": expected (" + std::to_string(out) + ", " + std::to_string(in) + ")");
  if (b) l.b = store_.get_f32(b->first, b->second, out);
  return l;
}

Vision::Linear Vision::rows(const Linear& l, int64_t first, int64_t count) const {
  const int64_t K = l.w.shape[1];
  Linear r{l.w, {}};
  r.w.data = l.w.data + dtype_bytes(l.w.type, K) * (size_t)first;
  r.w.shape = {count, K};
  if (!l.b.empty()) r.b.assign(l.b.begin() + first, l.b.begin() + first + count);
  return r;
}

Vision::Vision(const VisionConfig& c, const VisionTensorNames& n) : cfg_(c) {
  if (c.image_size <= 0 || c.patch <= 0 || c.image_size % c.patch || c.hidden <= 0 || c.heads <= 0 || c.hidden % c.heads ||
      c.layers <= 0 || (int64_t)n.layers.size() != c.layers || c.out_dim <= 0)
    throw Error(ErrorCode::Argument, "vision config is inconsistent");
  const int64_t run = c.select_layer < 0 ? c.layers + 1 + c.select_layer : c.select_layer;
  if (run < 0 || run > c.layers) throw Error(ErrorCode::Argument, "mm_vision_select_layer is out of range");
  const int64_t D = c.hidden, grid = c.image_size / c.patch, np = grid * grid;
  patch_ = store_.get(n.patch_embed.first, n.patch_embed.second);
  expect_numel(patch_, D * 3 * c.patch * c.patch);
  patch_.shape = {D, 3 * c.patch * c.patch};  // the conv as a matmul over flattened (c, y, x) patches
  if (!n.patch_bias.second.empty()) patch_b_ = store_.get_f32(n.patch_bias.first, n.patch_bias.second, D);
  cls_ = store_.get_f32(n.class_embed.first, n.class_embed.second, D);
  pos_ = store_.get_f32(n.pos_embed.first, n.pos_embed.second, (np + 1) * D);
  if (!n.pre_ln_w.second.empty()) {
    pre_w_ = store_.get_f32(n.pre_ln_w.first, n.pre_ln_w.second, D);
    pre_b_ = store_.get_f32(n.pre_ln_b.first, n.pre_ln_b.second, D);
  }
  for (int64_t l = 0; l < run; ++l) {  // only the layers LLaVA reads
    const auto& L = n.layers[(size_t)l];
    Layer y;
    y.ln1_w = store_.get_f32(L.ln1_w.first, L.ln1_w.second, D);
    y.ln1_b = store_.get_f32(L.ln1_b.first, L.ln1_b.second, D);
    y.ln2_w = store_.get_f32(L.ln2_w.first, L.ln2_w.second, D);
    y.ln2_b = store_.get_f32(L.ln2_b.first, L.ln2_b.second, D);
    if (!L.qkv_w.second.empty()) {
      const Linear qkv = linear(L.qkv_w, &L.qkv_b, 3 * D, D);
      y.q = rows(qkv, 0, D);
      y.k = rows(qkv, D, D);
      y.v = rows(qkv, 2 * D, D);
    } else {
      y.q = linear(L.q_w, &L.q_b, D, D);
      y.k = linear(L.k_w, &L.k_b, D, D);
      y.v = linear(L.v_w, &L.v_b, D, D);
    }
    if (!L.ls1.second.empty()) {
      y.ls1 = store_.get_f32(L.ls1.first, L.ls1.second, D);
      y.ls2 = store_.get_f32(L.ls2.first, L.ls2.second, D);
    }
    y.o = linear(L.o_w, &L.o_b, D, D);
    // llama.cpp's legacy mmproj names fc1 "ffn_down" and fc2 "ffn_up": take fc1 as the (ffn, hidden) one
    const TensorRef a = store_.get(L.fc_a_w.first, L.fc_a_w.second);
    const bool a_is_fc1 = a.shape.size() == 2 && a.shape[0] == c.ffn && a.shape[1] == D;
    y.fc1 = a_is_fc1 ? linear(L.fc_a_w, &L.fc_a_b, c.ffn, D) : linear(L.fc_b_w, &L.fc_b_b, c.ffn, D);
    y.fc2 = a_is_fc1 ? linear(L.fc_b_w, &L.fc_b_b, D, c.ffn) : linear(L.fc_a_w, &L.fc_a_b, D, c.ffn);
    layers_.push_back(std::move(y));
  }
  if (c.projector_mlp) {
    proj0_ = linear(n.proj0_w, &n.proj0_b, c.out_dim, D);
    proj2_ = linear(n.proj2_w, &n.proj2_b, c.out_dim, c.out_dim);
  } else {
    proj0_ = linear(n.proj0_w, &n.proj0_b, c.out_dim, D);
  }
}

int64_t Vision::tokens() const {
  const int64_t grid = cfg_.image_size / cfg_.patch;
  return grid * grid + (cfg_.keep_cls ? 1 : 0);
}

void Vision::apply(const Linear& l, const float* x, int64_t T, float* out, Activation act) const {
  MatmulArgs a;
  a.a = x;
  a.w = l.w.data;
  a.w_type = l.w.type;
  a.bias = l.b.empty() ? nullptr : l.b.data();
  a.out = out;
  a.M = T;
  a.N = l.w.shape[0];
  a.K = l.w.shape[1];
  a.act = act;
  matmul_cpu(a);
}

void Vision::im2col(const float* px, float* cols) const {
  const int64_t p = cfg_.patch, S = cfg_.image_size, grid = S / p;
  for (int64_t gy = 0; gy < grid; ++gy)
    for (int64_t gx = 0; gx < grid; ++gx)
      for (int64_t ch = 0; ch < 3; ++ch)
        for (int64_t y = 0; y < p; ++y)
          for (int64_t x = 0; x < p; ++x)
            cols[(size_t)(((gy * grid + gx) * 3 + ch) * p * p + y * p + x)] = px[(ch * S + gy * p + y) * S + gx * p + x];
}

void Vision::encode(const float* px, float* out) const {
  if (device_) return device_->encode(px, out);
  const VisionConfig& c = cfg_;
  const int64_t D = c.hidden, p = c.patch, S = c.image_size, grid = S / p, np = grid * grid, T = np + 1, hd = D / c.heads;
  std::vector<float> cols((size_t)(np * 3 * p * p));
  im2col(px, cols.data());
  std::vector<float> h((size_t)(T * D)), a((size_t)(T * D)), q((size_t)(T * D)), k((size_t)(T * D)), v((size_t)(T * D)),
      att((size_t)(T * D)), f((size_t)(T * c.ffn));
  Linear patch{patch_, patch_b_};
  apply(patch, cols.data(), np, h.data() + D);
  std::memcpy(h.data(), cls_.data(), (size_t)D * 4);
  for (int64_t i = 0; i < T * D; ++i) h[(size_t)i] += pos_[(size_t)i];
  if (!pre_w_.empty()) layernorm_cpu(h.data(), pre_w_.data(), pre_b_.data(), h.data(), T, D, c.eps);
  // h += (γ ⊙) a, γ the LayerScale when there is one
  auto residual = [&](const std::vector<float>& gamma) {
    residual_cpu(h.data(), a.data(), gamma.empty() ? nullptr : gamma.data(), T * D, D);
  };
  for (const Layer& L : layers_) {
    layernorm_cpu(h.data(), L.ln1_w.data(), L.ln1_b.data(), a.data(), T, D, c.eps);
    apply(L.q, a.data(), T, q.data());
    apply(L.k, a.data(), T, k.data());
    apply(L.v, a.data(), T, v.data());
    attention_full_cpu(q.data(), k.data(), v.data(), att.data(), T, c.heads, hd);
    apply(L.o, att.data(), T, a.data());
    residual(L.ls1);
    layernorm_cpu(h.data(), L.ln2_w.data(), L.ln2_b.data(), a.data(), T, D, c.eps);
    apply(L.fc1, a.data(), T, f.data(), c.act);
    apply(L.fc2, f.data(), T, a.data());
    residual(L.ls2);
  }
  const int64_t first = c.keep_cls ? 0 : 1, n = T - first;
  if (c.projector_mlp) {
    std::vector<float> mid((size_t)(n * c.out_dim));
    apply(proj0_, h.data() + first * D, n, mid.data(), Activation::Gelu);
    apply(proj2_, mid.data(), n, out);
  } else {
    apply(proj0_, h.data() + first * D, n, out);
  }
}

}  // namespace medllava
