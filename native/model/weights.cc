#include "weights.h"

#include "../core/error.h"
#include "../formats/ggml_types.h"
#include "../formats/gguf.h"
#include "../formats/safetensors.h"
#include "../formats/torch_pickle.h"

namespace medllava {

int64_t TensorRef::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {
bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::char_traits<char>::length(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

DType from_name(const std::string& dtype, const std::string& where) {
  if (dtype == "F32") return DType::F32;
  if (dtype == "F16") return DType::F16;
  if (dtype == "BF16") return DType::BF16;
  throw Error(ErrorCode::Unsupported, where + ": weights of dtype " + dtype + " are not supported (F32, F16, BF16)");
}
}  // namespace

TensorRef WeightStore::get(const std::string& path, const std::string& name) {
  TensorRef r;
  r.where = path + ":" + name;
  if (ends_with(path, ".gguf")) {
    auto& f = gguf_[path];
    if (!f) f = gguf::File::open(path);
    for (const auto& t : f->header().tensors) {
      if (t.name != name) continue;
      switch (t.type) {
        case ggml::F32: r.type = DType::F32; break;
        case ggml::F16: r.type = DType::F16; break;
        case ggml::BF16: r.type = DType::BF16; break;
        case ggml::Q8_0: r.type = DType::Q8_0; break;
        case ggml::Q4_0: r.type = DType::Q4_0; break;
        case ggml::Q4_K: r.type = DType::Q4_K; break;
        case ggml::Q6_K: r.type = DType::Q6_K; break;
        default:
          throw Error(ErrorCode::Unsupported, r.where + ": GGML type " + ggml::type_info(t.type)->name +
                                                  " is not computed yet (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K are)");
      }
      r.data = f->tensor_data(t);
      for (size_t d = t.dims.size(); d-- > 0;) r.shape.push_back((int64_t)t.dims[d]);
      return r;
    }
  } else if (ends_with(path, ".safetensors")) {
    auto& f = st_[path];
    if (!f) f = safetensors::File::open(path);
    for (const auto& t : f->header().tensors) {
      if (t.name != name) continue;
      r.type = from_name(t.dtype, r.where);
      r.data = f->tensor_data(t);
      for (uint64_t d : t.shape) r.shape.push_back((int64_t)d);
      return r;
    }
  } else {
    auto& f = torch_[path];
    if (!f) f = torchfile::File::open(path);
    for (const auto& t : f->tensors()) {
      if (t.name != name) continue;
      r.type = from_name(t.dtype, r.where);
      r.data = f->data(t);
      for (uint64_t d : t.shape) r.shape.push_back((int64_t)d);
      return r;
    }
  }
  throw Error(ErrorCode::Format, path + " has no tensor " + name);
}

std::vector<float> WeightStore::get_f32(const std::string& path, const std::string& name, int64_t expect) {
  const TensorRef r = get(path, name);
  if (r.numel() != expect)
    throw Error(ErrorCode::Shape, r.where + " has " + std::to_string(r.numel()) + " elements, expected " + std::to_string(expect));
  std::vector<float> out((size_t)expect);
  for (int64_t i = 0; i < expect; ++i) {
    switch (r.type) {
      case DType::F32: out[(size_t)i] = reinterpret_cast<const float*>(r.data)[i]; break;
      case DType::F16: out[(size_t)i] = f16_to_f32(reinterpret_cast<const uint16_t*>(r.data)[i]); break;
      case DType::BF16: out[(size_t)i] = bf16_to_f32(reinterpret_cast<const uint16_t*>(r.data)[i]); break;
      default: throw Error(ErrorCode::Unsupported, r.where + ": a quantized vector");
    }
  }
  return out;
}

}  // namespace medllava
