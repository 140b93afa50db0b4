#include "zip.h"

#include <cstring>
#include <set>

#include "../core/error.h"
#include "checked.h"

namespace medllava {
namespace zip {

namespace {
uint16_t u16(const uint8_t* p) { uint16_t v; std::memcpy(&v, p, 2); return v; }
uint32_t u32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
uint64_t u64(const uint8_t* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }
}  // namespace

std::vector<Entry> read_directory(const uint8_t* data, size_t size, const std::string& what) {
  auto fail = [&](const std::string& why) { throw Error(ErrorCode::Format, what + ": " + why); };
  if (size < 22) fail("too short for a zip archive");
  // End of central directory: the last 0x06054b50 within the final 64 KiB + 22 bytes
  size_t eocd = SIZE_MAX;
  const size_t lowest = size > 65557 ? size - 65557 : 0;
  for (size_t p = size - 22 + 1; p-- > lowest;) {
    if (u32(data + p) == 0x06054b50) { eocd = p; break; }
  }
  if (eocd == SIZE_MAX) fail("no zip end-of-central-directory record");
  uint64_t count = u16(data + eocd + 10);
  uint64_t cd_size = u32(data + eocd + 12);
  uint64_t cd_offset = u32(data + eocd + 16);
  if (count == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff) {
    // ZIP64: the locator sits just before the EOCD and points at the ZIP64 EOCD record
    if (eocd < 20 || u32(data + eocd - 20) != 0x07064b50) fail("ZIP64 locator missing");
    const uint64_t z = u64(data + eocd - 20 + 8);
    if (z > size - 56 || u32(data + z) != 0x06064b50) fail("ZIP64 end-of-central-directory record out of bounds");
    count = u64(data + z + 32);
    cd_size = u64(data + z + 40);
    cd_offset = u64(data + z + 48);
  }
  uint64_t cd_end;
  if (add_overflows(cd_offset, cd_size, &cd_end) || cd_end > size) fail("central directory out of bounds");
  if (count > cd_size / 46) fail("central directory entry count does not fit its size");
  std::vector<Entry> entries;
  entries.reserve((size_t)count);
  std::set<std::string> names;
  uint64_t p = cd_offset;
  for (uint64_t i = 0; i < count; ++i) {
    if (p + 46 > cd_end || u32(data + p) != 0x02014b50) fail("bad central directory entry");
    Entry e;
    e.method = u16(data + p + 10);
    uint64_t csize = u32(data + p + 20), usize = u32(data + p + 24);
    const uint16_t name_len = u16(data + p + 28), extra_len = u16(data + p + 30), comment_len = u16(data + p + 32);
    uint64_t local = u32(data + p + 42);
    if (p + 46 + name_len + extra_len + comment_len > cd_end) fail("central directory entry runs past its end");
    e.name.assign(reinterpret_cast<const char*>(data + p + 46), name_len);
    // ZIP64 extra field: the 0xffffffff fields, in order usize, csize, local offset
    for (uint64_t x = p + 46 + name_len; x + 4 <= p + 46 + name_len + extra_len;) {
      const uint16_t id = u16(data + x), len = u16(data + x + 2);
      if (x + 4 + len > p + 46 + name_len + extra_len) fail("bad extra field");
      if (id == 0x0001) {
        uint64_t q = x + 4;
        auto take = [&](uint64_t& field) {
          if (field != 0xffffffff) return;
          if (q + 8 > x + 4 + len) fail("short ZIP64 extra field");
          field = u64(data + q);
          q += 8;
        };
        take(usize);
        take(csize);
        take(local);
      }
      x += 4 + len;
    }
    if (!names.insert(e.name).second) fail("duplicate entry '" + e.name + "'");
    if (local + 30 > size || u32(data + local) != 0x04034b50) fail("entry '" + e.name + "' has a bad local header");
    e.data_offset = local + 30 + u16(data + local + 26) + u16(data + local + 28);
    e.size = e.method == 0 ? usize : csize;
    uint64_t end;
    if (add_overflows(e.data_offset, e.size, &end) || end > size) fail("entry '" + e.name + "' runs past the end of the file");
    if (e.method == 0 && csize != usize) fail("stored entry '" + e.name + "' has different compressed and plain sizes");
    entries.push_back(std::move(e));
    p += 46 + name_len + extra_len + comment_len;
  }
  return entries;
}

}  // namespace zip
}  // namespace medllava
