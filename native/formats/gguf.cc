#include "gguf.h"

#include <algorithm>
#include <set>

#include "../core/atomic_file.h"
#include "../core/error.h"
#include "checked.h"
#include "ggml_types.h"

namespace medllava {
namespace gguf {

namespace {
constexpr uint32_t kMaxDims = 4;       // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 2;      // arrays of arrays of scalars at most

size_t scalar_size(ValueType t) {
  switch (t) {
    case ValueType::U8: case ValueType::I8: case ValueType::BOOL: return 1;
    case ValueType::U16: case ValueType::I16: return 2;
    case ValueType::U32: case ValueType::I32: case ValueType::F32: return 4;
    case ValueType::U64: case ValueType::I64: case ValueType::F64: return 8;
    default: return 0;
  }
}

std::string read_string(ByteReader& r, const char* what) {
  const uint64_t n = r.read<uint64_t>(what);
  const uint8_t* p = r.take(n, what);  // bounds-checked before any allocation
  return std::string(reinterpret_cast<const char*>(p), (size_t)n);
}

void read_scalar(ByteReader& r, ValueType t, Value& v) {
  switch (t) {
    case ValueType::U8: v.u = r.read<uint8_t>("u8"); break;
    case ValueType::I8: v.i = r.read<int8_t>("i8"); break;
    case ValueType::U16: v.u = r.read<uint16_t>("u16"); break;
    case ValueType::I16: v.i = r.read<int16_t>("i16"); break;
    case ValueType::U32: v.u = r.read<uint32_t>("u32"); break;
    case ValueType::I32: v.i = r.read<int32_t>("i32"); break;
    case ValueType::F32: v.f = r.read<float>("f32"); break;
    case ValueType::BOOL: {
      const uint8_t b = r.read<uint8_t>("bool");
      if (b > 1) r.fail("bool value " + std::to_string(b) + " is neither 0 nor 1");
      v.u = b;
      break;
    }
    case ValueType::U64: v.u = r.read<uint64_t>("u64"); break;
    case ValueType::I64: v.i = r.read<int64_t>("i64"); break;
    case ValueType::F64: v.f = r.read<double>("f64"); break;
    default: r.fail("not a scalar type");
  }
}

Value read_value(ByteReader& r, ValueType t, int depth) {
  Value v;
  v.type = t;
  if (t == ValueType::STRING) {
    v.s = read_string(r, "string value");
  } else if (t == ValueType::ARRAY) {
    if (depth >= kMaxArrayDepth) r.fail("arrays nested deeper than " + std::to_string(kMaxArrayDepth));
    const uint32_t et = r.read<uint32_t>("array element type");
    if (et > (uint32_t)ValueType::F64) r.fail("unknown array element type " + std::to_string(et));
    v.elem = (ValueType)et;
    v.count = r.read<uint64_t>("array length");
    const size_t es = scalar_size(v.elem);
    // the smallest encoding of one element: a scalar's size, 8 bytes for a string's length, 12 for an array's header
    const uint64_t min_elem = es ? es : (v.elem == ValueType::STRING ? 8 : 12);
    uint64_t min_bytes;
    if (mul_overflows(v.count, min_elem, &min_bytes) || min_bytes > r.remaining())
      r.fail("array of " + std::to_string(v.count) + " elements cannot fit in the " + std::to_string(r.remaining()) +
             " bytes that remain");
    if (es) {
      const uint8_t* p = r.take(min_bytes, "array data");
      v.raw.assign(p, p + min_bytes);
      if (v.elem == ValueType::BOOL)
        for (uint8_t b : v.raw)
          if (b > 1) r.fail("bool array element is neither 0 nor 1");
    } else {
      v.items.reserve((size_t)v.count);
      for (uint64_t k = 0; k < v.count; ++k) v.items.push_back(read_value(r, v.elem, depth + 1));
    }
  } else {
    read_scalar(r, t, v);
  }
  return v;
}
}  // namespace

const Value* Header::find(const std::string& key) const {
  for (const auto& kv : metadata)
    if (kv.key == key) return &kv.value;
  return nullptr;
}

bool tensor_bytes(uint32_t type, const std::vector<uint64_t>& dims, uint64_t* bytes, uint64_t* elements, std::string* why) {
  const ggml::TypeInfo* info = ggml::type_info(type);
  if (!info) { *why = "unknown GGML type " + std::to_string(type); return false; }
  uint64_t n = 1;
  for (uint64_t d : dims) {
    if (d > (uint64_t)INT64_MAX || mul_overflows(n, d, &n) || n > (uint64_t)INT64_MAX) {
      *why = "dimensions overflow";
      return false;
    }
  }
  const uint64_t row = dims.empty() ? 1 : dims[0];
  if (row % info->block_elems) {
    *why = std::string("row length ") + std::to_string(row) + " is not a multiple of " + info->name + "'s block of " +
           std::to_string(info->block_elems);
    return false;
  }
  if (mul_overflows(n / info->block_elems, info->block_bytes, bytes)) { *why = "byte size overflows"; return false; }
  *elements = n;
  return true;
}

Header parse(const uint8_t* data, size_t size, const std::string& what) {
  ByteReader r(data, size, what);
  Header h;
  const uint32_t magic = r.read<uint32_t>("magic");
  if (magic != 0x46554747u) r.fail("not a GGUF file (bad magic)");  // "GGUF" little-endian
  h.version = r.read<uint32_t>("version");
  if (h.version == 1) throw Error(ErrorCode::Unsupported, what + ": GGUF version 1 is not supported (convert it with a current llama.cpp)");
  if (h.version != 2 && h.version != 3) r.fail("unknown GGUF version " + std::to_string(h.version));
  const uint64_t n_tensors = r.read<uint64_t>("tensor count");
  const uint64_t n_kv = r.read<uint64_t>("metadata count");
  // smallest key-value: 8 (key length) + 4 (type) + 1; smallest tensor info: 8 + 4 + 8 + 4 + 8
  uint64_t min_bytes;
  if (mul_overflows(n_kv, 13, &min_bytes) || min_bytes > r.remaining())
    r.fail(std::to_string(n_kv) + " metadata entries cannot fit in the file");
  if (mul_overflows(n_tensors, 32, &min_bytes) || min_bytes > r.remaining())
    r.fail(std::to_string(n_tensors) + " tensor infos cannot fit in the file");

  std::set<std::string> keys;
  h.metadata.reserve((size_t)n_kv);
  for (uint64_t k = 0; k < n_kv; ++k) {
    KeyValue kv;
    kv.key = read_string(r, "metadata key");
    if (!keys.insert(kv.key).second) r.fail("duplicate metadata key '" + kv.key + "'");
    const uint32_t t = r.read<uint32_t>("metadata value type");
    if (t > (uint32_t)ValueType::F64) r.fail("metadata '" + kv.key + "' has unknown value type " + std::to_string(t));
    kv.value = read_value(r, (ValueType)t, 0);
    h.metadata.push_back(std::move(kv));
  }
  if (const Value* a = h.find("general.alignment")) {
    if (a->type != ValueType::U32 || a->u == 0 || (a->u & (a->u - 1))) r.fail("general.alignment must be a power-of-two u32");
    h.alignment = a->u;
  }

  std::set<std::string> names;
  h.tensors.reserve((size_t)n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    TensorInfo t;
    t.name = read_string(r, "tensor name");
    if (!names.insert(t.name).second) r.fail("duplicate tensor name '" + t.name + "'");
    const uint32_t n_dims = r.read<uint32_t>("tensor dimension count");
    if (n_dims > kMaxDims) r.fail("tensor '" + t.name + "' has " + std::to_string(n_dims) + " dimensions (at most 4)");
    for (uint32_t d = 0; d < n_dims; ++d) t.dims.push_back(r.read<uint64_t>("tensor dimension"));
    t.type = r.read<uint32_t>("tensor type");
    t.offset = r.read<uint64_t>("tensor offset");
    std::string why;
    if (!tensor_bytes(t.type, t.dims, &t.bytes, &t.elements, &why)) r.fail("tensor '" + t.name + "': " + why);
    if (t.offset % h.alignment) r.fail("tensor '" + t.name + "' offset is not a multiple of the alignment");
    h.tensors.push_back(std::move(t));
  }
  uint64_t start = r.pos();
  if (add_overflows(start, (h.alignment - start % h.alignment) % h.alignment, &h.data_start) || h.data_start > size)
    r.fail("the data section starts past the end of the file");
  const uint64_t data_size = size - h.data_start;
  std::vector<const TensorInfo*> order;
  for (const auto& t : h.tensors) {
    uint64_t end;
    if (add_overflows(t.offset, t.bytes, &end) || end > data_size)
      r.fail("tensor '" + t.name + "' (" + std::to_string(t.bytes) + " bytes at " + std::to_string(t.offset) +
             ") runs past the end of the file");
    order.push_back(&t);
  }
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < order.size(); ++k)
    if (order[k]->offset < order[k - 1]->offset + order[k - 1]->bytes)
      r.fail("tensors '" + order[k - 1]->name + "' and '" + order[k]->name + "' overlap");
  return h;
}

std::shared_ptr<File> File::open(const std::string& path) {
  std::shared_ptr<File> f(new File());
  f->map_ = MappedFile::open(path);
  f->header_ = parse(f->map_->data(), f->map_->size(), path);
  return f;
}

namespace {
class Out {
 public:
  explicit Out(AtomicFileWriter& w) : w_(w) {}
  template <class T>
  void put(T v) { w_.write(&v, sizeof v); }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    w_.write(s.data(), s.size());
  }
  void value(const Value& v) {
    switch (v.type) {
      case ValueType::U8: put<uint8_t>((uint8_t)v.u); break;
      case ValueType::I8: put<int8_t>((int8_t)v.i); break;
      case ValueType::U16: put<uint16_t>((uint16_t)v.u); break;
      case ValueType::I16: put<int16_t>((int16_t)v.i); break;
      case ValueType::U32: put<uint32_t>((uint32_t)v.u); break;
      case ValueType::I32: put<int32_t>((int32_t)v.i); break;
      case ValueType::F32: put<float>((float)v.f); break;
      case ValueType::BOOL: put<uint8_t>(v.u ? 1 : 0); break;
      case ValueType::STRING: str(v.s); break;
      case ValueType::U64: put<uint64_t>(v.u); break;
      case ValueType::I64: put<int64_t>(v.i); break;
      case ValueType::F64: put<double>(v.f); break;
      case ValueType::ARRAY: {
        put<uint32_t>((uint32_t)v.elem);
        const size_t es = scalar_size(v.elem);
        if (es) {
          if (v.raw.size() != v.count * es) throw Error(ErrorCode::Argument, "gguf: array byte size does not match its count");
          put<uint64_t>(v.count);
          w_.write(v.raw.data(), v.raw.size());
        } else {
          put<uint64_t>(v.items.size());
          for (const Value& item : v.items) {
            if (item.type != v.elem) throw Error(ErrorCode::Argument, "gguf: array element of the wrong type");
            value(item);
          }
        }
        break;
      }
    }
  }

