// A read-only memory-mapped file. Weights are mapped, never copied, where the format allows.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace medllava {

class MappedFile {
 public:
  // E_IO (with the OS's reason) when the file cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Tells the OS the pages fully inside [p, p + n) of a read-only file mapping are not needed now: they
// leave this process's resident set and come back from the file if touched again (used after a
// tensor has been repacked into its own buffer). No effect on anonymous memory's contents is allowed:
// call it on file mappings only.
void drop_resident(const void* p, size_t n);

}  // namespace medllava
