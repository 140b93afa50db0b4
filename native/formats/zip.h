// A read-only ZIP reader for PyTorch checkpoints (torch.save writes an uncompressed zip). Every
// offset and size is checked against the file; ZIP64 is supported; compressed entries are refused.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace medllava {
namespace zip {

struct Entry {
  std::string name;
  uint64_t data_offset = 0;  // file offset of the entry's bytes
  uint64_t size = 0;
  uint16_t method = 0;       // 0 = stored
};

// E_FORMAT on a malformed archive; `what` names the file in messages.
std::vector<Entry> read_directory(const uint8_t* data, size_t size, const std::string& what);

}  // namespace zip
}  // namespace medllava
