// The CPU training step (trainer.h). The activation tables and gradient scratch are host vectors,
// grown to the largest batch seen; every parameter read goes through the tables' views.
#include "trainer.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <shared_mutex>
#include <string>

#include "../core/error.h"
#include "../cpu/ops_cpu.h"

namespace medllava {

namespace {
ParamTable& writable(const ParamTable& t) { return const_cast<ParamTable&>(t); }

GradViews grad_views(ParamTable& t) {
  GradViews g((size_t)t.size(), nullptr);
  for (int i = 0; i < t.size(); ++i) g[(size_t)i] = t.grads(i);
  return g;
}

bool any_trainable(const ParamTable& t, const std::vector<int>& ids) {
  for (int id : ids)
    if (id >= 0 && t[id].trainable) return true;
  return false;
}
}  // namespace

Trainer::Trainer(std::shared_ptr<const Llm> llm, std::shared_ptr<const Vision> vision) : llm_(std::move(llm)), vision_(std::move(vision)) {
  if (llm_->on_device()) throw Error(ErrorCode::Unsupported, "training runs on the CPU for now: load the model with device 'cpu'");
}

void Trainer::check(const TrainBatch& b) const {
  const LlmConfig& c = llm_->config();
  if (b.seqs.empty()) throw Error(ErrorCode::Argument, "the batch is empty");
  const int64_t rows = vision_ ? vision_->tokens() : 0;
  std::vector<int> used(b.pixels.size(), 0);
  for (size_t s = 0; s < b.seqs.size(); ++s) {
    const TrainSequence& q = b.seqs[s];
    const std::string where = "example " + std::to_string(s) + ": ";
    const int64_t T = (int64_t)q.tokens.size();
    if (T == 0) throw Error(ErrorCode::Argument, where + "it has no tokens");
    if (q.labels.size() != q.tokens.size())
      throw Error(ErrorCode::Shape, where + std::to_string(q.labels.size()) + " labels for " + std::to_string(T) + " tokens");
    if (T > c.context)
      throw Error(ErrorCode::ContextFull, where + std::to_string(T) + " positions do not fit the context of " + std::to_string(c.context));
    if (!std::isfinite(q.weight) || q.weight < 0) throw Error(ErrorCode::Argument, where + "its weight must be a finite number ≥ 0");
    std::vector<int> covered((size_t)T, 0);
    for (const TrainSequence::Image& im : q.images) {
      if (!vision_) throw Error(ErrorCode::Unsupported, where + "it has an image, but this model has no vision tower");
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
  }
  for (size_t i = 0; i < used.size(); ++i)
    if (used[i] != 1) throw Error(ErrorCode::Argument, "image " + std::to_string(i) + " is used " + std::to_string(used[i]) + " times (once expected)");
  if (vision_)
    for (const auto& px : b.pixels)
      if ((int64_t)px.size() != 3 * vision_->config().image_size * vision_->config().image_size)
        throw Error(ErrorCode::Shape, "an image's pixels are not 3 × " + std::to_string(vision_->config().image_size) + "²");
}

Trainer::Loss Trainer::accumulate(const TrainBatch& b, float grad_scale) {
  check(b);
  const LlmConfig& c = llm_->config();
  const LlmIds& ids = llm_->ids();
  ParamTable& lt = writable(llm_->params());
  std::shared_lock<std::shared_mutex> llock(lt.mutex());
  std::unique_ptr<std::shared_lock<std::shared_mutex>> vlock;
  if (vision_) vlock = std::make_unique<std::shared_lock<std::shared_mutex>>(vision_->params().mutex());
  CpuOps ops;

  // the batch as (B, T): padded at the end with token 0, whose targets are ignored
  const int64_t B = (int64_t)b.seqs.size();
  int64_t T = 0;
  for (const TrainSequence& q : b.seqs) T = std::max(T, (int64_t)q.tokens.size());
  const int64_t N = B * T, D = c.hidden;
  std::vector<int32_t> tokens((size_t)N, 0), targets((size_t)N, -100);
  std::vector<float> weights((size_t)N, 0.0f);
  int64_t count = 0;
  for (int64_t s = 0; s < B; ++s) {
    const TrainSequence& q = b.seqs[(size_t)s];
    const int64_t n = (int64_t)q.tokens.size();
    for (int64_t t = 0; t < n; ++t) {
      tokens[(size_t)(s * T + t)] = q.tokens[(size_t)t];
      if (t + 1 < n && q.labels[(size_t)(t + 1)] >= 0) {
        targets[(size_t)(s * T + t)] = q.labels[(size_t)(t + 1)];
        weights[(size_t)(s * T + t)] = q.weight;
        ++count;
      }
    }
  }
  // sizes: vision table + grads, LLM table + grads, image-row gradients
  const int64_t n_img = (int64_t)b.pixels.size();
  const VisionConfig* vc = vision_ ? &vision_->config() : nullptr;
  const int64_t vrows = vision_ ? vision_->tokens() : 0;
  const std::vector<bool> rec_llm(checkpoint ? (size_t)c.layers : 0, true);
  const int64_t v_layers = vision_ ? (int64_t)vision_->ids().layers.size() : 0;
  const std::vector<bool> rec_vis(checkpoint ? (size_t)v_layers : 0, true);
  const int64_t v_floats = n_img ? VisionActivations::floats(*vc, v_layers, n_img, rec_vis) : 0;
  const int64_t l_floats = LlmActivations::floats(c, ids, B, T, rec_llm);
  const int64_t total = v_floats + l_floats;
  if ((int64_t)act_.size() < total) act_.resize((size_t)total);
  VisionActivations VA;
  LlmActivations LA;
  float* p = act_.data();
  if (n_img) p = VA.carve(p, *vc, v_layers, n_img, rec_vis);
  LA.carve(p, c, ids, B, T, rec_llm);

  // which backward parts are needed
  const ParamTable* vt = vision_ ? &vision_->params() : nullptr;
  const VisionIds* vids = vision_ ? &vision_->ids() : nullptr;
  bool proj_trains = false, tower_trains = false;
  if (vt) {
    const std::vector<int> proj = {vids->proj0_w, vids->proj0_b, vids->proj2_w, vids->proj2_b};
    proj_trains = any_trainable(*vt, proj);
    for (int i = 0; i < vt->size(); ++i)
      if ((*vt)[i].trainable && std::find(proj.begin(), proj.end(), i) == proj.end()) tower_trains = true;
  }
  const bool images_need_grad = n_img > 0 && (proj_trains || tower_trains);
  int64_t lowest = c.layers;
  if (images_need_grad || lt[ids.embed].trainable) lowest = 0;
  for (int64_t l = 0; l < c.layers && lowest == c.layers; ++l) {
    const LlmIds::Layer& L = ids.layers[(size_t)l];
    std::vector<int> lids = {L.attn_norm, L.ffn_norm};
    for (const LlmIds::Linear* x : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
      lids.insert(lids.end(), {x->w, x->lora_a, x->lora_b});
    if (any_trainable(lt, lids)) lowest = l;
  }

  // forward: images, then the LLM over the spliced rows
  RowSpans spans;
  if (n_img) {
    const int64_t pp = vc->patches() * 3 * vc->patch * vc->patch;
    for (int64_t i = 0; i < n_img; ++i) vision_->im2col(b.pixels[(size_t)i].data(), VA.cols + i * pp);
    vision_forward_train(ops, *vc, *vids, vt->views(), VA);
    for (int64_t s = 0; s < B; ++s)
      for (const TrainSequence::Image& im : b.seqs[(size_t)s].images)
        spans.push_back({s * T + im.at, vrows, VA.out + im.index * vrows * vc->out_dim});
  }
  llm_forward_train(ops, c, ids, lt.views(), tokens.data(), spans, LA);

  // the loss, and its gradient in place of the logits
  std::vector<float> loss((size_t)N);
  const float scale = count ? grad_scale / (float)count : 0.0f;
  ops.cross_entropy(LA.logits, targets.data(), weights.data(), loss.data(), N, c.vocab, scale);
  double sum = 0;
  for (float x : loss) sum += x;
  Loss out;
  out.tokens = count;
  out.loss = count ? sum / (double)count : 0.0;

  // backward
  const int64_t lg = LlmGradScratch::floats(c, ids, N);
  const int64_t vg = images_need_grad ? VisionGradScratch::floats(*vc, n_img) : 0;
  const int64_t drows = images_need_grad ? n_img * vrows * D : 0;
  if ((int64_t)grad_.size() < lg + vg + drows) grad_.resize((size_t)(lg + vg + drows));
  LlmGradScratch gs;
  float* q = gs.carve(grad_.data(), c, ids, N);
  const GradViews lG = grad_views(lt);
  llm_backward_train(ops, c, ids, lt.views(), lG, tokens.data(), LA, gs, lowest);
  if (images_need_grad) {
    VisionGradScratch vgs;
    float* d_out = vgs.carve(q, *vc, n_img);
    for (int64_t s = 0; s < B; ++s)
      for (const TrainSequence::Image& im : b.seqs[(size_t)s].images)
        ops.copy(d_out + im.index * vrows * D, gs.dx + (s * T + im.at) * D, vrows * D);
    vision_backward_train(ops, *vc, *vids, vt->views(), grad_views(writable(*vt)), VA, d_out, tower_trains, vgs);
  }
  return out;
}

void Trainer::zero_grads() {
  for (const ParamTable* t : {&llm_->params(), vision_ ? &vision_->params() : nullptr}) {
    if (!t) continue;
    ParamTable& w = writable(*t);
    std::unique_lock<std::shared_mutex> lock(w.mutex());
    if (float* g = w.all_grads()) std::fill(g, g + w.trainable_numel(), 0.0f);
  }
}

double Trainer::grad_norm() {
  double ss = 0;
  CpuOps ops;
  for (const ParamTable* t : {&llm_->params(), vision_ ? &vision_->params() : nullptr}) {
    if (!t) continue;
    ParamTable& w = writable(*t);
    std::shared_lock<std::shared_mutex> lock(w.mutex());
    if (const float* g = w.all_grads()) ops.sum_squares(g, w.trainable_numel(), &ss);
  }
  return std::sqrt(ss);
}

void Trainer::update(const std::vector<ParamGroup>& groups, int64_t step, float lr_factor, float clip, float beta1, float beta2, float eps) {
  CpuOps ops;
  for (bool vis : {false, true}) {
    if (vis && !vision_) continue;
    ParamTable& t = writable(vis ? vision_->params() : llm_->params());
    std::unique_lock<std::shared_mutex> lock(t.mutex());
    for (const ParamGroup& g : groups) {
      if (g.vision != vis || g.id < 0 || g.id >= t.size() || !t[g.id].trainable || t[g.id].tied_to >= 0) continue;
      AdamWArgs a;
      a.lr = g.lr * lr_factor, a.weight_decay = g.weight_decay, a.beta1 = beta1, a.beta2 = beta2, a.eps = eps, a.grad_scale = clip;
      a.step = step;
      ops.adamw(t.values(g.id), t.grads(g.id), t.adam_m(g.id), t.adam_v(g.id), t[g.id].numel(), a);
    }
    if (float* gr = t.all_grads()) std::fill(gr, gr + t.trainable_numel(), 0.0f);
    t.touch();
  }
}

}  // namespace medllava
