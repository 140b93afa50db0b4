// defines: Llm's loading (weights into the parameter table, shapes checked), its caches, and its
// forward on the CPU (the graph of llm_graph.h over CpuOps) or on the attached device.
#include "llm.h"

#include <algorithm>
#include <cmath>

#include <mutex>
#include <shared_mutex>

#include "../core/error.h"
#include "../cpu/ops_cpu.h"
#include "../formats/ggml_types.h"

namespace medllava {

namespace {
// A parameter's name: the checkpoint's own for HF / PEFT files (what a save writes back), the HF
// LLaMA name for GGUF tensors (whose names are llama.cpp's)
std::string param_name(const std::pair<std::string, std::string>& ref, const std::string& hf) {
  const std::string& f = ref.first;
  return f.size() >= 5 && f.compare(f.size() - 5, 5, ".gguf") == 0 ? hf : ref.second;
}

void expect_shape(const TensorRef& t, std::vector<int64_t> want) {
  if (t.shape != want) {
    std::string got, exp;
    for (int64_t d : t.shape) got += (got.empty() ? "" : ",") + std::to_string(d);
    for (int64_t d : want) exp += (exp.empty() ? "" : ",") + std::to_string(d);
    throw Error(ErrorCode::Shape, t.where + " has shape [" + got + "], expected [" + exp + "]");
  }
}
}  // namespace

Llm::Llm(const LlmConfig& c, const LlmTensorNames& n) : cfg_(c) {
  if (c.hidden <= 0 || c.layers <= 0 || c.heads <= 0 || c.kv_heads <= 0 || c.heads % c.kv_heads || c.hidden % c.heads ||
      (c.hidden / c.heads) % 2 || c.vocab <= 0 || c.context <= 0 || (int64_t)n.layers.size() != c.layers)
    throw Error(ErrorCode::Argument, "LLM config is inconsistent");
  const int64_t hd = c.hidden / c.heads;
  ids_.lora_scale = n.lora_scale;
  // a linear (out, in) under its HF name, with its PEFT LoRA pair when the adapter has one
  auto lin = [&](const std::string& name, const std::pair<std::string, std::string>& ref, int64_t out, int64_t in) {
    LlmIds::Linear l;
    const TensorRef t = store_.get(ref.first, ref.second);
    expect_shape(t, {out, in});
    if (dtype_is_block(t.type) && in % dtype_block_elems(t.type)) throw Error(ErrorCode::Shape, t.where + ": rows are not whole blocks");
    const std::string module = name.substr(0, name.size() - 7);  // without ".weight"
    l.w = params_.add_matrix(param_name(ref, name), t, true);
    const auto it = n.lora.find(ref.second);
    if (it != n.lora.end()) {
      const TensorRef a = store_.get(it->second.a.first, it->second.a.second), b = store_.get(it->second.b.first, it->second.b.second);
      if (a.shape.size() != 2 || a.shape[1] != in || b.shape.size() != 2 || b.shape[0] != out || b.shape[1] != a.shape[0] ||
          dtype_is_block(a.type) || dtype_is_block(b.type))
        throw Error(ErrorCode::Shape, a.where + " / " + b.where + " do not fit " + t.where + " as a LoRA pair");
      l.lora_a = params_.add_matrix(param_name(it->second.a, "base_model.model." + module + ".lora_A.weight"), a, false);
      l.lora_b = params_.add_matrix(param_name(it->second.b, "base_model.model." + module + ".lora_B.weight"), b, false);
      if (a.shape[0] > ids_.lora_rank) ids_.lora_rank = a.shape[0];
      if (out > ids_.lora_out) ids_.lora_out = out;
      if (in > ids_.lora_in) ids_.lora_in = in;
    }
    return l;
  };
  auto vec = [&](const std::string& name, const std::pair<std::string, std::string>& ref) {
    return params_.add_vector(param_name(ref, name), store_.get(ref.first, ref.second), store_.get_f32(ref.first, ref.second, c.hidden));
  };
  const TensorRef embed = store_.get(n.embed.first, n.embed.second);
  expect_shape(embed, {c.vocab, c.hidden});
  ids_.embed = params_.add_matrix(param_name(n.embed, "model.embed_tokens.weight"), embed, false);  // gathered by rows: not repacked
  for (int64_t l = 0; l < c.layers; ++l) {
    const auto& L = n.layers[(size_t)l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LlmIds::Layer y;
    y.attn_norm = vec(p + "input_layernorm.weight", L.attn_norm);
    y.wq = lin(p + "self_attn.q_proj.weight", L.wq, c.heads * hd, c.hidden);
    y.wk = lin(p + "self_attn.k_proj.weight", L.wk, c.kv_heads * hd, c.hidden);
    y.wv = lin(p + "self_attn.v_proj.weight", L.wv, c.kv_heads * hd, c.hidden);
    y.wo = lin(p + "self_attn.o_proj.weight", L.wo, c.hidden, c.heads * hd);
    y.ffn_norm = vec(p + "post_attention_layernorm.weight", L.ffn_norm);
    y.w_gate = lin(p + "mlp.gate_proj.weight", L.w_gate, c.ffn, c.hidden);
    y.w_up = lin(p + "mlp.up_proj.weight", L.w_up, c.ffn, c.hidden);
    y.w_down = lin(p + "mlp.down_proj.weight", L.w_down, c.hidden, c.ffn);
    ids_.layers.push_back(y);
  }
  ids_.norm = vec("model.norm.weight", n.norm);
  if (n.lm_head == n.embed && !n.lora.count(n.lm_head.second)) {
    ids_.lm_head.w = params_.add_tied("lm_head.weight", ids_.embed, true);  // tied: one storage, its own repack
  } else {
    ids_.lm_head = lin("lm_head.weight", n.lm_head, c.vocab, c.hidden);
  }
}

int Llm::add_lora(const std::vector<std::string>& targets, int64_t r, float alpha, uint64_t seed) {
  if (r < 1) throw Error(ErrorCode::Argument, "the LoRA rank must be ≥ 1");
  if (!(alpha > 0)) throw Error(ErrorCode::Argument, "the LoRA alpha must be > 0");
  static const char* kModules[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  std::vector<bool> on(7, false);
  for (const std::string& t : targets) {
    size_t k = 0;
    while (k < 7 && t != kModules[k]) ++k;
    if (k == 7) throw Error(ErrorCode::Argument, "'" + t + "' is not a LoRA target: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj or down_proj");
    on[k] = true;
  }
  params_.sync_host();
  std::unique_lock<std::shared_mutex> lock(params_.mutex());
  for (const LlmIds::Layer& L : ids_.layers)
    for (const LlmIds::Linear* x : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
      if (x->lora_a >= 0) throw Error(ErrorCode::Argument, "this model has LoRA adapters already (train them with stage 'lora')");
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  auto uniform = [&state]() {  // splitmix64 → [0, 1)
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
  };
  int pairs = 0;
  for (size_t l = 0; l < ids_.layers.size(); ++l) {
    LlmIds::Layer& L = ids_.layers[l];
    LlmIds::Linear* lin[7] = {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down};
    for (size_t k = 0; k < 7; ++k) {
      if (!on[k]) continue;
      const Param& w = params_[lin[k]->w];
      const int64_t out = w.rows(), in = w.cols();
      const std::string module = "model.layers." + std::to_string(l) + (k < 4 ? ".self_attn." : ".mlp.") + kModules[k];
      std::vector<float> a((size_t)(r * in));
      const double bound = 1.0 / std::sqrt((double)in);
      for (float& x : a) x = (float)((2 * uniform() - 1) * bound);
      lin[k]->lora_a = params_.add_owned("base_model.model." + module + ".lora_A.weight", {r, in}, std::move(a));
      lin[k]->lora_b = params_.add_owned("base_model.model." + module + ".lora_B.weight", {out, r}, std::vector<float>((size_t)(out * r), 0.0f));
      ids_.lora_rank = std::max(ids_.lora_rank, r);
      ids_.lora_out = std::max(ids_.lora_out, out);
      ids_.lora_in = std::max(ids_.lora_in, in);
      ++pairs;
    }
  }
  ids_.lora_scale = alpha / (float)r;
  return pairs;
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

void Llm::check_spans(const int32_t* tokens, int64_t T, const RowSpans& images) {
  std::vector<uint8_t> covered((size_t)T, 0);
  for (const RowSpan& s : images) {
    if (s.at < 0 || s.count < 0 || s.at + s.count > T || (s.count && !s.rows))
      throw Error(ErrorCode::Argument, "image rows at positions " + std::to_string(s.at) + "…" + std::to_string(s.at + s.count) +
                                           " fall outside the " + std::to_string(T) + " tokens");
    for (int64_t t = s.at; t < s.at + s.count; ++t) {
      if (tokens[t] >= 0 || covered[(size_t)t])
        throw Error(ErrorCode::Argument, "image rows must cover image positions (token < 0) once each; position " + std::to_string(t) +
                                             (tokens[t] >= 0 ? " holds token " + std::to_string(tokens[t]) : " is covered twice"));
      covered[(size_t)t] = 1;
    }
  }
  for (int64_t t = 0; t < T; ++t)
    if (tokens[t] < 0 && !covered[(size_t)t])
      throw Error(ErrorCode::Argument, "token " + std::to_string(tokens[t]) + " at position " + std::to_string(t) + " needs image rows");
}

void Llm::forward(Cache& cache, const int32_t* tokens, int64_t T, bool all, float* out, const RowSpans& images) const {
  const LlmConfig& c = cfg_;
  if (T <= 0) throw Error(ErrorCode::Argument, "forward needs at least one token");
  if (cache.n_past + T > cache.capacity)
    throw Error(ErrorCode::ContextFull, "the context holds " + std::to_string(cache.capacity) + " tokens; " + std::to_string(cache.n_past) +
                                            " are used and " + std::to_string(T) + " more were given");
  for (int64_t t = 0; t < T; ++t)
    if (tokens[t] >= c.vocab)
      throw Error(ErrorCode::Argument, "token id " + std::to_string(tokens[t]) + " is outside the vocabulary (" + std::to_string(c.vocab) + ")");
  check_spans(tokens, T, images);
  params_.sync_host();  // a device trainer's newest values (params.h)
  std::shared_lock<std::shared_mutex> lock(params_.mutex());  // the table does not change under a forward
  if (device_) {
    device_->forward(cache.device.get(), cache.n_past, tokens, T, all, out, images);
    cache.n_past += T;
    return;
  }
  LlmScratch s;
  std::vector<float> buf((size_t)s.floats(c, ids_, T));
  s.carve(buf.data(), c, ids_, T);
  CpuOps ops;
  const KvView kv{cache.k.data(), cache.v.data(), cache.capacity, cache.n_past};
  llm_blocks(ops, c, ids_, params_.views(), tokens, images, T, s, kv);
  cache.n_past += T;
  llm_head(ops, c, ids_, params_.views(), all ? 0 : T - 1, all ? T : 1, s, out);
}

}  // namespace medllava
