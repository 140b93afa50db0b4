// Writes a file so that a failure never leaves a half-written one: a temporary file beside the
// target, fsync, then rename over the target. Destroyed without commit(), the temp file goes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace medllava {

class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(const std::string& path);  // E_IO if the temp file cannot be created
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t n);
  void pad_to(uint64_t alignment, uint8_t fill);  // writes fill bytes up to the next multiple
  uint64_t offset() const { return offset_; }
  void commit();  // fsync + rename; E_IO on failure (the target is then untouched)

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t offset_ = 0;
};

}  // namespace medllava
