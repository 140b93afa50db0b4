// PyTorch checkpoints (torch.save's zip format: archive/data.pkl + archive/data/<key>) read by a
// restricted unpickler: it knows an allow-list of globals (tensor/parameter rebuilders, typed
// storages, OrderedDict) and nothing else — any other global is E_UNSUPPORTED naming it. Nothing
// is ever executed. Tensor data stays in the (memory-mapped) file.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../core/mapped_file.h"

namespace medllava {
namespace torchfile {

struct TensorInfo {
  std::string name;              // dotted path in the (flattened) state dict
  std::string dtype;             // safetensors-style name: F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL
  std::vector<uint64_t> shape;
  uint64_t file_offset = 0;      // absolute offset of the first byte in the file
  uint64_t bytes = 0;
};

std::vector<TensorInfo> parse(const uint8_t* data, size_t size, const std::string& what);

class File {
 public:
  static std::shared_ptr<File> open(const std::string& path);
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const uint8_t* data(const TensorInfo& t) const { return map_->data() + t.file_offset; }

 private:
  std::shared_ptr<MappedFile> map_;
  std::vector<TensorInfo> tensors_;
};

}  // namespace torchfile
}  // namespace medllava
