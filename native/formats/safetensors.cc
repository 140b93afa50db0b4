#include "safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>

#include "../core/atomic_file.h"
#include "../core/error.h"
#include "checked.h"
#include "json.h"

namespace medllava {
namespace safetensors {

size_t dtype_bytes(const std::string& d) {
  static const std::pair<const char*, size_t> kSizes[] = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2}, {"I8", 1},
      {"U64", 8}, {"U32", 4}, {"U16", 2}, {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  for (const auto& s : kSizes)
    if (d == s.first) return s.second;
  return 0;
}

Header parse(const uint8_t* data, size_t size, const std::string& what) {
  auto fail = [&](const std::string& why) -> void { throw Error(ErrorCode::Format, what + ": " + why); };
  if (size < 8) fail("truncated: shorter than the 8-byte header length");
  uint64_t n;
  std::memcpy(&n, data, 8);
  if (n > kMaxHeaderBytes) fail("header length " + std::to_string(n) + " exceeds the 100 MB limit");
  if (n > size - 8) fail("header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(size) + " bytes)");
  if (n < 2 || data[8] != '{') fail("the header is not a JSON object");
  const json::Value root = json::parse(reinterpret_cast<const char*>(data + 8), (size_t)n, what + " header");
  if (root.type != json::Value::Type::Object) fail("the header is not a JSON object");

  Header h;
  h.data_start = 8 + n;
  const uint64_t data_size = size - h.data_start;
  std::set<std::string> names;
  for (const auto& kv : root.object) {
    if (!names.insert(kv.first).second) fail("duplicate entry '" + kv.first + "'");
    const json::Value& v = kv.second;
    if (kv.first == "__metadata__") {
      if (v.type != json::Value::Type::Object) fail("__metadata__ must be an object of strings");
      for (const auto& m : v.object) {
        if (m.second.type != json::Value::Type::String) fail("__metadata__['" + m.first + "'] is not a string");
        h.metadata.emplace_back(m.first, m.second.string);
      }
      continue;
    }
    const std::string where = "tensor '" + kv.first + "'";
    if (v.type != json::Value::Type::Object) fail(where + " is not an object");
    TensorInfo t;
    t.name = kv.first;
    const json::Value *dtype = nullptr, *shape = nullptr, *offsets = nullptr;
    for (const auto& f : v.object) {
      if (f.first == "dtype") dtype = &f.second;
      else if (f.first == "shape") shape = &f.second;
      else if (f.first == "data_offsets") offsets = &f.second;
      else fail(where + " has an unknown field '" + f.first + "'");
    }
    if (!dtype || dtype->type != json::Value::Type::String) fail(where + " has no dtype string");
    t.dtype = dtype->string;
    const size_t elem = dtype_bytes(t.dtype);
    if (!elem) fail(where + " has unknown dtype '" + t.dtype + "'");
    if (!shape || shape->type != json::Value::Type::Array) fail(where + " has no shape array");
    uint64_t numel = 1;
    for (const json::Value& d : shape->array) {
      if (d.type != json::Value::Type::Number || !d.is_uint) fail(where + " has a shape entry that is not a non-negative integer");
      if (mul_overflows(numel, d.uint, &numel)) fail(where + " shape product overflows 64 bits");
      t.shape.push_back(d.uint);
    }
    uint64_t bytes;
    if (mul_overflows(numel, elem, &bytes)) fail(where + " byte size overflows 64 bits");
    if (!offsets || offsets->type != json::Value::Type::Array || offsets->array.size() != 2 ||
        !offsets->array[0].is_uint || !offsets->array[1].is_uint)
      fail(where + " needs data_offsets [begin, end] of non-negative integers");
    t.begin = offsets->array[0].uint;
    t.end = offsets->array[1].uint;
    if (t.begin > t.end) fail(where + " data_offsets begin > end");
    if (t.end > data_size)
      fail(where + " data_offsets end " + std::to_string(t.end) + " is past the data section (" + std::to_string(data_size) + " bytes)");
    if (t.end - t.begin != bytes)
      fail(where + " holds " + std::to_string(t.end - t.begin) + " bytes but " + t.dtype + " × shape needs " + std::to_string(bytes));
    h.tensors.push_back(std::move(t));
  }
  // The tensors must tile the data section: sorted by offset, each starts where the last ended.
  std::vector<const TensorInfo*> order;
  for (const auto& t : h.tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t expect = 0;
  for (const TensorInfo* t : order) {
    if (t->begin < expect) fail("tensor '" + t->name + "' overlaps the tensor before it");
    if (t->begin > expect) fail("a gap of " + std::to_string(t->begin - expect) + " bytes precedes tensor '" + t->name + "'");
    expect = t->end;
  }
  if (expect != data_size)
    fail(std::to_string(data_size - expect) + " bytes after the last tensor belong to no tensor");
  return h;
}

std::shared_ptr<File> File::open(const std::string& path) {
  std::shared_ptr<File> f(new File());
  f->map_ = MappedFile::open(path);
  f->header_ = parse(f->map_->data(), f->map_->size(), path);
  return f;
}

namespace {
void json_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += (char)c;
        }
    }
  }
  out += '"';
}

}  // namespace

void write(const std::string& path, const std::vector<TensorToWrite>& tensors,
           const std::vector<std::pair<std::string, std::string>>& metadata) {
  std::string header = "{";
  bool first = true;
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    for (size_t i = 0; i < metadata.size(); ++i) {
      if (i) header += ',';
      json_string(header, metadata[i].first);
      header += ':';
      json_string(header, metadata[i].second);
    }
    header += '}';
    first = false;
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    if (t.name == "__metadata__" || !names.insert(t.name).second)
      throw Error(ErrorCode::Argument, "safetensors: duplicate or reserved tensor name '" + t.name + "'");
    const size_t elem = dtype_bytes(t.dtype);
    if (!elem) throw Error(ErrorCode::Argument, "safetensors: unknown dtype '" + t.dtype + "'");
    uint64_t numel = 1;
    for (uint64_t d : t.shape)
      if (mul_overflows(numel, d, &numel)) throw Error(ErrorCode::Shape, "safetensors: shape of '" + t.name + "' overflows");
    uint64_t bytes;
    if (mul_overflows(numel, elem, &bytes) || bytes != t.bytes)
      throw Error(ErrorCode::Shape, "safetensors: '" + t.name + "' has " + std::to_string(t.bytes) + " bytes; " + t.dtype +
                                        " × shape needs " + std::to_string(numel * elem));
    if (!first) header += ',';
    first = false;
    json_string(header, t.name);
    header += ":{\"dtype\":";
    json_string(header, t.dtype);
    header += ",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) header += (i ? "," : "") + std::to_string(t.shape[i]);
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  header += '}';
  while (header.size() % 8) header += ' ';  // data section 8-byte aligned, as upstream pads

  AtomicFileWriter out(path);
  const uint64_t n = header.size();
  out.write(&n, 8);
  out.write(header.data(), header.size());
  for (const TensorToWrite& t : tensors) out.write(t.data, (size_t)t.bytes);
  out.commit();
}

}  // namespace safetensors
}  // namespace medllava
