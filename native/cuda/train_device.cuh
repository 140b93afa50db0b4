// Training on a CUDA device: the same train_step (native/train/train_step.h) on CudaOps, with the
// parameters mirrored in device memory (DeviceParams: frozen ones in their stored type, trainable ones
// as f32 copies of the host master values, re-uploaded whenever an update moved them), the activation
// arena and the gradients in device memory. After each step the gradients are added into the host
// tables', so the global norm, clipping and AdamW (fp32 master weights and state) are the CPU
// engine's (native/train/trainer.h): gradients down and trainable values up once per step, which
// suits the projector and LoRA; a device-resident optimizer for full fine-tuning comes later.
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
#include "device.cuh"    // defines: DeviceMemory, DeviceParams
#include "ops_cuda.cuh"  // defines: CudaOps

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
  }
  ~DeviceTrainer() override {
    dev_.bind();
    release(arena_), release(ids_);
    for (auto& t : grads_)
      for (auto& g : t) release(g.second.data);
    if (st_) dev_.free_stream(st_);
  }
  Device& device() { return dev_; }

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
    // the device's views and gradient buffers (zeroed), the arena and the ids scratch
    const GradViews lg = device_grads(0, llm_->params()), vg = vision_ ? device_grads(1, vision_->params()) : GradViews{};
    m.llm_views = &lp_.views(), m.llm_grads = &lg;
    if (vision_) m.vision_views = &vp_->views(), m.vision_grads = &vg;
    const int64_t floats = train_arena_floats(m, p);
    if (floats > arena_floats_) release(arena_), arena_ = static_cast<float*>(dev_.alloc((size_t)floats * 4)), arena_floats_ = floats;
    if (p.B * p.T > ids_n_) release(ids_), ids_ = static_cast<int32_t*>(dev_.alloc((size_t)(p.B * p.T) * 4)), ids_n_ = p.B * p.T;
    CudaOps ops{dev_, st_, ids_, nullptr, nullptr};
    const double sum = train_step(ops, m, p, arena_, cols, grad_scale);
    // the gradients into the host tables (+=), where the optimizer reads them
    add_to_host(0, llm_->params(), host_lg);
    if (vision_) add_to_host(1, vision_->params(), host_vg);
    Loss out;
    out.tokens = p.count;
    out.loss = p.count ? sum / (double)p.count : 0.0;
    return out;
  }

 private:
  struct Buf {
    float* data = nullptr;
    int64_t n = 0;
  };
  void release(void* p) {
    if (p) dev_.release(p);
  }
  // one zeroed device buffer per trainable parameter that owns storage; a tied one shares its owner's
  GradViews device_grads(int table, const ParamTable& t) {
    GradViews g((size_t)t.size(), nullptr);
    std::map<int, Buf>& bufs = grads_[(size_t)table];
    for (int i = 0; i < t.size(); ++i) {
      if (!t[i].trainable || t[i].tied_to >= 0) continue;
      Buf& b = bufs[i];
      if (b.n != t[i].numel()) release(b.data), b.data = static_cast<float*>(dev_.alloc((size_t)t[i].numel() * 4)), b.n = t[i].numel();
      fill_launch(b.data, 0.0f, b.n, st_);
      g[(size_t)i] = b.data;
    }
    for (int i = 0; i < t.size(); ++i)
      if (t[i].trainable && t[i].tied_to >= 0) g[(size_t)i] = g[(size_t)t[i].tied_to];
    return g;
  }
  void add_to_host(int table, const ParamTable& t, const GradViews& host) {
    std::vector<float> tmp;
    for (auto& kv : grads_[(size_t)table]) {
      const int i = kv.first;
      if (i >= t.size() || !t[i].trainable || t[i].tied_to >= 0 || !host[(size_t)i]) continue;
      tmp.resize((size_t)kv.second.n);
      dev_.download(tmp.data(), kv.second.data, tmp.size() * 4, st_);
      float* h = host[(size_t)i];
      for (size_t k = 0; k < tmp.size(); ++k) h[k] += tmp[k];
    }
  }

  Device dev_;
  DeviceParams lp_;
  std::unique_ptr<DeviceParams> vp_;
  medllava_stream_t st_ = nullptr;
  float* arena_ = nullptr;
  int64_t arena_floats_ = 0;
  int32_t* ids_ = nullptr;
  int64_t ids_n_ = 0;
  std::vector<std::map<int, Buf>> grads_ = std::vector<std::map<int, Buf>>(2);
};

}  // namespace cuda
}  // namespace medllava
