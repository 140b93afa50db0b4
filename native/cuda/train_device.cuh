// Training on a CUDA device, all of it in device memory: the same train_step (native/train/train_step.h)
// on CudaOps, then the global gradient norm (Σg² kernel), clipping and AdamW (its kernel) over the
// trainable parameters' fp32 master values, gradients and moments, which live on the device for the
// engine's lifetime. Frozen parameters stay in their stored type (DeviceParams); a trainable one's
// f32 device copy is its master value, updated in place. The frozen weights are borrowed from the
// model's inference runners on the same device (not held twice). With bf16 compute (set_compute_bf16: the
// default for a model on CUDA) the trainable matrices are read through bf16 copies refreshed after
// each update, as mixed-precision training does.
//
// Nothing crosses the bus per step but the batch and the loss. The host tables are brought up to
// date lazily: after an update the engine marks them stale (ParamTable::mark_host_stale), and the
// table's hook — run by whatever reads host values next: an inference forward, readParameter,
// setTrainable, a save — downloads values, gradients and moments once. A change made through the
// host table (writeParameter, a new trainable set) moves its generation; the engine then re-uploads
// from the host before its next step. One engine per model syncs the host at a time: a newer engine
// on the same model takes the hook over (after bringing the older one's values in).
//
// Header-only, like the runners: nvcc instantiates it over the real device (backend.cu), the test
// addon over the emulated one. defines: DeviceTrainer.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include "../train/trainer.h"
#include "device.cuh"         // defines: DeviceMemory, DeviceParams
#include "llm_device.cuh"     // defines: LlmRunnerOn
#include "ops_cuda.cuh"       // defines: CudaOps
#include "vision_device.cuh"  // defines: VisionRunnerOn

namespace medllava {
namespace cuda {

template <class Device>
class DeviceTrainer : public Trainer {
 public:
  template <class... DeviceArgs>
  DeviceTrainer(std::shared_ptr<const Llm> llm, std::shared_ptr<const Vision> vision, DeviceArgs&&... args)
      : Trainer(std::move(llm), std::move(vision)), dev_(std::forward<DeviceArgs>(args)...), lp_(llm_->params(), dev_) {
    dev_.bind();
    st_ = dev_.new_stream();
    if (vision_) vp_ = std::make_unique<DeviceParams>(vision_->params(), dev_);
    // the frozen weights the model's inference runners already hold on this device are borrowed, not uploaded again
    if (auto* r = dynamic_cast<LlmRunnerOn<Device>*>(llm_->device_runner()))
      if (r->model().params().device_index() == dev_.index()) lp_.borrow_frozen(&r->model().params());
    if (vision_)
      if (auto* r = dynamic_cast<VisionRunnerOn<Device>*>(vision_->device_runner()))
        if (r->tower().params().device_index() == dev_.index()) vp_->borrow_frozen(&r->tower().params());
    for (int k = 0; k < tables(); ++k) table(k).set_host_sync(this, [this, k] { pull(k); });
  }
  ~DeviceTrainer() override {
    // the host tables get the newest values and state before the device copies go
    for (int k = 0; k < tables(); ++k) {
      try {
        table(k).sync_host();
      } catch (...) {
      }
      table(k).set_host_sync(this, {});
    }
    dev_.bind();
    release(arena_), release(ids_);
    for (auto& t : state_)
      for (auto& s : t) release(s.second.grad), release(s.second.m), release(s.second.v);
    if (st_) dev_.free_stream(st_);
  }
  Device& device() { return dev_; }
  // device memory the engine's parameter mirrors allocated themselves (borrowed frozen weights not counted)
  size_t own_param_bytes() { return lp_.own_bytes() + (vp_ ? vp_->own_bytes() : 0); }

  void set_compute_bf16(bool on) override {
    if (calls) throw Error(ErrorCode::Argument, "the compute type is set before the first step");
    bf16_ = on;
    lp_.set_bf16(on ? llm_matrices(llm_->ids(), llm_->params().size()) : std::vector<bool>{});
    if (vision_) vp_->set_bf16(on ? vision_matrices(vision_->ids(), vision_->params().size()) : std::vector<bool>{});
  }

