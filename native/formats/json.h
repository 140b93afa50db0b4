// A small strict JSON reader for file headers (safetensors). Untrusted input: depth and size are
// bounded, integers are kept exact as 64-bit values, and every failure is E_FORMAT.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace medllava {
namespace json {

struct Value {
  enum class Type { Null, Bool, Number, String, Array, Object } type = Type::Null;
  bool boolean = false;
  double number = 0;
  bool is_uint = false;  // an integer literal that fits in uint64
  uint64_t uint = 0;
  std::string string;
  std::vector<Value> array;
  std::vector<std::pair<std::string, Value>> object;  // in file order

  const Value* find(const std::string& key) const;
};

// Parses exactly one JSON value spanning all of [text, text+size) (whitespace aside).
Value parse(const char* text, size_t size, const std::string& what);

}  // namespace json
}  // namespace medllava
