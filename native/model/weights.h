// Weights as stored: tensors located in memory-mapped safetensors, GGUF or PyTorch files, never
// copied (norm vectors aside, which are widened to f32 at load: a few KiB).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../core/dtype.h"

namespace medllava {

namespace safetensors { class File; }
namespace gguf { class File; }
namespace torchfile { class File; }

struct TensorRef {
  const uint8_t* data = nullptr;
  DType type = DType::F32;
  std::vector<int64_t> shape;  // PyTorch order: rows first
  std::string where;           // "path:name", for messages
  int64_t numel() const;
};

class WeightStore {
 public:
  // Opens (once) and maps `path` — .safetensors, .gguf, or a PyTorch .bin/.pt — and returns its tensor `name`.
  TensorRef get(const std::string& path, const std::string& name);
  // The tensor as f32 (for small vectors: norms, biases).
  std::vector<float> get_f32(const std::string& path, const std::string& name, int64_t expect_numel);

 private:
  std::map<std::string, std::shared_ptr<safetensors::File>> st_;
  std::map<std::string, std::shared_ptr<gguf::File>> gguf_;
  std::map<std::string, std::shared_ptr<torchfile::File>> torch_;
};

}  // namespace medllava
