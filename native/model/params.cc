// defines: the ParamTable (native/model/params.h): adding parameters, views, the trainable flat buffer.
#include "params.h"

#include <algorithm>
#include <cstring>

#include "../core/error.h"
#include "../core/mapped_file.h"

namespace medllava {

int64_t Param::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int ParamTable::add_matrix(const std::string& name, const TensorRef& t, bool repack) {
  Param p;
  p.name = name;
  p.where = t.where;
  p.shape = t.shape;
  p.stored = t.type;
  p.mapped = t.data;
  if (repack && p.shape.size() == 2) {
    p.x16 = repack_x16(t.data, t.type, p.shape[0], p.shape[1]);
    // the mapped original is not read again on this path: let its pages go from the resident set
    if (p.x16) drop_resident(t.data, dtype_bytes(t.type, t.numel()));
  }
  p_.push_back(std::move(p));
  views_.push_back(view_of(p_.size() - 1));
  return (int)p_.size() - 1;
}

int ParamTable::add_vector(const std::string& name, const TensorRef& t, std::vector<float> values) {
  Param p;
  p.name = name;
  p.where = t.where;
  p.shape = t.shape;
  p.stored = t.type;
  p.widened = std::move(values);
  p_.push_back(std::move(p));
  views_.push_back(view_of(p_.size() - 1));
  return (int)p_.size() - 1;
}

int ParamTable::add_owned(const std::string& name, std::vector<int64_t> shape, std::vector<float> values) {
  Param p;
  p.name = name;
  p.where = name + " (created)";
  p.shape = std::move(shape);
  p.stored = DType::F32;
  if ((int64_t)values.size() != p.numel()) throw Error(ErrorCode::Shape, name + ": the values do not fill its shape");
  p.widened = std::move(values);
  p_.push_back(std::move(p));
  views_.push_back(view_of(p_.size() - 1));
  touch();
  return (int)p_.size() - 1;
}

int ParamTable::add_tied(const std::string& name, int to, bool repack) {
  Param p = p_[(size_t)to];
  p.name = name;
  p.tied_to = to;
  p.widened.clear();
  p.x16 = repack && p.mapped && p.shape.size() == 2 ? repack_x16(p.mapped, p.stored, p.shape[0], p.shape[1]) : nullptr;
  p.mapped = nullptr;
  p_.push_back(std::move(p));
  views_.push_back(view_of(p_.size() - 1));
  return (int)p_.size() - 1;
}

int ParamTable::find(const std::string& name) const {
  for (size_t i = 0; i < p_.size(); ++i)
    if (p_[i].name == name) return (int)i;
  return -1;
}

WeightView ParamTable::view_of(size_t i) const {
  const Param& p = p_[(size_t)(p_[i].tied_to >= 0 ? p_[i].tied_to : (int)i)];
  WeightView v;
  v.rows = p.rows();
  v.cols = p.cols();
  if (p.trainable) {
    v.data = flat_.data() + p.flat_offset;
    v.type = DType::F32;
  } else if (p.mapped) {
    v.data = p.mapped;
    v.type = p.stored;
    v.x16 = p_[i].x16.get();  // a tied parameter may have its own repack
  } else {
    v.data = p.widened.data();
    v.type = DType::F32;
  }
  return v;
}

void ParamTable::rebuild_views() {
  views_.clear();
  for (size_t i = 0; i < p_.size(); ++i) views_.push_back(view_of(i));
}

void ParamTable::set_trainable(const std::vector<int>& ids, bool on) {
  std::vector<bool> want(p_.size());
  for (size_t i = 0; i < p_.size(); ++i) want[i] = p_[i].trainable;
  for (int id : ids) {
    if (id < 0 || id >= size()) throw Error(ErrorCode::Argument, "parameter id " + std::to_string(id) + " is out of range");
    const int root = p_[(size_t)id].tied_to >= 0 ? p_[(size_t)id].tied_to : id;
    want[(size_t)root] = on;
  }
  for (size_t i = 0; i < p_.size(); ++i)  // a tied parameter follows its target
    if (p_[i].tied_to >= 0) want[i] = want[(size_t)p_[i].tied_to];
  // the new layout: every trainable parameter that owns storage, in table order
  std::vector<int64_t> offset(p_.size(), -1);
  int64_t n = 0;
  for (size_t i = 0; i < p_.size(); ++i)
    if (want[i] && p_[i].tied_to < 0) offset[i] = n, n += p_[i].numel();
  std::vector<float> flat, moments;
  try {
    flat.assign((size_t)(2 * n), 0.0f);
    moments.assign((size_t)(2 * n), 0.0f);
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OOM, "the trainable parameters need " + std::to_string(16 * n) + " bytes (values, gradients, AdamW m and v)");
  }
  for (size_t i = 0; i < p_.size(); ++i) {
    if (offset[i] < 0) continue;
    const Param& p = p_[i];
    float* dst = flat.data() + offset[i];
    if (p.trainable) {
      std::memcpy(dst, flat_.data() + p.flat_offset, (size_t)p.numel() * 4);  // keeps values, restarts state
    } else {
      read((int)i, dst);
    }
  }
  flat_ = std::move(flat);
  moments_ = std::move(moments);
  n_train_ = n;
  n_moments_ = n;
  for (size_t i = 0; i < p_.size(); ++i) {
    p_[i].trainable = want[i];
    p_[i].flat_offset = want[i] ? offset[(size_t)(p_[i].tied_to >= 0 ? p_[i].tied_to : (int)i)] : -1;
    p_[i].moment_offset = p_[i].flat_offset;
  }
  rebuild_views();
  touch();
}