 private:
  AtomicFileWriter& w_;
};
}  // namespace

void write(const std::string& path, const std::vector<KeyValue>& metadata, const std::vector<TensorToWrite>& tensors,
           uint64_t alignment) {
  if (alignment == 0 || (alignment & (alignment - 1))) throw Error(ErrorCode::Argument, "gguf: alignment must be a power of two");
  std::set<std::string> keys, names;
  for (const auto& kv : metadata) {
    if (!keys.insert(kv.key).second) throw Error(ErrorCode::Argument, "gguf: duplicate metadata key '" + kv.key + "'");
    if (kv.key == "general.alignment" && (kv.value.type != ValueType::U32 || kv.value.u != alignment))
      throw Error(ErrorCode::Argument, "gguf: general.alignment must be a u32 equal to the alignment written");
  }
  std::vector<uint64_t> offsets;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (!names.insert(t.name).second) throw Error(ErrorCode::Argument, "gguf: duplicate tensor name '" + t.name + "'");
    if (t.dims.size() > kMaxDims) throw Error(ErrorCode::Shape, "gguf: tensor '" + t.name + "' has more than 4 dimensions");
    uint64_t bytes, elements;
    std::string why;
    if (!tensor_bytes(t.type, t.dims, &bytes, &elements, &why)) throw Error(ErrorCode::Shape, "gguf: tensor '" + t.name + "': " + why);
    if (bytes != t.bytes)
      throw Error(ErrorCode::Shape, "gguf: tensor '" + t.name + "' has " + std::to_string(t.bytes) + " bytes; its type and dims need " +
                                        std::to_string(bytes));
    offsets.push_back(offset);
    offset += (bytes + alignment - 1) / alignment * alignment;
  }
  AtomicFileWriter w(path);
  Out out(w);
  out.put<uint32_t>(0x46554747u);
  out.put<uint32_t>(3);
  out.put<uint64_t>(tensors.size());
  const bool write_alignment = alignment != 32 && !keys.count("general.alignment");
  out.put<uint64_t>(metadata.size() + (write_alignment ? 1 : 0));
  for (const auto& kv : metadata) {
    out.str(kv.key);
    out.put<uint32_t>((uint32_t)kv.value.type);
    out.value(kv.value);
  }
  if (write_alignment) {
    out.str("general.alignment");
    out.put<uint32_t>((uint32_t)ValueType::U32);
    out.put<uint32_t>((uint32_t)alignment);
  }
  for (size_t k = 0; k < tensors.size(); ++k) {
    out.str(tensors[k].name);
    out.put<uint32_t>((uint32_t)tensors[k].dims.size());
    for (uint64_t d : tensors[k].dims) out.put<uint64_t>(d);
    out.put<uint32_t>(tensors[k].type);
    out.put<uint64_t>(offsets[k]);
  }
  w.pad_to(alignment, 0);
  for (const auto& t : tensors) {
    w.write(t.data, (size_t)t.bytes);
    w.pad_to(alignment, 0);
  }
  w.commit();
}

}  // namespace gguf
}  // namespace medllava
