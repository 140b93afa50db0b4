// One training forward + backward over a batch, written once over an op set (CpuOps, or CudaOps on
// a real or emulated device) and an arena of backend memory: the vision forward over the batch's
// images, their rows spliced into the LLM's training forward, masked cross-entropy (its gradient in
// place of each chunk of logits, llm_graph.h: llm_loss_head), the LLM's backward, then the projector's and, when it trains, the tower's.
// The host side of it — checking the batch, padding it to (B, T), shifting the labels into targets,
// deciding which backward parts run — is plan_batch. defines: TrainSequence, TrainBatch, TrainPlan,
// plan_batch, TrainModel, llm_matrices, vision_matrices, train_arena_floats, train_step.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/error.h"
#include "../model/llm_graph.h"
#include "../model/params.h"
#include "../model/vision_graph.h"

namespace medllava {

// One sequence as the LLM sees it: image rows already expanded (their tokens < 0), labels aligned
// with the tokens (HF's convention: the shift to next-token targets happens inside), −100 ignored.
struct TrainSequence {
  std::vector<int32_t> tokens, labels;
  struct Image {
    int64_t at = 0;     // the first of its rows
    int64_t index = 0;  // which of the batch's images
  };
  std::vector<Image> images;
  float weight = 1;  // per-sample weight of its targets' losses
};

struct TrainBatch {
  std::vector<TrainSequence> seqs;
  std::vector<std::vector<float>> pixels;  // each image normalised (3, S, S)
};

// What the model is, for one step: configurations, where each parameter sits, what the backend
// reads for it (views) and where its gradient goes (grads: null when frozen). vision: null when the
// model has none.
struct TrainModel {
  const LlmConfig* llm = nullptr;
  const LlmIds* llm_ids = nullptr;
  const ParamTable* llm_table = nullptr;
  const std::vector<WeightView>* llm_views = nullptr;
  const GradViews* llm_grads = nullptr;
  const VisionConfig* vision = nullptr;
  const VisionIds* vision_ids = nullptr;
  const ParamTable* vision_table = nullptr;
  const std::vector<WeightView>* vision_views = nullptr;
  const GradViews* vision_grads = nullptr;
  int64_t vision_rows = 0;  // image rows handed to the LLM per image
  float lora_dropout = 0;   // on the LoRA branches' input (0: off)
  int64_t loss_rows = 0;    // rows per loss-head chunk (0: as many as keep its logits within 32 MiB)
  const CancelToken* cancel = nullptr;  // checked between layers (E_ABORTED); null: none
  uint64_t dropout_step = 0;  // this step's dropout seed (llm_graph.h: LlmScratch)
};

// The batch on the host, checked and laid out as (B, T) (padded at the end with token 0, whose
// targets are ignored), with which parts of backward are needed.
struct TrainPlan {
  int64_t B = 0, T = 0, images = 0, count = 0;  // count: non-ignored targets
  std::vector<int32_t> tokens, targets;         // (B·T); targets[t] = labels[t + 1] or −100
  std::vector<float> weights;                   // (B·T) the target's sample weight (0 where ignored)
  struct Span {
    int64_t at = 0, index = 0;  // position in the (B·T) rows, image index
  };
  std::vector<Span> spans;
  bool projector_trains = false, tower_trains = false, images_need_grad = false;
  int64_t lowest = 0;  // the lowest LLM layer backward runs through (layers: none)
  bool checkpoint = false;
  int64_t head_rows = 0;  // rows per loss-head chunk (llm_graph.h: loss_head_rows)
};

namespace train_detail {
inline bool any_trainable(const ParamTable& t, std::initializer_list<int> ids) {
  for (int id : ids)
    if (id >= 0 && t[id].trainable) return true;
  return false;
}
}  // namespace train_detail

// E_ARGUMENT / E_SHAPE / E_CONTEXT_FULL / E_UNSUPPORTED for a batch that does not fit the model.
inline TrainPlan plan_batch(const TrainModel& m, const TrainBatch& b, bool checkpoint) {
  using train_detail::any_trainable;
  const LlmConfig& c = *m.llm;
  if (b.seqs.empty()) throw Error(ErrorCode::Argument, "the batch is empty");
  const int64_t rows = m.vision ? m.vision_rows : 0;
  std::vector<int> used(b.pixels.size(), 0);
  TrainPlan p;
  p.checkpoint = checkpoint;
  for (size_t s = 0; s < b.seqs.size(); ++s) {
    const TrainSequence& q = b.seqs[s];
    const std::string where = "example " + std::to_string(s) + ": ";
    const int64_t T = (int64_t)q.tokens.size();
    if (T == 0) throw Error(ErrorCode::Argument, where + "it has no tokens");
    if (q.labels.size() != q.tokens.size())
      throw Error(ErrorCode::Shape, where + std::to_string(q.labels.size()) + " labels for " + std::to_string(T) + " tokens");
    if (T > c.context)
      throw Error(ErrorCode::ContextFull, where + std::to_string(T) + " positions do not fit the context of " + std::to_string(c.context));
    if (!(q.weight >= 0) || q.weight > 3.4e38f) throw Error(ErrorCode::Argument, where + "its weight must be a finite number ≥ 0");
    std::vector<int> covered((size_t)T, 0);
    for (const TrainSequence::Image& im : q.images) {
      if (!m.vision) throw Error(ErrorCode::Unsupported, where + "it has an image, but this model has no vision tower");
      if (im.index < 0 || im.index >= (int64_t)b.pixels.size()) throw Error(ErrorCode::Argument, where + "an image index is out of range");
      if (im.at < 0 || im.at + rows > T) throw Error(ErrorCode::Argument, where + "an image's rows run past the sequence");
      ++used[(size_t)im.index];
      for (int64_t r = 0; r < rows; ++r) ++covered[(size_t)(im.at + r)];
    }
    for (int64_t t = 0; t < T; ++t) {
      const int32_t tok = q.tokens[(size_t)t], lab = q.labels[(size_t)t];
      if (tok >= c.vocab) throw Error(ErrorCode::Argument, where + "token " + std::to_string(tok) + " is outside the vocabulary of " + std::to_string(c.vocab));
      if ((tok < 0) != (covered[(size_t)t] == 1))
        throw Error(ErrorCode::Argument, where + "position " + std::to_string(t) + (tok < 0 ? " is an image row without its image" : " is covered by an image and a token"));
      if (lab >= c.vocab || (lab < 0 && lab != -100))
        throw Error(ErrorCode::Argument, where + "label " + std::to_string(lab) + " is neither −100 nor in the vocabulary of " + std::to_string(c.vocab));
    }
    p.T = std::max(p.T, T);
  }
  for (size_t i = 0; i < used.size(); ++i)
    if (used[i] != 1) throw Error(ErrorCode::Argument, "image " + std::to_string(i) + " is used " + std::to_string(used[i]) + " times (once expected)");
  if (m.vision)
    for (const auto& px : b.pixels)
      if ((int64_t)px.size() != 3 * m.vision->image_size * m.vision->image_size)
        throw Error(ErrorCode::Shape, "an image's pixels are not 3 × " + std::to_string(m.vision->image_size) + "²");

  p.B = (int64_t)b.seqs.size();
  p.images = (int64_t)b.pixels.size();
  const int64_t N = p.B * p.T;
  p.tokens.assign((size_t)N, 0), p.targets.assign((size_t)N, -100), p.weights.assign((size_t)N, 0.0f);
  for (int64_t s = 0; s < p.B; ++s) {
    const TrainSequence& q = b.seqs[(size_t)s];
    const int64_t n = (int64_t)q.tokens.size();
    for (int64_t t = 0; t < n; ++t) {
      p.tokens[(size_t)(s * p.T + t)] = q.tokens[(size_t)t];
      if (t + 1 < n && q.labels[(size_t)(t + 1)] >= 0) {
        p.targets[(size_t)(s * p.T + t)] = q.labels[(size_t)(t + 1)];
        p.weights[(size_t)(s * p.T + t)] = q.weight;
        ++p.count;
      }
    }
    for (const TrainSequence::Image& im : q.images) p.spans.push_back({s * p.T + im.at, im.index});
  }
  p.head_rows = loss_head_rows(c, p.count, m.loss_rows);
  // which backward parts run: the projector's and the tower's only when they train; the LLM's down
  // to the lowest layer with something that trains (all of it when image rows or embeddings need a gradient)
  if (m.vision) {
    const VisionIds& v = *m.vision_ids;
    const ParamTable& vt = *m.vision_table;
    p.projector_trains = any_trainable(vt, {v.proj0_w, v.proj0_b, v.proj2_w, v.proj2_b});
    for (int i = 0; i < vt.size(); ++i)
      if (vt[i].trainable && i != v.proj0_w && i != v.proj0_b && i != v.proj2_w && i != v.proj2_b) p.tower_trains = true;
  }
  p.images_need_grad = p.images > 0 && (p.projector_trains || p.tower_trains);
  const ParamTable& lt = *m.llm_table;
  const LlmIds& ids = *m.llm_ids;
  p.lowest = c.layers;
  if (p.images_need_grad || lt[ids.embed].trainable) p.lowest = 0;
  for (int64_t l = 0; l < c.layers && p.lowest == c.layers; ++l) {
    const LlmIds::Layer& L = ids.layers[(size_t)l];
    bool any = any_trainable(lt, {L.attn_norm, L.ffn_norm});
    for (const LlmIds::Linear* x : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
      any = any || any_trainable(lt, {x->w, x->lora_a, x->lora_b});
    if (any) p.lowest = l;
  }
  return p;
}

// The parameters that are matrices read only through GEMMs and gathers (mixed precision reads them
// as bf16 copies), by id: the LLM's linear weights and LoRA pairs, embed_tokens and the lm_head; the
// tower's linear weights, its patch embedding and the projector's weights. Norms, biases, LayerScale,
// the class token and the position table stay fp32.
inline std::vector<bool> llm_matrices(const LlmIds& ids, int n) {
  std::vector<bool> on((size_t)n, false);
  auto mark = [&on](int id) {
    if (id >= 0) on[(size_t)id] = true;
  };
  mark(ids.embed), mark(ids.lm_head.w);
  for (const LlmIds::Layer& L : ids.layers)
    for (const LlmIds::Linear* x : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) mark(x->w), mark(x->lora_a), mark(x->lora_b);
  return on;
}
inline std::vector<bool> vision_matrices(const VisionIds& ids, int n) {
  std::vector<bool> on((size_t)n, false);
  for (int id : {ids.patch, ids.proj0_w, ids.proj2_w})
    if (id >= 0) on[(size_t)id] = true;
  for (const VisionIds::Layer& L : ids.layers)
    for (int id : {L.q_w, L.k_w, L.v_w, L.qkv_w, L.o_w, L.fc1_w, L.fc2_w})
      if (id >= 0) on[(size_t)id] = true;
  return on;
}

namespace train_detail {
inline std::vector<bool> all(bool on, int64_t n) { return std::vector<bool>(on ? (size_t)n : 0, true); }
inline int64_t vision_layers(const TrainModel& m) { return m.vision ? (int64_t)m.vision_ids->layers.size() : 0; }
}  // namespace train_detail

// Floats of backend memory train_step needs for `p`.
inline int64_t train_arena_floats(const TrainModel& m, const TrainPlan& p) {
  using namespace train_detail;
  const LlmConfig& c = *m.llm;
  const int64_t N = p.B * p.T, vl = vision_layers(m);
  int64_t n = LlmActivations::floats(c, *m.llm_ids, p.B, p.T, all(p.checkpoint, c.layers)) + LlmGradScratch::floats(c, *m.llm_ids, N);
  n += LossHeadScratch::floats(c, p.head_rows);
  if (p.images) {
    n += VisionActivations::floats(*m.vision, vl, p.images, all(p.checkpoint, vl));
    if (p.images_need_grad) n += VisionGradScratch::floats(*m.vision, p.images) + p.images * m.vision_rows * c.hidden;
  }
  return n;
}

// Forward + backward of `p` on `ops`: gradients accumulate into the model's grads, each target's
// loss gradient scaled by grad_scale / count. `arena` holds train_arena_floats(m, p) floats of
// backend memory; `cols` the batch's images as patches (host, images × patches × 3·p·p; empty
// without images). Returns the sum of the targets' (weighted) losses.
template <class Ops>
double train_step(Ops& ops, const TrainModel& m, const TrainPlan& p, float* arena, const std::vector<float>& cols, float grad_scale) {
  using namespace train_detail;
  const LlmConfig& c = *m.llm;
  const int64_t B = p.B, T = p.T, N = B * T, D = c.hidden, vl = vision_layers(m), rows = m.vision_rows;
  auto take = [&](int64_t n) { float* r = arena; arena += n; return r; };
  LlmActivations LA;
  arena = LA.carve(arena, c, *m.llm_ids, B, T, all(p.checkpoint, c.layers));
  LA.s.lora_dropout = m.lora_dropout, LA.s.dropout_step = m.dropout_step;
  LA.cancel = m.cancel;
  LlmGradScratch gs;
  arena = gs.carve(arena, c, *m.llm_ids, N);
  LossHeadScratch ls;
  arena = ls.carve(arena, c, p.head_rows);
  VisionActivations VA;
  VisionGradScratch vgs;
  float* d_rows = nullptr;
  if (p.images) {
    arena = VA.carve(arena, *m.vision, vl, p.images, all(p.checkpoint, vl));
    VA.cancel = m.cancel;
    if (p.images_need_grad) arena = vgs.carve(arena, *m.vision, p.images), d_rows = take(p.images * rows * D);
  }

  // forward: the images, then the LLM over their rows (spliced from a host copy: the graph's splice
  // reads host rows, one upload per span on a device)
  RowSpans spans;
  std::vector<float> host_rows;
  if (p.images) {
    ops.from_host(VA.cols, cols.data(), (int64_t)cols.size());
    vision_forward_train(ops, *m.vision, *m.vision_ids, *m.vision_views, VA);
    host_rows.resize((size_t)(p.images * rows * D));
    ops.to_host(host_rows.data(), VA.out, (int64_t)host_rows.size());
    for (const TrainPlan::Span& s : p.spans) spans.push_back({s.at, rows, host_rows.data() + s.index * rows * D});
  }
  llm_forward_train(ops, c, *m.llm_ids, *m.llm_views, p.tokens.data(), spans, LA);

  // the loss head (lm_head + cross-entropy, chunked, only over rows with a target), then backward
  const float scale = p.count ? grad_scale / (float)p.count : 0.0f;
  const double sum = llm_loss_head(ops, c, *m.llm_ids, *m.llm_views, *m.llm_grads, LA, p.targets.data(), p.weights.data(), scale, ls, gs);
  llm_backward_train(ops, c, *m.llm_ids, *m.llm_views, *m.llm_grads, p.tokens.data(), LA, gs, p.lowest);
  if (p.images_need_grad) {
    for (const TrainPlan::Span& s : p.spans) ops.copy(d_rows + s.index * rows * D, gs.dx + s.at * D, rows * D);
    vision_backward_train(ops, *m.vision, *m.vision_ids, *m.vision_views, *m.vision_grads, VA, d_rows, p.tower_trains, vgs);
  }
  return sum;
}

}  // namespace medllava
