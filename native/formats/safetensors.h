// safetensors: an 8-byte little-endian header length, a JSON header, then the tensor bytes.
// Parsed defensively (the file is untrusted): header ≤ 100 MB (upstream's own limit), every
// tensor's offsets in bounds, equal to dtype size × shape (overflow-checked), and the tensors
// tiling the data section exactly (no overlap, no holes, no trailing bytes), as upstream demands.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../core/mapped_file.h"

namespace medllava {
namespace safetensors {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct TensorInfo {
  std::string name;
  std::string dtype;            // "F32", "F16", "BF16", "I64", …
  std::vector<uint64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets within the data section
};

struct Header {
  std::vector<TensorInfo> tensors;  // in header order
  std::vector<std::pair<std::string, std::string>> metadata;
  uint64_t data_start = 0;          // file offset of the data section
};

// Bytes per element of a safetensors dtype name; 0 when unknown.
size_t dtype_bytes(const std::string& dtype);

// Validates and parses a whole file image. E_FORMAT with the reason on any inconsistency.
Header parse(const uint8_t* data, size_t size, const std::string& what);

class File {
 public:
  static std::shared_ptr<File> open(const std::string& path);
  const Header& header() const { return header_; }
  const uint8_t* tensor_data(const TensorInfo& t) const { return map_->data() + header_.data_start + t.begin; }
  const std::shared_ptr<MappedFile>& mapping() const { return map_; }

 private:
  std::shared_ptr<MappedFile> map_;
  Header header_;
};

struct TensorToWrite {
  std::string name;
  std::string dtype;
  std::vector<uint64_t> shape;
  const uint8_t* data = nullptr;
  uint64_t bytes = 0;
};

// Writes atomically: a temporary file beside `path`, fsync, rename. Validates sizes first.
void write(const std::string& path, const std::vector<TensorToWrite>& tensors,
           const std::vector<std::pair<std::string, std::string>>& metadata);

}  // namespace safetensors
}  // namespace medllava
