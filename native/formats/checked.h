// Overflow-checked arithmetic and a bounds-checked little-endian reader for file parsers. The
// history to not repeat: integer overflow → undersized buffer → heap overflow.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#include "../core/error.h"

namespace medllava {

inline bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }
inline bool add_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_add_overflow(a, b, out); }

class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size, std::string what) : data_(data), size_(size), what_(std::move(what)) {}

  [[noreturn]] void fail(const std::string& why) const {
    throw Error(ErrorCode::Format, what_ + ": " + why + " (at byte " + std::to_string(pos_) + ")");
  }
  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }
  void need(uint64_t n, const char* what) const {
    if (n > remaining()) fail(std::string("truncated: ") + what + " needs " + std::to_string(n) + " bytes, " +
                              std::to_string(remaining()) + " remain");
  }
  template <class T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));  // files are little-endian, as is every host we build for
    pos_ += sizeof(T);
    return v;
  }
  const uint8_t* take(uint64_t n, const char* what) {
    need(n, what);
    const uint8_t* p = data_ + pos_;
    pos_ += (size_t)n;
    return p;
  }
  void seek(size_t pos) {
    if (pos > size_) fail("seek past the end");
    pos_ = pos;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  std::string what_;
};

}  // namespace medllava
