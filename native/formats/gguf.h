// GGUF v2/v3: header, typed key-value metadata (scalars, strings, arrays), tensor infos, aligned
// tensor data. Every count, length, dimension, type and offset is validated against the file
// size, with overflow checks, before anything is allocated (llama.cpp's CVE-2024-23496,
// CVE-2025-53630, … were integer overflow → undersized buffer → heap overflow).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../core/mapped_file.h"

namespace medllava {
namespace gguf {

enum class ValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9, U64 = 10, I64 = 11,
  F64 = 12,
};

struct Value {
  ValueType type = ValueType::U8;
  uint64_t u = 0;   // U8 U16 U32 U64 BOOL
  int64_t i = 0;    // I8 I16 I32 I64
  double f = 0;     // F32 F64
  std::string s;    // STRING
  ValueType elem = ValueType::U8;  // ARRAY: element type
  std::vector<Value> items;        // ARRAY of STRING / ARRAY
  std::vector<uint8_t> raw;        // ARRAY of numbers / bools: the little-endian element bytes
  uint64_t count = 0;              // ARRAY: element count
};

struct KeyValue {
  std::string key;
  Value value;
};

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // ne[0] (fastest) first, as GGUF stores them
  uint32_t type = 0;           // ggml::Type
  uint64_t offset = 0;         // within the data section
  uint64_t bytes = 0;
  uint64_t elements = 0;
};

struct Header {
  uint32_t version = 0;
  uint64_t alignment = 32;
  std::vector<KeyValue> metadata;
  std::vector<TensorInfo> tensors;
  uint64_t data_start = 0;  // file offset of the (aligned) data section

  const Value* find(const std::string& key) const;
};

Header parse(const uint8_t* data, size_t size, const std::string& what);

class File {
 public:
  static std::shared_ptr<File> open(const std::string& path);
  const Header& header() const { return header_; }
  const uint8_t* tensor_data(const TensorInfo& t) const { return map_->data() + header_.data_start + t.offset; }

 private:
  std::shared_ptr<MappedFile> map_;
  Header header_;
};

struct TensorToWrite {
  std::string name;
  std::vector<uint64_t> dims;  // ne[0] first
  uint32_t type = 0;
  const uint8_t* data = nullptr;  // already in `type`'s layout
  uint64_t bytes = 0;
};

// Writes GGUF v3 atomically (temp file, fsync, rename).
void write(const std::string& path, const std::vector<KeyValue>& metadata, const std::vector<TensorToWrite>& tensors,
           uint64_t alignment = 32);

// Bytes of a tensor of `type` with these dims; E_FORMAT-style message in `why` and false when the
// dims do not fit the type's blocks or overflow.
bool tensor_bytes(uint32_t type, const std::vector<uint64_t>& dims, uint64_t* bytes, uint64_t* elements, std::string* why);

}  // namespace gguf
}  // namespace medllava