  Loss accumulate(const TrainBatch& b, float grad_scale) override {
    dev_.bind();
    std::shared_lock<std::shared_mutex> llock(llm_->params().mutex());
    std::unique_ptr<std::shared_lock<std::shared_mutex>> vlock;
    if (vision_) vlock = std::make_unique<std::shared_lock<std::shared_mutex>>(vision_->params().mutex());
    GradViews host_lg, host_vg;
    TrainModel m = host_model(host_lg, host_vg);  // plan_batch reads the tables, not the views
    const TrainPlan p = plan_batch(m, b, checkpoint);
    m.dropout_step = dropout_seed + calls++;
    const std::vector<float> cols = patches(b, p);
    const GradViews lg = device_state(0), vg = vision_ ? device_state(1) : GradViews{};
    m.llm_views = &lp_.views(), m.llm_grads = &lg;
    if (vision_) m.vision_views = &vp_->views(), m.vision_grads = &vg;
    const int64_t floats = train_arena_floats(m, p);
    if (floats > arena_floats_) release(arena_), arena_ = static_cast<float*>(dev_.alloc((size_t)floats * 4)), arena_floats_ = floats;
    if (p.B * p.T > ids_n_) release(ids_), ids_ = static_cast<int32_t*>(dev_.alloc((size_t)(p.B * p.T) * 4)), ids_n_ = p.B * p.T;
    CudaOps ops{dev_, st_, ids_, nullptr, nullptr};
    const double sum = train_step(ops, m, p, arena_, cols, grad_scale);
    dev_.sync(st_);
    state_clean_ = false;
    Loss out;
    out.tokens = p.count;
    out.loss = p.count ? sum / (double)p.count : 0.0;
    return out;
  }

  void zero_grads() override {
    dev_.bind();
    for (int k = 0; k < tables(); ++k) {
      std::unique_lock<std::shared_mutex> lock(table(k).mutex());
      device_state(k);  // follows a changed table first
      for (auto& s : state_[(size_t)k]) fill_launch(s.second.grad, 0.0f, s.second.n, st_);
    }
    dev_.sync(st_);
    state_clean_ = false;
  }

  double grad_norm() override {
    dev_.bind();
    double ss = 0;
    CudaOps ops{dev_, st_, ids_, nullptr, nullptr};
    for (int k = 0; k < tables(); ++k) {
      std::shared_lock<std::shared_mutex> lock(table(k).mutex());
      device_state(k);
      for (auto& s : state_[(size_t)k]) ops.sum_squares(s.second.grad, s.second.n, &ss);  // table order: a fixed sum
    }
    return std::sqrt(ss);
  }

  void update(const std::vector<ParamGroup>& groups, int64_t step, float lr_factor, float clip, float beta1, float beta2,
              float eps) override {
    dev_.bind();
    CudaOps ops{dev_, st_, ids_, nullptr, nullptr};
    for (int k = 0; k < tables(); ++k) {
      const ParamTable& t = table(k);
      std::unique_lock<std::shared_mutex> lock(t.mutex());
      device_state(k);
      DeviceParams& dp = params(k);
      dp.views();  // the master copies exist and match the host's last change
      for (const ParamGroup& g : groups) {
        if (g.vision != (k == 1) || g.id < 0 || g.id >= t.size() || !t[g.id].trainable || t[g.id].tied_to >= 0) continue;
        const State& s = state_[(size_t)k].at(g.id);
        AdamWArgs a;
        a.lr = g.lr * lr_factor, a.weight_decay = g.weight_decay, a.beta1 = beta1, a.beta2 = beta2, a.eps = eps, a.grad_scale = clip;
        a.step = step;
        ops.adamw(dp.f32(g.id), s.grad, s.m, s.v, s.n, a);
        dp.refresh_bf16(g.id, st_);  // the compute copy follows its master
      }
      for (auto& s : state_[(size_t)k]) fill_launch(s.second.grad, 0.0f, s.second.n, st_);
      dev_.sync(st_);
      t.mark_host_stale();
    }
    state_clean_ = false;
  }

  // each device gradient buffer summed over the ranks on this engine's stream (NCCL), then waited for
  void allreduce_grads(GradReducer& r) override {
    dev_.bind();
    for (int k = 0; k < tables(); ++k) {
      std::unique_lock<std::shared_mutex> lock(table(k).mutex());
      device_state(k);
      for (auto& s : state_[(size_t)k]) r.allreduce(s.second.grad, s.second.n, (void*)st_);  // table order, on every rank
    }
    r.finish((void*)st_);
    dev_.sync(st_);
    state_clean_ = false;
  }

  void sync_state() override {
    for (int k = 0; k < tables(); ++k) {
      if (!state_clean_) table(k).mark_host_stale();  // gradients may have moved without an update
      table(k).sync_host();
    }
    state_clean_ = true;
  }

