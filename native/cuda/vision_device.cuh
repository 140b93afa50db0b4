// The vision tower + projector on a CUDA device: device memory for its parameters (DeviceParams), one
// arena, and the graph of native/model/vision_graph.h run over CudaOps — the layer order is not
// repeated here. The patches are laid out on the host (im2col) and uploaded in one copy.
// defines: VisionDevice, VisionRunnerOn. Header-only, like llm_device.cuh: compiled by nvcc into the
// addon and run under the SIMT emulator in the tests.
#pragma once
#include <cstdint>
#include <mutex>
#include <vector>

#include "../core/error.h"
#include "../model/vision.h"
#include "compat.cuh"
#include "device.cuh"       // defines: DeviceMemory, DeviceParams, mib
#include "ops_cuda.cuh"     // defines: CudaOps
#include "kernels.cuh"   // defines: kMaxHd

namespace medllava {
namespace cuda {

class VisionDevice {
 public:
  VisionDevice(const Vision& v, DeviceMemory& dev) : v_(v), dev_(dev), params_(v.params(), dev) {
    const VisionConfig& c = v.config();
    if (c.hidden / c.heads > kMaxHd) throw Error(ErrorCode::Unsupported, "CUDA attention supports head dims up to " + std::to_string(kMaxHd));
    const size_t weights = DeviceParams::stored_bytes(v.params());
    const size_t need = weights + arena_floats() * 4;
    if (need > dev.available())
      throw Error(ErrorCode::OOM, "the vision tower needs " + mib(need) + " of device memory (weights " + mib(weights) + "); " +
                                      mib(dev.available()) + " are free");
    params_.upload_all();
    arena_ = static_cast<float*>(dev.alloc(arena_floats() * 4));
  }
  DeviceParams& params() { return params_; }  // a device trainer borrows its frozen weights
  ~VisionDevice() { dev_.release(arena_); }
  VisionDevice(const VisionDevice&) = delete;
  VisionDevice& operator=(const VisionDevice&) = delete;

  // pixels (3, S, S) normalised → out (tokens, out_dim), both host memory
  void encode(const float* pixels, float* out) {
    const VisionConfig& c = v_.config();
    dev_.bind();
    medllava_stream_t st = dev_.stream();
    VisionScratch s;
    s.carve(arena_, c);
    float* cols = arena_ + VisionScratch::floats(c);
    float* res = cols + c.patches() * 3 * c.patch * c.patch;
    std::vector<float> host_cols((size_t)(c.patches() * 3 * c.patch * c.patch));
    v_.im2col(pixels, host_cols.data());
    dev_.upload(cols, host_cols.data(), host_cols.size() * 4, st);
    CudaOps ops{dev_, st};
    vision_tower(ops, c, v_.ids(), params_.views(), cols, s, res);
    dev_.download(out, res, (size_t)(c.tokens() * c.out_dim) * 4, st);
    dev_.check("vision encode");
  }

 private:
  size_t arena_floats() const {
    const VisionConfig& c = v_.config();
    // the tower's buffers, the patches, the output
    return (size_t)(VisionScratch::floats(c) + c.patches() * 3 * c.patch * c.patch + c.tokens() * c.out_dim + 64);
  }

  const Vision& v_;
  DeviceMemory& dev_;
  DeviceParams params_;
  float* arena_ = nullptr;
};

// The VisionDeviceRunner (native/model/vision.h) over a VisionDevice on a `Device`: the CUDA
// runtime's in the addon, the emulated one in the tests. Encodes are serialised (one arena).
template <class Device>
class VisionRunnerOn : public VisionDeviceRunner {
 public:
  template <class... DeviceArgs>
  explicit VisionRunnerOn(const Vision& v, DeviceArgs... args) : dev_(args...), tower_(v, dev_) {}
  ~VisionRunnerOn() override { dev_.bind(); }
  Device& device() { return dev_; }
  VisionDevice& tower() { return tower_; }
  void encode(const float* pixels, float* out) override {
    std::lock_guard<std::mutex> lock(mu_);
    tower_.encode(pixels, out);
  }

 private:
  Device dev_;  // declared before the tower: built first, destroyed last
  VisionDevice tower_;
  std::mutex mu_;
};

}  // namespace cuda
}  // namespace medllava
