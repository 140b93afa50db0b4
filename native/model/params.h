// A model's parameters as one table — what checkpoints, optimizers, gradient norms and all-reduce
// iterate. defines: WeightView, Param, ParamTable.
//
// Frozen parameters stay where the file maps them, in their stored type (quantized included, with
// the CPU's VNNI repack beside them); small vectors (norms, biases, LayerScale) are widened to f32
// at load. A parameter marked trainable moves into one flat fp32 buffer laid out as
// [values | gradients | AdamW m | AdamW v], each a run of every trainable parameter in table order,
// and from then on every forward — CPU or device — reads those values.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "../ops/ops.h"  // defines: PackedWeights
#include "weights.h"     // defines: TensorRef

namespace medllava {

// What an op reads for one parameter: a (rows, cols) row-major matrix (a vector is (n, 1)) in `type`,
// wherever the backend keeps it (host for the CPU, device memory for CUDA). Empty: an absent tensor.
struct WeightView {
  const void* data = nullptr;
  DType type = DType::F32;
  int64_t rows = 0, cols = 0;
  const uint8_t* x16 = nullptr;  // CPU only: the VNNI repack of a block-quantized matrix
  explicit operator bool() const { return data != nullptr; }
  const float* f32() const { return static_cast<const float*>(data); }
  // rows [first, first + count): a fused qkv's q, k or v (block types: rows are whole blocks)
  WeightView slice_rows(int64_t first, int64_t count) const {
    if (!data) return WeightView{};
    WeightView v = *this;
    v.data = static_cast<const uint8_t*>(data) + dtype_bytes(type, first * cols);
    v.rows = count;
    v.x16 = nullptr;  // the repack interleaves groups of 16 rows: a slice reads the blocks
    return v;
  }
};

struct Param {
  std::string name;            // the HF / PEFT name (model.layers.0.self_attn.q_proj.weight)
  std::string where;           // file:tensor it was read from, for messages
  std::vector<int64_t> shape;  // PyTorch order
  DType stored = DType::F32;   // its type in the file
  bool trainable = false;
  int tied_to = -1;            // the parameter whose storage this one reads (lm_head ↔ embed_tokens)
  // storage when frozen
  const uint8_t* mapped = nullptr;  // the file's bytes (matrices)
  std::vector<float> widened;       // vectors, widened to f32 at load
  PackedWeights x16;                // CPU: the VNNI repack, where the CPU has it
  int64_t flat_offset = -1;         // trainable: its first float in the flat buffer
  int64_t moment_offset = -1;       // trainable and its AdamW moments held here: its first float in each moment buffer
  int64_t numel() const;
  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
  int64_t cols() const { return shape.size() < 2 ? 1 : numel() / shape[0]; }
};

class ParamTable {
 public:
  // A matrix read in place from `t` (shape checked by the caller), repacked for VNNI when `repack`.
  int add_matrix(const std::string& name, const TensorRef& t, bool repack);
  // A vector widened to f32 (`values` from WeightStore::get_f32), its stored type and shape from `t`.
  int add_vector(const std::string& name, const TensorRef& t, std::vector<float> values);
  // A parameter created here (not read from a file: a new LoRA adapter), f32 values of `shape`.
  int add_owned(const std::string& name, std::vector<int64_t> shape, std::vector<float> values);
  // A parameter that reads `to`'s storage (a tied lm_head); `repack`: its own VNNI repack of it (the
  // target keeps its mapped pages, which a gather reads).
  int add_tied(const std::string& name, int to, bool repack);

  int size() const { return (int)p_.size(); }
  const Param& operator[](int id) const { return p_[(size_t)id]; }
  int find(const std::string& name) const;  // -1 when absent

  // What the forward reads now, indexed by id (an absent id: an empty view). Call it under a read lock.
  const std::vector<WeightView>& views() const { return views_; }
  WeightView view(int id) const { return id < 0 ? WeightView{} : views_[(size_t)id]; }

  // Marks `ids` trainable (on) or frozen (off) and re-lays the flat buffer: the values of parameters
  // that stay trainable are kept, newly trainable ones are decoded from their stored type, gradients
  // and optimizer state start at zero. A tied parameter follows the one it is tied to. Write lock.
  void set_trainable(const std::vector<int>& ids, bool on);
  int64_t trainable_numel() const { return n_train_; }
  // The fp32 values / gradients of trainable parameter `id` (null when it is frozen). Write lock to change.
  float* values(int id);
  float* grads(int id);
  // AdamW's first and second moments of trainable parameter `id` (null when frozen, or held by another rank)
  float* adam_m(int id);
  float* adam_v(int id);
  // ZeRO-1: the moments are kept only for the trainable parameters `owned` marks (by id; the others' optimizer
  // state lives on other ranks). Moments of parameters still held are kept, new ones start at zero. set_trainable
  // holds every trainable parameter's again. Write lock.
  void set_moment_owners(const std::vector<bool>& owned);
  // bytes of AdamW moments this table holds
  int64_t moment_bytes() const { return (int64_t)moments_.size() * 4; }
  // every trainable parameter's gradient, as one run of trainable_numel() floats (null when none)
  float* all_grads() { return n_train_ ? flat_.data() + n_train_ : nullptr; }
  // The current values of `id` as f32 (decoded from the stored type when frozen): numel floats.
  void read(int id, float* out) const;
  // Bumped by every change made through the table: devices holding copies re-upload when it moves.
  uint64_t generation() const { return gen_.load(); }
  void touch() { ++gen_; }
  // A training engine on a device keeps the newest trainable values (and their optimizer state) in
  // device memory and marks the host copies stale; its hook brings them back (taking the exclusive
  // lock itself). Everything that reads host values — forwards, parameter reads and writes, changes of
  // the trainable set — calls sync_host() before it takes the lock. An empty hook: none.
  // `owner` identifies the engine: a new owner's hook first brings the previous owner's values in;
  // clearing (an empty hook) only clears the caller's own.
  void set_host_sync(const void* owner, std::function<void()> hook) const;
  void mark_host_stale() const { stale_ = true; }
  void sync_host() const;
  // Forwards read under the shared lock; changes through the table take it exclusively.
  std::shared_mutex& mutex() const { return mu_; }

 private:
  WeightView view_of(size_t i) const;  // what parameter i reads now
  void rebuild_views();                // every view, after the layout changed
  std::vector<Param> p_;
  std::vector<WeightView> views_;
  std::vector<float> flat_;     // [values | grads], n_train_ floats each
  std::vector<float> moments_;  // [m | v], n_moments_ floats each (every trainable parameter's unless sharded)
  int64_t n_moments_ = 0;
  int64_t n_train_ = 0;
  std::atomic<uint64_t> gen_{0};
  mutable std::shared_mutex mu_;
  mutable std::function<void()> sync_;
  mutable const void* sync_owner_ = nullptr;
  mutable std::atomic<bool> stale_{false};
  mutable std::mutex sync_mu_;  // one sync at a time; guards sync_
};

}  // namespace medllava
