// defines: Vision's loading (weights into the parameter table, shapes checked, HF names), im2col,
// and encode on the CPU (the graph of vision_graph.h over CpuOps) or on the attached device.
#include "vision.h"

#include <cstring>
#include <mutex>
#include <shared_mutex>

#include "../core/error.h"
#include "../cpu/ops_cpu.h"

namespace medllava {

namespace {
// A parameter's name: the checkpoint's own for HF / open_clip files (what a save writes back), the HF
// name of LLaVA's layout for GGUF mmproj tensors (whose names are llama.cpp's)
std::string param_name(const Ref& ref, const std::string& hf) {
  const std::string& f = ref.first;
  return f.size() >= 5 && f.compare(f.size() - 5, 5, ".gguf") == 0 ? hf : ref.second;
}

void expect_numel(const TensorRef& t, int64_t n) {
  if (t.numel() != n)
    throw Error(ErrorCode::Shape, t.where + " has " + std::to_string(t.numel()) + " elements, expected " + std::to_string(n));
}
}  // namespace

Vision::Vision(const VisionConfig& c, const VisionTensorNames& n) : cfg_(c) {
  if (c.image_size <= 0 || c.patch <= 0 || c.image_size % c.patch || c.hidden <= 0 || c.heads <= 0 || c.hidden % c.heads ||
      c.layers <= 0 || (int64_t)n.layers.size() != c.layers || c.out_dim <= 0)
    throw Error(ErrorCode::Argument, "vision config is inconsistent");
  const int64_t run = c.select_layer < 0 ? c.layers + 1 + c.select_layer : c.select_layer;
  if (run < 0 || run > c.layers) throw Error(ErrorCode::Argument, "mm_vision_select_layer is out of range");
  const int64_t D = c.hidden, np = c.patches();
  const bool timm = !n.layers.empty() && !n.layers[0].qkv_w.second.empty();
  // HF names for GGUF tensors: LLaVA's CLIP tower, or open_clip's timm trunk (BiomedCLIP)
  const std::string tower = timm ? "visual.trunk." : "model.vision_tower.vision_tower.vision_model.";
  auto matrix = [&](const std::string& name, const Ref& r, int64_t out, int64_t in) {
    const TensorRef t = store_.get(r.first, r.second);
    if (t.shape.size() != 2 || t.shape[0] != out || t.shape[1] != in)
      throw Error(ErrorCode::Shape, t.where + ": expected (" + std::to_string(out) + ", " + std::to_string(in) + ")");
    return params_.add_matrix(param_name(r, name), t, false);
  };
  auto vec = [&](const std::string& name, const Ref& r, int64_t numel) {
    return params_.add_vector(param_name(r, name), store_.get(r.first, r.second), store_.get_f32(r.first, r.second, numel));
  };
  auto opt = [&](const std::string& name, const Ref& r, int64_t numel) { return r.second.empty() ? -1 : vec(name, r, numel); };
  {
    const TensorRef patch = store_.get(n.patch_embed.first, n.patch_embed.second);
    expect_numel(patch, D * 3 * c.patch * c.patch);
    ids_.patch = params_.add_matrix(param_name(n.patch_embed, tower + (timm ? "patch_embed.proj.weight" : "embeddings.patch_embedding.weight")),
                                    patch, false);
  }
  ids_.patch_b = opt(tower + "patch_embed.proj.bias", n.patch_bias, D);
  ids_.cls = vec(tower + (timm ? "cls_token" : "embeddings.class_embedding"), n.class_embed, D);
  ids_.pos = vec(tower + (timm ? "pos_embed" : "embeddings.position_embedding.weight"), n.pos_embed, (np + 1) * D);
  ids_.pre_w = opt(tower + (timm ? "norm_pre.weight" : "pre_layrnorm.weight"), n.pre_ln_w, D);
  ids_.pre_b = opt(tower + (timm ? "norm_pre.bias" : "pre_layrnorm.bias"), n.pre_ln_b, D);
  for (int64_t l = 0; l < run; ++l) {  // only the layers LLaVA reads
    const auto& L = n.layers[(size_t)l];
    const std::string p = tower + (timm ? "blocks." : "encoder.layers.") + std::to_string(l) + ".";
    VisionIds::Layer y;
    y.ln1_w = vec(p + (timm ? "norm1.weight" : "layer_norm1.weight"), L.ln1_w, D);
    y.ln1_b = vec(p + (timm ? "norm1.bias" : "layer_norm1.bias"), L.ln1_b, D);
    if (!L.qkv_w.second.empty()) {
      y.qkv_w = matrix(p + "attn.qkv.weight", L.qkv_w, 3 * D, D);
      y.qkv_b = vec(p + "attn.qkv.bias", L.qkv_b, 3 * D);
    } else {
      y.q_w = matrix(p + "self_attn.q_proj.weight", L.q_w, D, D), y.q_b = vec(p + "self_attn.q_proj.bias", L.q_b, D);
      y.k_w = matrix(p + "self_attn.k_proj.weight", L.k_w, D, D), y.k_b = vec(p + "self_attn.k_proj.bias", L.k_b, D);
      y.v_w = matrix(p + "self_attn.v_proj.weight", L.v_w, D, D), y.v_b = vec(p + "self_attn.v_proj.bias", L.v_b, D);
    }
    y.o_w = matrix(p + (timm ? "attn.proj.weight" : "self_attn.out_proj.weight"), L.o_w, D, D);
    y.o_b = vec(p + (timm ? "attn.proj.bias" : "self_attn.out_proj.bias"), L.o_b, D);
    y.ls1 = opt(p + "ls1.gamma", L.ls1, D);
    y.ls2 = opt(p + "ls2.gamma", L.ls2, D);
    y.ln2_w = vec(p + (timm ? "norm2.weight" : "layer_norm2.weight"), L.ln2_w, D);
    y.ln2_b = vec(p + (timm ? "norm2.bias" : "layer_norm2.bias"), L.ln2_b, D);
    // llama.cpp's legacy mmproj names fc1 "ffn_down" and fc2 "ffn_up": take fc1 as the (ffn, hidden) one
    const TensorRef a = store_.get(L.fc_a_w.first, L.fc_a_w.second);
    const bool a_is_fc1 = a.shape.size() == 2 && a.shape[0] == c.ffn && a.shape[1] == D;
    const Ref &fc1_w = a_is_fc1 ? L.fc_a_w : L.fc_b_w, &fc1_b = a_is_fc1 ? L.fc_a_b : L.fc_b_b;
    const Ref &fc2_w = a_is_fc1 ? L.fc_b_w : L.fc_a_w, &fc2_b = a_is_fc1 ? L.fc_b_b : L.fc_a_b;
    y.fc1_w = matrix(p + "mlp.fc1.weight", fc1_w, c.ffn, D);
    y.fc1_b = vec(p + "mlp.fc1.bias", fc1_b, c.ffn);
    y.fc2_w = matrix(p + "mlp.fc2.weight", fc2_w, D, c.ffn);
    y.fc2_b = vec(p + "mlp.fc2.bias", fc2_b, D);
    ids_.layers.push_back(y);
  }
  const std::string proj = c.projector_mlp ? "model.mm_projector.0." : "model.mm_projector.";
  ids_.proj0_w = matrix(proj + "weight", n.proj0_w, c.out_dim, D);
  ids_.proj0_b = vec(proj + "bias", n.proj0_b, c.out_dim);
  if (c.projector_mlp) {
    ids_.proj2_w = matrix("model.mm_projector.2.weight", n.proj2_w, c.out_dim, c.out_dim);
    ids_.proj2_b = vec("model.mm_projector.2.bias", n.proj2_b, c.out_dim);
  }
}

int64_t Vision::tokens() const { return cfg_.tokens(); }

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
  params_.sync_host();  // a device trainer's newest values (params.h)
  std::shared_lock<std::shared_mutex> lock(params_.mutex());  // the table does not change under an encode
  if (device_) return device_->encode(px, out);
  const VisionConfig& c = cfg_;
  std::vector<float> cols((size_t)(c.patches() * 3 * c.patch * c.patch));
  im2col(px, cols.data());
  VisionScratch s;
  std::vector<float> buf((size_t)VisionScratch::floats(c));
  s.carve(buf.data(), c);
  CpuOps ops;
  vision_tower(ops, c, ids_, params_.views(), cols.data(), s, out);
}

}  // namespace medllava
