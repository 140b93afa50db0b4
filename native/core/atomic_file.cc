#include "atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "error.h"

namespace medllava {

AtomicFileWriter::AtomicFileWriter(const std::string& path)
    : path_(path), tmp_(path + ".tmp-" + std::to_string(::getpid())) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(ErrorCode::IO, "cannot create " + tmp_ + ": " + std::strerror(errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFileWriter::write(const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error(ErrorCode::IO, "cannot write " + tmp_ + ": " + std::strerror(errno));
    }
    p += w;
    n -= (size_t)w;
    offset_ += (uint64_t)w;
  }
}

void AtomicFileWriter::pad_to(uint64_t alignment, uint8_t fill) {
  const uint64_t pad = (alignment - offset_ % alignment) % alignment;
  const std::vector<uint8_t> bytes((size_t)pad, fill);
  write(bytes.data(), bytes.size());
}

void AtomicFileWriter::commit() {
  if (::fsync(fd_) != 0) throw Error(ErrorCode::IO, "cannot fsync " + tmp_ + ": " + std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp_.c_str());
    throw Error(ErrorCode::IO, "cannot rename " + tmp_ + " to " + path_ + ": " + std::strerror(e));
  }
}

}  // namespace medllava
