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

}  // namespace

Trainer::Trainer(std::shared_ptr<const Llm> llm, std::shared_ptr<const Vision> vision) : llm_(std::move(llm)), vision_(std::move(vision)) {}

TrainModel Trainer::host_model(GradViews& lg, GradViews& vg) const {
  ParamTable& lt = writable(llm_->params());
  lg = grad_views(lt);
  TrainModel m;
  m.llm = &llm_->config(), m.llm_ids = &llm_->ids(), m.llm_table = &lt, m.llm_views = &lt.views(), m.llm_grads = &lg;
  if (vision_) {
    ParamTable& vt = writable(vision_->params());
    vg = grad_views(vt);
    m.vision = &vision_->config(), m.vision_ids = &vision_->ids(), m.vision_table = &vt, m.vision_views = &vt.views();
    m.vision_grads = &vg, m.vision_rows = vision_->tokens();
  }
  m.lora_dropout = lora_dropout;
  m.loss_rows = loss_rows;
  m.cancel = &cancel;
  return m;
}

std::vector<float> Trainer::patches(const TrainBatch& b, const TrainPlan& p) const {
  std::vector<float> cols;
  if (!p.images) return cols;
  const VisionConfig& vc = vision_->config();
  const int64_t pp = vc.patches() * 3 * vc.patch * vc.patch;
  cols.resize((size_t)(p.images * pp));
  for (int64_t i = 0; i < p.images; ++i) vision_->im2col(b.pixels[(size_t)i].data(), cols.data() + i * pp);
  return cols;
}

Trainer::Loss Trainer::accumulate(const TrainBatch& b, float grad_scale) {
  std::shared_lock<std::shared_mutex> llock(llm_->params().mutex());
  std::unique_ptr<std::shared_lock<std::shared_mutex>> vlock;
  if (vision_) vlock = std::make_unique<std::shared_lock<std::shared_mutex>>(vision_->params().mutex());
  GradViews lg, vg;
  TrainModel m = host_model(lg, vg);
  const TrainPlan p = plan_batch(m, b, checkpoint);
  m.dropout_step = dropout_seed + calls++;
  const std::vector<float> cols = patches(b, p);
  const int64_t n = train_arena_floats(m, p);
  if ((int64_t)arena_.size() < n) arena_.resize((size_t)n);
  CpuOps ops;
  Loss out;
  out.tokens = p.count;
  const double sum = train_step(ops, m, p, arena_.data(), cols, grad_scale);
  out.loss = p.count ? sum / (double)p.count : 0.0;
  return out;
}

void Trainer::set_compute_bf16(bool on) {
  if (on) throw Error(ErrorCode::Unsupported, "bf16 compute is for training on a CUDA device; the CPU trains in fp32");
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
      if (!t.adam_m(g.id)) throw Error(ErrorCode::Argument, t[g.id].name + ": its optimizer state is another rank's (ZeRO-1)");
      ops.adamw(t.values(g.id), t.grads(g.id), t.adam_m(g.id), t.adam_v(g.id), t[g.id].numel(), a);
    }
    if (float* gr = t.all_grads()) std::fill(gr, gr + t.trainable_numel(), 0.0f);
    t.touch();
  }
}

void Trainer::allreduce_grads(GradReducer& r) {
  for (const ParamTable* ct : {&llm_->params(), vision_ ? &vision_->params() : nullptr}) {
    if (!ct) continue;
    ParamTable& t = const_cast<ParamTable&>(*ct);
    std::unique_lock<std::shared_mutex> lock(t.mutex());
    if (float* g = t.all_grads()) r.allreduce(g, t.trainable_numel(), nullptr);  // one flat run: one collective
  }
}

void restore_param_state(ParamTable& t, int id, char which, const float* data, int64_t n) {
  t.sync_host();
  std::unique_lock<std::shared_mutex> lock(t.mutex());
  if (id < 0 || id >= t.size()) throw Error(ErrorCode::Argument, "no such parameter");
  const Param& p = t[id];
  if (!p.trainable || p.tied_to >= 0) throw Error(ErrorCode::Argument, p.name + " is not a trainable parameter with its own storage");
  if (n != p.numel()) throw Error(ErrorCode::Argument, p.name + ": " + std::to_string(n) + " values for " + std::to_string(p.numel()));
  float* dst = which == 'w' ? t.values(id) : which == 'm' ? t.adam_m(id) : which == 'v' ? t.adam_v(id) : nullptr;
  if (!dst) throw Error(ErrorCode::Argument, "restore: which must be value, m or v");
  std::copy(data, data + n, dst);
  t.touch();
}

}  // namespace medllava