void ParamTable::read(int id, float* out) const {
  const Param& p = p_[(size_t)id];
  const WeightView v = views_[(size_t)id];
  const int32_t zero = 0;  // the whole tensor as one row of the gather op: decodes any stored type
  embed_cpu(v.data, v.type, &zero, out, 1, p.numel());
}

float* ParamTable::values(int id) {
  if (id < 0 || id >= size() || !p_[(size_t)id].trainable) return nullptr;
  return flat_.data() + p_[(size_t)id].flat_offset;
}

float* ParamTable::grads(int id) {
  if (id < 0 || id >= size() || !p_[(size_t)id].trainable) return nullptr;
  return flat_.data() + n_train_ + p_[(size_t)id].flat_offset;
}

float* ParamTable::adam_m(int id) {
  if (id < 0 || id >= size() || !p_[(size_t)id].trainable || p_[(size_t)id].moment_offset < 0) return nullptr;
  return moments_.data() + p_[(size_t)id].moment_offset;
}

float* ParamTable::adam_v(int id) {
  if (id < 0 || id >= size() || !p_[(size_t)id].trainable || p_[(size_t)id].moment_offset < 0) return nullptr;
  return moments_.data() + n_moments_ + p_[(size_t)id].moment_offset;
}

void ParamTable::set_moment_owners(const std::vector<bool>& owned) {
  if (owned.size() != p_.size()) throw Error(ErrorCode::Argument, "set_moment_owners: one flag per parameter");
  std::vector<int64_t> offset(p_.size(), -1);
  int64_t n = 0;
  for (size_t i = 0; i < p_.size(); ++i)
    if (p_[i].trainable && p_[i].tied_to < 0 && owned[i]) offset[i] = n, n += p_[i].numel();
  std::vector<float> moments;
  try {
    moments.assign((size_t)(2 * n), 0.0f);
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OOM, "the AdamW moments need " + std::to_string(8 * n) + " bytes");
  }
  for (size_t i = 0; i < p_.size(); ++i) {
    if (offset[i] < 0 || p_[i].moment_offset < 0) continue;
    const size_t k = (size_t)p_[i].numel() * 4;
    std::memcpy(moments.data() + offset[i], moments_.data() + p_[i].moment_offset, k);
    std::memcpy(moments.data() + n + offset[i], moments_.data() + n_moments_ + p_[i].moment_offset, k);
  }
  moments_ = std::move(moments);
  n_moments_ = n;
  for (size_t i = 0; i < p_.size(); ++i)
    p_[i].moment_offset = p_[i].tied_to >= 0 ? (p_[i].trainable ? offset[(size_t)p_[i].tied_to] : -1) : offset[i];
  touch();
}

void ParamTable::set_host_sync(const void* owner, std::function<void()> hook) const {
  std::lock_guard<std::mutex> lock(sync_mu_);
  if (!hook) {  // an engine going away: only its own hook
    if (sync_owner_ == owner) sync_ = nullptr, sync_owner_ = nullptr, stale_ = false;
    return;
  }
  if (sync_ && sync_owner_ != owner && stale_.load()) {  // the previous engine's newest values first
    stale_ = false;
    sync_();
  }
  sync_ = std::move(hook), sync_owner_ = owner;
}

void ParamTable::sync_host() const {
  if (!stale_.load()) return;
  std::lock_guard<std::mutex> lock(sync_mu_);
  if (!stale_.load() || !sync_) return;
  stale_ = false;  // before the pull: an update that lands meanwhile marks the copies stale again
  try {
    sync_();
  } catch (...) {
    stale_ = true;
    throw;
  }
}

}  // namespace medllava