 private:
  struct State {
    float *grad = nullptr, *m = nullptr, *v = nullptr;
    int64_t n = 0;
  };
  int tables() const { return vision_ ? 2 : 1; }
  const ParamTable& table(int k) const { return k ? vision_->params() : llm_->params(); }
  ParamTable& writable(int k) { return const_cast<ParamTable&>(table(k)); }
  DeviceParams& params(int k) { return k ? *vp_ : lp_; }
  void release(void* p) {
    if (p) dev_.release(p);
  }
  float* alloc(int64_t n) { return static_cast<float*>(dev_.alloc((size_t)n * 4)); }

  // The device's gradient / moment buffers of table k, one per trainable parameter that owns storage
  // (a tied one shares its owner's gradient), as gradient views. When the table changed through the
  // host since the engine last saw it (a new trainable set, a written value), its state is uploaded
  // from the host first: the host held the newest then (every change syncs it first). The caller
  // holds the table's lock.
  GradViews device_state(int k) {
    const ParamTable& t = table(k);
    std::map<int, State>& st = state_[(size_t)k];
    if (known_[(size_t)k] != t.generation()) {
      ParamTable& w = writable(k);
      std::map<int, State> next;
      for (int i = 0; i < t.size(); ++i) {
        if (!t[i].trainable || t[i].tied_to >= 0) continue;
        State s;
        auto old = st.find(i);
        if (!w.adam_m(i)) throw Error(ErrorCode::Unsupported, "a sharded optimizer state (ZeRO-1) is for the CPU engine only");
        if (old != st.end() && old->second.n == t[i].numel()) s = old->second, st.erase(old);
        else s.n = t[i].numel(), s.grad = alloc(s.n), s.m = alloc(s.n), s.v = alloc(s.n);
        dev_.upload(s.grad, w.grads(i), (size_t)s.n * 4, st_);
        dev_.upload(s.m, w.adam_m(i), (size_t)s.n * 4, st_);
        dev_.upload(s.v, w.adam_v(i), (size_t)s.n * 4, st_);
        next[i] = s;
      }
      for (auto& s : st) release(s.second.grad), release(s.second.m), release(s.second.v);
      st.swap(next);
      dev_.sync(st_);
      known_[(size_t)k] = t.generation();
    }
    GradViews g((size_t)t.size(), nullptr);
    for (auto& s : st) g[(size_t)s.first] = s.second.grad;
    for (int i = 0; i < t.size(); ++i)
      if (t[i].trainable && t[i].tied_to >= 0) g[(size_t)i] = g[(size_t)t[i].tied_to];
    return g;
  }

  // ParamTable's host-sync hook for table k: the master values, gradients and moments down into the
  // table; the engine's copies then count as current (no re-upload of what just came down).
  void pull(int k) {
    dev_.bind();
    ParamTable& t = writable(k);
    std::unique_lock<std::shared_mutex> lock(t.mutex());
    if (known_[(size_t)k] != t.generation()) return;  // the host changed since: it is the newer
    DeviceParams& dp = params(k);
    for (auto& e : state_[(size_t)k]) {
      const int i = e.first;
      const State& s = e.second;
      if (float* d = dp.f32(i)) dev_.download(t.values(i), d, (size_t)s.n * 4, st_);
      dev_.download(t.grads(i), s.grad, (size_t)s.n * 4, st_);
      dev_.download(t.adam_m(i), s.m, (size_t)s.n * 4, st_);
      dev_.download(t.adam_v(i), s.v, (size_t)s.n * 4, st_);
    }
    t.touch();
    known_[(size_t)k] = t.generation();
    dp.mark_current();
  }

  Device dev_;
  DeviceParams lp_;
  std::unique_ptr<DeviceParams> vp_;
  medllava_stream_t st_ = nullptr;
  float* arena_ = nullptr;
  int64_t arena_floats_ = 0;
  int32_t* ids_ = nullptr;
  int64_t ids_n_ = 0;
  std::vector<std::map<int, State>> state_ = std::vector<std::map<int, State>>(2);
  std::vector<uint64_t> known_ = std::vector<uint64_t>(2, ~(uint64_t)0);  // table generations the state matches
  bool state_clean_ = false;  // the host tables hold the device's gradients and moments
  bool bf16_ = false;         // mixed precision (set_compute_bf16)
};

}  // namespace cuda
}  // namespace medllava
