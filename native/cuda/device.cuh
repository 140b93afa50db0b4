// Device plumbing shared by every model on CUDA: the device as the model code sees it, and a model's
// parameter table mirrored in device memory. defines: DeviceMemory, mib, DeviceParams.
//
// Header-only, so that it compiles twice: by nvcc into the addon (the real device, backend.cu) and
// by the host compiler into the test addon, where DeviceMemory is host memory and every launch runs
// under the SIMT emulator (native/simt/napi_simt.cc).
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "../core/error.h"
#include "../model/params.h"
#include "compat.cuh"
#include "elements.cuh"  // defines: to_bf16_launch

namespace medllava {
namespace cuda {

// One device. backend.cu implements it with the CUDA runtime; the test addon with host memory
// (poisoned on allocation) under the emulator.
class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  virtual int index() const = 0;  // the device's ordinal
  // makes this device current on the calling thread (cudaSetDevice): every worker calls it first
  virtual void bind() = 0;
  virtual void* alloc(size_t bytes) = 0;  // E_OOM / E_CUDA
  virtual void release(void* p) = 0;
  // host → device, ordered on `s` (the source may be reused when it returns)
  virtual void upload(void* dst, const void* src, size_t bytes, medllava_stream_t s) = 0;
  // device → host after everything queued on `s`; returns when the bytes are there
  virtual void download(void* dst, const void* src, size_t bytes, medllava_stream_t s) = 0;
  // device → device, ordered on `s`
  virtual void copy(void* dst, const void* src, size_t bytes, medllava_stream_t s) = 0;
  virtual void sync(medllava_stream_t s) = 0;  // waits for everything queued on `s`
  virtual size_t available() = 0;  // bytes free on the device
  virtual medllava_stream_t stream() = 0;  // the default stream (weight uploads)
  virtual medllava_stream_t new_stream() = 0;
  virtual void free_stream(medllava_stream_t s) = 0;
  virtual void check(const char* what) = 0;  // E_CUDA with CUDA's message if a launch failed
};

inline std::string mib(size_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

// A ParamTable in device memory: every parameter that owns storage uploaded once in its stored type
// (vectors as f32); trainable ones as an f32 copy of the table's values, refreshed whenever the
// table's generation moves. views() is what the graphs read, indexed like the table.
class DeviceParams {
 public:
  DeviceParams(const ParamTable& t, DeviceMemory& dev)
      : t_(t), dev_(dev), dev_stored_(t.size()), dev_f32_(t.size()), dev_bf16_(t.size()), bf16_(t.size(), false), borrowed_(t.size(), false) {}
  ~DeviceParams() { release(); }
  DeviceParams(const DeviceParams&) = delete;
  DeviceParams& operator=(const DeviceParams&) = delete;

  // bytes the table's stored parameters take on the device
  static size_t stored_bytes(const ParamTable& t) {
    size_t b = 0;
    for (int i = 0; i < t.size(); ++i) b += bytes_of(t[i]);
    return b;
  }
  // Uploads what is not there yet (the table's lock held by the caller, shared or exclusive).
  void upload_all() {
    std::lock_guard<std::mutex> lock(mu_);
    sync_locked();
  }
  // The views for a forward: re-uploads trainable values when the table changed since the last call.
  const std::vector<WeightView>& views() {
    std::lock_guard<std::mutex> lock(mu_);
    if (gen_ != t_.generation() || views_.empty()) sync_locked();
    return views_;
  }
  // A trainable parameter's f32 device copy (null before the first sync, or when it is frozen): a
  // device training engine updates it in place as the master value.
  float* f32(int id) { return static_cast<float*>(dev_f32_[(size_t)id]); }
  // Mixed precision for training: the trainable parameters marked here are read through bf16 copies
  // of their f32 master copy (their GEMMs on tensor cores; gradients and optimizer state stay fp32).
  // Every upload refreshes the copies; after changing a master copy in place, call refresh_bf16.
  // Set before the first views().
  void set_bf16(const std::vector<bool>& on) {
    std::lock_guard<std::mutex> lock(mu_);
    bf16_ = on;
    bf16_.resize((size_t)t_.size(), false);
    views_.clear();
  }
  void refresh_bf16(int id, medllava_stream_t st) {
    if (dev_bf16_[(size_t)id] && dev_f32_[(size_t)id]) to_bf16_launch(f32(id), dev_bf16_[(size_t)id], t_[id].numel(), st);
  }
  // Frozen parameters are read from `src` (the inference runner's copy of the same table on the same
  // device) where it holds them, instead of being uploaded again; `src` must outlive this.
  void borrow_frozen(DeviceParams* src) {
    std::lock_guard<std::mutex> lock(mu_);
    src_ = src;
  }
  int device_index() const { return dev_.index(); }
  // The device copy of frozen parameter `id` in its stored type, null when there is none yet.
  const void* stored_copy(int id) {
    std::lock_guard<std::mutex> lock(mu_);
    return (size_t)id < dev_stored_.size() ? dev_stored_[(size_t)id] : nullptr;
  }
  // bytes of device memory this mirror allocated itself (borrowed copies not counted)
  size_t own_bytes() {
    std::lock_guard<std::mutex> lock(mu_);
    size_t b = 0;
    for (int i = 0; i < (int)dev_stored_.size() && i < t_.size(); ++i) {
      if (dev_stored_[(size_t)i] && !borrowed_[(size_t)i]) b += bytes_of(t_[i]);
      if (dev_f32_[(size_t)i]) b += (size_t)t_[i].numel() * 4;
      if (dev_bf16_[(size_t)i]) b += (size_t)t_[i].numel() * 2;
    }
    return b;
  }
  // The device copies are current: the host values were just brought in line with them.
  void mark_current() {
    std::lock_guard<std::mutex> lock(mu_);
    gen_ = t_.generation();
  }
  void release() {
    for (size_t i = 0; i < dev_stored_.size(); ++i)
      if (dev_stored_[i]) {
        if (!borrowed_[i]) dev_.release(dev_stored_[i]);
        dev_stored_[i] = nullptr, borrowed_[i] = false;
      }
    for (void*& p : dev_f32_)
      if (p) dev_.release(p), p = nullptr;
    for (void*& p : dev_bf16_)
      if (p) dev_.release(p), p = nullptr;
  }

 private:
  // frozen parameter i's stored bytes on the device: borrowed from src_ when it has them, else uploaded
  void* frozen_copy(int i, medllava_stream_t st) {
    const Param& p = t_[i];
    if (const void* b = src_ ? src_->stored_copy(i) : nullptr) {
      dev_stored_[(size_t)i] = const_cast<void*>(b), borrowed_[(size_t)i] = true;
      return dev_stored_[(size_t)i];
    }
    void* d = dev_.alloc(bytes_of(p));
    dev_stored_[(size_t)i] = d;
    dev_.upload(d, p.mapped ? static_cast<const void*>(p.mapped) : p.widened.data(), bytes_of(p), st);
    return d;
  }
  static size_t bytes_of(const Param& p) {
    if (p.tied_to >= 0) return 0;
    return p.mapped ? dtype_bytes(p.stored, p.numel()) : (size_t)p.numel() * 4;
  }
  void sync_locked() {
    const medllava_stream_t st = dev_.stream();
    if (dev_stored_.size() < (size_t)t_.size()) {  // parameters were added (new LoRA adapters)
      const size_t n = (size_t)t_.size();
      dev_stored_.resize(n, nullptr), dev_f32_.resize(n, nullptr), dev_bf16_.resize(n, nullptr), bf16_.resize(n, false);
      borrowed_.resize(n, false);
    }
    views_.assign((size_t)t_.size(), WeightView{});
    for (int i = 0; i < t_.size(); ++i) {
      const Param& p = t_[i];
      if (p.tied_to >= 0) continue;
      if (!dev_stored_[(size_t)i] && !p.trainable) frozen_copy(i, st);
      if (p.trainable) {
        if (!dev_f32_[(size_t)i]) dev_f32_[(size_t)i] = dev_.alloc((size_t)p.numel() * 4);
        dev_.upload(dev_f32_[(size_t)i], t_.view(i).data, (size_t)p.numel() * 4, st);
        if (bf16_[(size_t)i]) {
          if (!dev_bf16_[(size_t)i]) dev_bf16_[(size_t)i] = dev_.alloc((size_t)p.numel() * 2);
          refresh_bf16(i, st);
        }
      } else if (dev_f32_[(size_t)i]) {
        dev_.release(dev_f32_[(size_t)i]);
        dev_f32_[(size_t)i] = nullptr;
      }
      if ((!p.trainable || !bf16_[(size_t)i]) && dev_bf16_[(size_t)i]) {
        dev_.release(dev_bf16_[(size_t)i]);
        dev_bf16_[(size_t)i] = nullptr;
      }
    }
    for (int i = 0; i < t_.size(); ++i) {
      const Param& p = t_[i];
      const int root = p.tied_to >= 0 ? p.tied_to : i;
      const Param& r = t_[root];
      WeightView& v = views_[(size_t)i];
      v.rows = r.rows();
      v.cols = r.cols();
      if (r.trainable && dev_bf16_[(size_t)root]) {
        v.data = dev_bf16_[(size_t)root], v.type = DType::BF16;
      } else if (r.trainable) {
        v.data = dev_f32_[(size_t)root], v.type = DType::F32;
      } else if (!dev_stored_[(size_t)root]) {
        // a parameter made frozen again after it was trainable at load: its stored bytes go up now
        v.data = frozen_copy(root, st), v.type = r.mapped ? r.stored : DType::F32;
      } else {
        v.data = dev_stored_[(size_t)root], v.type = r.mapped ? r.stored : DType::F32;
      }
    }
    dev_.sync(st);  // every stream may read them from now on
    gen_ = t_.generation();
  }

  const ParamTable& t_;
  DeviceMemory& dev_;
  std::vector<void*> dev_stored_, dev_f32_, dev_bf16_;
  std::vector<bool> bf16_;      // trainable parameters read through a bf16 copy
  std::vector<bool> borrowed_;  // dev_stored_ entries that are src_'s (not released here)
  DeviceParams* src_ = nullptr;
  std::vector<WeightView> views_;
  uint64_t gen_ = ~(uint64_t)0;
  std::mutex mu_;
};

}  // namespace cuda
}  // namespace medllava
