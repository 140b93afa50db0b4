#include "llm.h"

#include "../core/mapped_file.h"

#include <cstring>

#include "../core/error.h"
#include "../formats/ggml_types.h"

namespace medllava {

namespace {
void expect_shape(const TensorRef& t, std::vector<int64_t> want) {
  if (t.shape != want) {
    std::string got, exp;
    for (int64_t d : t.shape) got += (got.empty() ? "" : ",") + std::to_string(d);
    for (int64_t d : want) exp += (exp.empty() ? "" : ",") + std::to_string(d);
    throw Error(ErrorCode::Shape, t.where + " has shape [" + got + "], expected [" + exp + "]");
  }
}
}  // namespace

Llm::Llm(const LlmConfig& c, const LlmTensorNames& n) : cfg_(c), lora_scale_(n.lora_scale) {
  if (c.hidden <= 0 || c.layers <= 0 || c.heads <= 0 || c.kv_heads <= 0 || c.heads % c.kv_heads || c.hidden % c.heads ||
      (c.hidden / c.heads) % 2 || c.vocab <= 0 || c.context <= 0 || (int64_t)n.layers.size() != c.layers)
    throw Error(ErrorCode::Argument, "LLM config is inconsistent");
  const int64_t hd = c.hidden / c.heads;
  auto lin = [&](const std::pair<std::string, std::string>& ref, int64_t out, int64_t in) {
    LinearWeight w;
    w.t = store_.get(ref.first, ref.second);
    expect_shape(w.t, {out, in});
    if (dtype_is_block(w.t.type) && in % dtype_block_elems(w.t.type)) throw Error(ErrorCode::Shape, w.t.where + ": rows are not whole blocks");
    w.x16 = repack_x16(w.t.data, w.t.type, out, in);
    // the mapped original is not read again on this path: let its pages go from the resident set
    if (w.x16) drop_resident(w.t.data, dtype_bytes(w.t.type, w.t.numel()));
    const auto it = n.lora.find(ref.second);
    if (it != n.lora.end()) {
      w.has_lora = true;
      w.lora_a = store_.get(it->second.a.first, it->second.a.second);
      w.lora_b = store_.get(it->second.b.first, it->second.b.second);
      if (w.lora_a.shape.size() != 2 || w.lora_a.shape[1] != in || w.lora_b.shape.size() != 2 || w.lora_b.shape[0] != out ||
          w.lora_b.shape[1] != w.lora_a.shape[0] || dtype_is_block(w.lora_a.type) || dtype_is_block(w.lora_b.type))
        throw Error(ErrorCode::Shape, w.lora_a.where + " / " + w.lora_b.where + " do not fit " + w.t.where + " as a LoRA pair");
    }
    return w;
  };
  embed_ = store_.get(n.embed.first, n.embed.second);
  expect_shape(embed_, {c.vocab, c.hidden});
  norm_ = store_.get_f32(n.norm.first, n.norm.second, c.hidden);
  lm_head_ = lin(n.lm_head, c.vocab, c.hidden);
  for (const auto& L : n.layers) {
    Layer l;
    l.attn_norm = store_.get_f32(L.attn_norm.first, L.attn_norm.second, c.hidden);
    l.ffn_norm = store_.get_f32(L.ffn_norm.first, L.ffn_norm.second, c.hidden);
    l.wq = lin(L.wq, c.heads * hd, c.hidden);
    l.wk = lin(L.wk, c.kv_heads * hd, c.hidden);
    l.wv = lin(L.wv, c.kv_heads * hd, c.hidden);
    l.wo = lin(L.wo, c.hidden, c.heads * hd);
    l.w_gate = lin(L.w_gate, c.ffn, c.hidden);
    l.w_up = lin(L.w_up, c.ffn, c.hidden);
    l.w_down = lin(L.w_down, c.hidden, c.ffn);
    layers_.push_back(std::move(l));
  }
}

Llm::Cache Llm::new_cache(int64_t capacity) const {
  Cache c;
  c.capacity = capacity <= 0 || capacity > cfg_.context ? cfg_.context : capacity;
  if (device_) {
    c.device = device_->new_sequence(c.capacity);
    return c;
  }
  const size_t n = (size_t)(cfg_.layers * c.capacity * cfg_.kv_heads * (cfg_.hidden / cfg_.heads));
  c.k.assign(n, 0);
  c.v.assign(n, 0);
  c.bytes = 2 * n * sizeof(uint16_t);
  return c;
}

void Llm::linear(const LinearWeight& w, const float* x, int64_t T, float* out) const {
  auto mm = [](const TensorRef& t, const float* in, int64_t rows, float* o, const uint8_t* x16 = nullptr) {
    MatmulArgs a;
    a.a = in;
    a.w = t.data;
    a.w_type = t.type;
    a.w_x16 = x16;
    a.out = o;
    a.M = rows;
    a.N = t.shape[0];
    a.K = t.shape[1];
    matmul_cpu(a);
  };
  mm(w.t, x, T, out, w.x16.get());
  if (!w.has_lora) return;
  // LoRA kept separate: out += scale · B (A x); r is small, so this costs a few per cent
  const int64_t r = w.lora_a.shape[0], N = w.t.shape[0];
  std::vector<float> ax((size_t)(T * r)), bax((size_t)(T * N));
  mm(w.lora_a, x, T, ax.data());
  mm(w.lora_b, ax.data(), T, bax.data());
  for (size_t i = 0; i < bax.size(); ++i) out[i] += lora_scale_ * bax[i];
}

void Llm::embed_row(int32_t token, float* out) const {
  if (token < 0 || token >= cfg_.vocab)
    throw Error(ErrorCode::Argument, "token id " + std::to_string(token) + " is outside the vocabulary (" + std::to_string(cfg_.vocab) + ")");
  embed_cpu(embed_.data, embed_.type, &token, out, 1, cfg_.hidden);
}

void Llm::forward(Cache& cache, const int32_t* tokens, int64_t T, bool all, float* out, const float* embeddings) const {
  const LlmConfig& c = cfg_;
  if (T <= 0) throw Error(ErrorCode::Argument, "forward needs at least one token");
  if (cache.n_past + T > cache.capacity)
    throw Error(ErrorCode::ContextFull, "the context holds " + std::to_string(cache.capacity) + " tokens; " + std::to_string(cache.n_past) +
                                            " are used and " + std::to_string(T) + " more were given");
  if (device_) {
    device_->forward(cache.device.get(), cache.n_past, tokens, T, all, out, embeddings);
    cache.n_past += T;
    return;
  }
  const int64_t D = c.hidden, hd = D / c.heads, kvd = c.kv_heads * hd;
  std::vector<float> x((size_t)(T * D)), h((size_t)(T * D)), q((size_t)(T * D)), k((size_t)(T * kvd)), v((size_t)(T * kvd)),
      att((size_t)(T * D)), o((size_t)(T * D)), g((size_t)(T * c.ffn)), u((size_t)(T * c.ffn));
  for (int64_t t = 0; t < T; ++t) {
    if (tokens[t] < 0) {
      if (!embeddings) throw Error(ErrorCode::Argument, "token " + std::to_string(tokens[t]) + " needs image embeddings");
      std::memcpy(&x[(size_t)(t * D)], embeddings + t * D, (size_t)D * 4);
    } else {
      embed_row(tokens[t], &x[(size_t)(t * D)]);
    }
  }
  const size_t layer_stride = (size_t)(cache.capacity * kvd);
  for (int64_t l = 0; l < c.layers; ++l) {
    const Layer& L = layers_[(size_t)l];
    rmsnorm_cpu(x.data(), L.attn_norm.data(), h.data(), T, D, c.rms_eps);
    linear(L.wq, h.data(), T, q.data());
    linear(L.wk, h.data(), T, k.data());
    linear(L.wv, h.data(), T, v.data());
    rope_cpu(q.data(), T, c.heads, hd, cache.n_past, c.rope_theta, c.rope_mode);
    rope_cpu(k.data(), T, c.kv_heads, hd, cache.n_past, c.rope_theta, c.rope_mode);
    uint16_t* kc = cache.k.data() + (size_t)l * layer_stride;
    uint16_t* vc = cache.v.data() + (size_t)l * layer_stride;
    kv_append_cpu(k.data(), kc, cache.n_past, T, kvd);
    kv_append_cpu(v.data(), vc, cache.n_past, T, kvd);
    attention_cached_cpu(q.data(), kc, vc, att.data(), T, cache.n_past, c.heads, c.kv_heads, hd);
    linear(L.wo, att.data(), T, o.data());
    residual_cpu(x.data(), o.data(), nullptr, (int64_t)x.size(), D);
    rmsnorm_cpu(x.data(), L.ffn_norm.data(), h.data(), T, D, c.rms_eps);
    linear(L.w_gate, h.data(), T, g.data());
    linear(L.w_up, h.data(), T, u.data());
    silu_mul_cpu(g.data(), u.data(), g.data(), T * c.ffn);
    linear(L.w_down, g.data(), T, o.data());
    residual_cpu(x.data(), o.data(), nullptr, (int64_t)x.size(), D);
  }
  cache.n_past += T;
  const int64_t rows = all ? T : 1;
  const float* from = all ? x.data() : x.data() + (T - 1) * D;
  rmsnorm_cpu(from, norm_.data(), h.data(), rows, D, c.rms_eps);
  linear(lm_head_, h.data(), rows, out);
}

}  // namespace medllava
