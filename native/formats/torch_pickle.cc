#include "torch_pickle.h"

#include <cstring>
#include <map>
#include <set>

#include "../core/error.h"
#include "checked.h"
#include "zip.h"

namespace medllava {
namespace torchfile {

namespace {

struct Obj;
using Ptr = std::shared_ptr<Obj>;

struct Obj {
  enum class Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor } kind = Kind::None;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                            // Str, Bytes, Global ("module.name"), Storage key
  std::vector<Ptr> items;                   // Tuple, List
  std::vector<std::pair<Ptr, Ptr>> dict;    // Dict
  // Storage / Tensor
  std::string dtype;
  size_t elem = 0;
  uint64_t storage_numel = 0;
  uint64_t offset = 0;                      // Tensor: storage offset in elements
  std::vector<int64_t> shape, stride;
};

Ptr make(Obj::Kind k) {
  auto o = std::make_shared<Obj>();
  o->kind = k;
  return o;
}

struct StorageType {
  const char* global;
  const char* dtype;
  size_t elem;
};
const StorageType kStorages[] = {
    {"torch.FloatStorage", "F32", 4}, {"torch.HalfStorage", "F16", 2},  {"torch.BFloat16Storage", "BF16", 2},
    {"torch.DoubleStorage", "F64", 8}, {"torch.LongStorage", "I64", 8},  {"torch.IntStorage", "I32", 4},
    {"torch.ShortStorage", "I16", 2},  {"torch.CharStorage", "I8", 1},   {"torch.ByteStorage", "U8", 1},
    {"torch.BoolStorage", "BOOL", 1},
};

const std::set<std::string>& allowed_globals() {
  static const std::set<std::string> g = [] {
    std::set<std::string> s = {"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                               "torch._utils._rebuild_parameter_with_state", "torch._tensor._rebuild_from_type_v2",
                               "collections.OrderedDict", "torch.Tensor", "torch.nn.parameter.Parameter",
                               "_codecs.encode"};
    for (const auto& st : kStorages) s.insert(st.global);
    return s;
  }();
  return g;
}

class Unpickler {
 public:
  Unpickler(const uint8_t* p, size_t n, std::string what) : r_(p, n, what), what_(std::move(what)), limit_(n) {}

  Ptr run() {
    for (;;) {
      const uint8_t op = r_.read<uint8_t>("opcode");
      if (++ops_ > limit_ + 16) fail("more operations than the pickle has bytes");
      switch (op) {
        case 0x80: r_.read<uint8_t>("protocol"); break;                            // PROTO
        case 0x95: r_.read<uint64_t>("frame size"); break;                          // FRAME
        case '.': {                                                                 // STOP
          if (stack_.size() != 1) fail("STOP with " + std::to_string(stack_.size()) + " items on the stack");
          return stack_.back();
        }
        case '}': push(make(Obj::Kind::Dict)); break;                               // EMPTY_DICT
        case ']': push(make(Obj::Kind::List)); break;                               // EMPTY_LIST
        case ')': push(make(Obj::Kind::Tuple)); break;                              // EMPTY_TUPLE
        case '(': marks_.push_back(stack_.size()); break;                           // MARK
        case 'N': push(make(Obj::Kind::None)); break;
        case 0x88: case 0x89: { auto o = make(Obj::Kind::Bool); o->b = op == 0x88; push(o); break; }
        case 'J': int_value(r_.read<int32_t>("int")); break;                        // BININT
        case 'K': int_value(r_.read<uint8_t>("int")); break;                        // BININT1
        case 'M': int_value(r_.read<uint16_t>("int")); break;                       // BININT2
        case 0x8a: {                                                                // LONG1
          const uint8_t n = r_.read<uint8_t>("long length");
          if (n > 8) fail("integer wider than 64 bits");
          const uint8_t* b = r_.take(n, "long");
          int64_t v = 0;
          for (int k = 0; k < n; ++k) v |= (int64_t)b[k] << (8 * k);
          if (n > 0 && n < 8 && (b[n - 1] & 0x80)) v |= -((int64_t)1 << (8 * n));  // sign-extend
          int_value(v);
          break;
        }
        case 'G': {                                                                 // BINFLOAT (big-endian)
          const uint8_t* b = r_.take(8, "float");
          uint64_t u = 0;
          for (int k = 0; k < 8; ++k) u = u << 8 | b[k];
          auto o = make(Obj::Kind::Float);
          std::memcpy(&o->f, &u, 8);
          push(o);
          break;
        }
        case 'X': str_value(Obj::Kind::Str, r_.read<uint32_t>("string length")); break;   // BINUNICODE
        case 0x8c: str_value(Obj::Kind::Str, r_.read<uint8_t>("string length")); break;   // SHORT_BINUNICODE
        case 0x8d: str_value(Obj::Kind::Str, r_.read<uint64_t>("string length")); break;  // BINUNICODE8
        case 'T': str_value(Obj::Kind::Str, r_.read<uint32_t>("string length")); break;   // BINSTRING
        case 'U': str_value(Obj::Kind::Str, r_.read<uint8_t>("string length")); break;    // SHORT_BINSTRING
        case 'B': str_value(Obj::Kind::Bytes, r_.read<uint32_t>("bytes length")); break;  // BINBYTES
        case 'C': str_value(Obj::Kind::Bytes, r_.read<uint8_t>("bytes length")); break;   // SHORT_BINBYTES
        case 't': { auto o = make(Obj::Kind::Tuple); o->items = pop_mark(); push(o); break; }  // TUPLE
        case 0x85: case 0x86: case 0x87: {                                          // TUPLE1/2/3
          const size_t n = (size_t)(op - 0x84);
          if (stack_.size() < n + base()) fail("stack underflow");
          auto o = make(Obj::Kind::Tuple);
          o->items.assign(stack_.end() - (long)n, stack_.end());
          stack_.resize(stack_.size() - n);
          push(o);
          break;
        }
        case 'l': { auto o = make(Obj::Kind::List); o->items = pop_mark(); push(o); break; }   // LIST
        case 'd': {                                                                 // DICT
          auto items = pop_mark();
          if (items.size() % 2) fail("DICT with an odd number of items");
          auto o = make(Obj::Kind::Dict);
          for (size_t k = 0; k < items.size(); k += 2) o->dict.emplace_back(items[k], items[k + 1]);
          push(o);
          break;
        }
        case 'a': { Ptr v = pop(); Ptr l = top(); if (l->kind != Obj::Kind::List) fail("APPEND to a non-list"); l->items.push_back(v); break; }
        case 'e': {                                                                 // APPENDS
          auto items = pop_mark();
          Ptr l = top();
          if (l->kind != Obj::Kind::List) fail("APPENDS to a non-list");
          l->items.insert(l->items.end(), items.begin(), items.end());
          break;
        }
        case 's': { Ptr v = pop(); Ptr k = pop(); Ptr d = top(); set_item(d, k, v); break; }   // SETITEM
        case 'u': {                                                                 // SETITEMS
          auto items = pop_mark();
          if (items.size() % 2) fail("SETITEMS with an odd number of items");
          Ptr d = top();
          for (size_t k = 0; k < items.size(); k += 2) set_item(d, items[k], items[k + 1]);
          break;
        }
        case 'q': memo(r_.read<uint8_t>("memo index")); break;                      // BINPUT
        case 'r': memo(r_.read<uint32_t>("memo index")); break;                     // LONG_BINPUT
        case 0x94: memo((uint64_t)memo_.size()); break;                             // MEMOIZE
        case 'h': get(r_.read<uint8_t>("memo index")); break;                       // BINGET
        case 'j': get(r_.read<uint32_t>("memo index")); break;                      // LONG_BINGET
        case '0': pop(); break;                                                     // POP
        case '1': pop_mark(); break;                                                // POP_MARK
        case '2': push(top()); break;                                               // DUP
        case 'c': {                                                                 // GLOBAL "module\nname\n"
          const std::string module = line(), name = line();
          global(module + "." + name);
          break;
        }
        case 0x93: {                                                                // STACK_GLOBAL
          Ptr name = pop(), module = pop();
          if (name->kind != Obj::Kind::Str || module->kind != Obj::Kind::Str) fail("STACK_GLOBAL of non-strings");
          global(module->s + "." + name->s);
          break;
        }
        case 'Q': {                                                                 // BINPERSID
          Ptr pid = pop();
          push(storage(pid));
          break;
        }
        case 'R': {                                                                 // REDUCE
          Ptr args = pop(), fn = pop();
          push(reduce(fn, args));
          break;
        }
        case 'b': pop(); break;  // BUILD: state is ignored, nothing is called (top stays the object)
        case 0x81: {                                                                // NEWOBJ
          Ptr args = pop(), cls = pop();
          fail("NEWOBJ of '" + (cls->kind == Obj::Kind::Global ? cls->s : std::string("?")) + "' is not supported");
        }
        default: {
          char buf[8];
          std::snprintf(buf, sizeof buf, "0x%02x", op);
          fail(std::string("unsupported pickle opcode ") + buf);
        }
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& why) const { throw Error(ErrorCode::Format, what_ + " (data.pkl): " + why); }
  size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(Ptr o) {
    if (stack_.size() > limit_) fail("stack grows beyond the pickle's size");
    stack_.push_back(std::move(o));
  }
  Ptr pop() {
    if (stack_.size() <= base()) fail("stack underflow");
    Ptr o = stack_.back();
    stack_.pop_back();
    return o;
  }
  Ptr top() {
    if (stack_.size() <= base()) fail("stack underflow");
    return stack_.back();
  }
  std::vector<Ptr> pop_mark() {
    if (marks_.empty()) fail("no MARK");
    const size_t m = marks_.back();
    marks_.pop_back();
    if (m > stack_.size()) fail("corrupt MARK");
    std::vector<Ptr> items(stack_.begin() + (long)m, stack_.end());
    stack_.resize(m);
    return items;
  }
  void int_value(int64_t v) { auto o = make(Obj::Kind::Int); o->i = v; push(o); }
  void str_value(Obj::Kind k, uint64_t n) {
    const uint8_t* p = r_.take(n, "string");
    auto o = make(k);
    o->s.assign(reinterpret_cast<const char*>(p), (size_t)n);
    push(o);
  }
  std::string line() {
    std::string s;
    for (;;) {
      const char c = (char)r_.read<uint8_t>("GLOBAL name");
      if (c == '\n') return s;
      if (s.size() > 256) fail("GLOBAL name too long");
      s += c;
    }
  }
  void memo(uint64_t idx) {
    if (idx > limit_) fail("memo index out of range");
    if (memo_.size() <= idx) memo_.resize((size_t)idx + 1);
    memo_[(size_t)idx] = top();
  }
  void get(uint64_t idx) {
    if (idx >= memo_.size() || !memo_[(size_t)idx]) fail("memo index " + std::to_string(idx) + " was never stored");
    push(memo_[(size_t)idx]);
  }
  void set_item(const Ptr& d, const Ptr& k, const Ptr& v) {
    if (d->kind != Obj::Kind::Dict) fail("SETITEM on a non-dict");
    d->dict.emplace_back(k, v);
  }
  void global(const std::string& name) {
    if (!allowed_globals().count(name))
      throw Error(ErrorCode::Unsupported, what_ + ": the pickle references '" + name +
                                              "', which is not on the allow-list of a tensor checkpoint (nothing is executed)");
    auto o = make(Obj::Kind::Global);
    o->s = name;
    push(o);
  }
  Ptr storage(const Ptr& pid) {
    // ('storage', <storage type>, key, location, numel)
    if (pid->kind != Obj::Kind::Tuple || pid->items.size() != 5 || pid->items[0]->kind != Obj::Kind::Str ||
        pid->items[0]->s != "storage" || pid->items[1]->kind != Obj::Kind::Global || pid->items[2]->kind != Obj::Kind::Str ||
        pid->items[4]->kind != Obj::Kind::Int || pid->items[4]->i < 0)
      fail("unrecognised persistent id (expected ('storage', type, key, location, numel))");
    auto o = make(Obj::Kind::Storage);
    for (const auto& st : kStorages)
      if (pid->items[1]->s == st.global) { o->dtype = st.dtype; o->elem = st.elem; }
    if (!o->elem) fail("'" + pid->items[1]->s + "' is not a storage type");
    o->s = pid->items[2]->s;
    o->storage_numel = (uint64_t)pid->items[4]->i;
    return o;
  }
  static std::vector<int64_t> ints(const Ptr& t, const Unpickler& u, const char* what) {
    if (t->kind != Obj::Kind::Tuple) u.fail(std::string(what) + " is not a tuple");
    std::vector<int64_t> v;
    for (const Ptr& x : t->items) {
      if (x->kind != Obj::Kind::Int || x->i < 0) u.fail(std::string(what) + " holds something other than a non-negative integer");
      v.push_back(x->i);
    }
    return v;
  }
  Ptr rebuild_tensor(const std::vector<Ptr>& a) {
    if (a.size() < 4 || a[0]->kind != Obj::Kind::Storage || a[1]->kind != Obj::Kind::Int || a[1]->i < 0)
      fail("_rebuild_tensor_v2 with unexpected arguments");
    auto t = make(Obj::Kind::Tensor);
    t->s = a[0]->s;
    t->dtype = a[0]->dtype;
    t->elem = a[0]->elem;
    t->storage_numel = a[0]->storage_numel;
    t->offset = (uint64_t)a[1]->i;
    t->shape = ints(a[2], *this, "tensor size");
    t->stride = ints(a[3], *this, "tensor stride");
    if (t->shape.size() != t->stride.size()) fail("tensor size and stride differ in length");
    return t;
  }
  Ptr reduce(const Ptr& fn, const Ptr& args) {
    if (fn->kind != Obj::Kind::Global) fail("REDUCE of something that is not a global");
    if (args->kind != Obj::Kind::Tuple) fail("REDUCE arguments are not a tuple");
    const auto& a = args->items;
    const std::string& f = fn->s;
    if (f == "torch._utils._rebuild_tensor_v2") return rebuild_tensor(a);
    if (f == "torch._utils._rebuild_parameter" || f == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || a[0]->kind != Obj::Kind::Tensor) fail("_rebuild_parameter of a non-tensor");
      return a[0];
    }
    if (f == "torch._tensor._rebuild_from_type_v2") {
      // (func, type, args, state): only the plain tensor rebuild is accepted
      if (a.size() < 3 || a[0]->kind != Obj::Kind::Global || a[0]->s != "torch._utils._rebuild_tensor_v2" ||
          a[2]->kind != Obj::Kind::Tuple)
        fail("_rebuild_from_type_v2 of something other than a plain tensor");
      return rebuild_tensor(a[2]->items);
    }
    if (f == "collections.OrderedDict") {
      auto d = make(Obj::Kind::Dict);
      if (!a.empty() && a[0]->kind == Obj::Kind::List) {
        for (const Ptr& kv : a[0]->items) {
          if (kv->kind != Obj::Kind::Tuple || kv->items.size() != 2) fail("OrderedDict item is not a pair");
          d->dict.emplace_back(kv->items[0], kv->items[1]);
        }
      }
      return d;
    }
    if (f == "_codecs.encode") {
      if (a.empty() || a[0]->kind != Obj::Kind::Str) fail("_codecs.encode of a non-string");
      auto b = make(Obj::Kind::Bytes);
      b->s = a[0]->s;  // latin-1 text as stored: the code points are the bytes
      return b;
    }
    fail("'" + f + "' cannot be called");
  }

  ByteReader r_;
  std::string what_;
  size_t limit_;
  size_t ops_ = 0;
  std::vector<Ptr> stack_;
  std::vector<size_t> marks_;
  std::vector<Ptr> memo_;
};

void flatten(const Ptr& o, const std::string& prefix, std::vector<std::pair<std::string, Ptr>>& out, int depth,
             const std::string& what) {
  if (depth > 32) throw Error(ErrorCode::Format, what + ": state dict nested deeper than 32");
  if (o->kind == Obj::Kind::Tensor) {
    out.emplace_back(prefix, o);
    return;
  }
  if (o->kind != Obj::Kind::Dict) return;  // epochs, optimizer scalars, …: not tensors
  for (const auto& kv : o->dict) {
    if (kv.first->kind != Obj::Kind::Str) continue;
    flatten(kv.second, prefix.empty() ? kv.first->s : prefix + "." + kv.first->s, out, depth + 1, what);
  }
}
}  // namespace

std::vector<TensorInfo> parse(const uint8_t* data, size_t size, const std::string& what) {
  if (size >= 2 && data[0] == 0x80 && data[1] <= 5)
    throw Error(ErrorCode::Unsupported, what + ": a legacy (pre-1.6, non-zip) torch.save file; re-save it with a current PyTorch");
  if (size < 4 || std::memcmp(data, "PK\x03\x04", 4) != 0)
    throw Error(ErrorCode::Format, what + ": not a PyTorch zip checkpoint");
  const std::vector<zip::Entry> entries = zip::read_directory(data, size, what);
  const zip::Entry* pkl = nullptr;
  std::string prefix;
  for (const auto& e : entries) {
    const size_t slash = e.name.find('/');
    if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      pkl = &e;
      prefix = e.name.substr(0, slash + 1);
    }
  }
  if (!pkl) throw Error(ErrorCode::Format, what + ": no <archive>/data.pkl in the zip");
  std::map<std::string, const zip::Entry*> by_name;
  for (const auto& e : entries) {
    if (e.name == prefix + "byteorder" && e.method == 0 && e.size == 3 && std::memcmp(data + e.data_offset, "big", 3) == 0)
      throw Error(ErrorCode::Unsupported, what + ": a big-endian checkpoint");
    by_name[e.name] = &e;
  }
  if (pkl->method != 0) throw Error(ErrorCode::Unsupported, what + ": data.pkl is compressed");
  Unpickler u(data + pkl->data_offset, (size_t)pkl->size, what);
  const Ptr root = u.run();
  std::vector<std::pair<std::string, Ptr>> flat;
  flatten(root, "", flat, 0, what);
  std::vector<TensorInfo> out;
  std::set<std::string> names;
  for (const auto& [name, t] : flat) {
    if (!names.insert(name).second) throw Error(ErrorCode::Format, what + ": duplicate tensor name '" + name + "'");
    const auto it = by_name.find(prefix + "data/" + t->s);
    if (it == by_name.end()) throw Error(ErrorCode::Format, what + ": tensor '" + name + "' refers to a missing storage " + t->s);
    const zip::Entry& st = *it->second;
    if (st.method != 0) throw Error(ErrorCode::Unsupported, what + ": storage " + t->s + " is compressed");
    // contiguous row-major only: what state dicts of nn.Modules hold
    uint64_t numel = 1;
    int64_t expect = 1;
    for (size_t d = t->shape.size(); d-- > 0;) {
      if (t->shape[d] != 1 && t->stride[d] != expect)
        throw Error(ErrorCode::Unsupported, what + ": tensor '" + name + "' is not contiguous");
      uint64_t e2;
      if (mul_overflows((uint64_t)expect, (uint64_t)t->shape[d], &e2) || e2 > (uint64_t)INT64_MAX)
        throw Error(ErrorCode::Format, what + ": tensor '" + name + "' size overflows");
      expect = (int64_t)e2;
      if (mul_overflows(numel, (uint64_t)t->shape[d], &numel)) throw Error(ErrorCode::Format, what + ": size overflows");
    }
    uint64_t begin, bytes, end;
    if (mul_overflows(t->offset, t->elem, &begin) || mul_overflows(numel, t->elem, &bytes) || add_overflows(begin, bytes, &end) ||
        end > st.size)
      throw Error(ErrorCode::Format, what + ": tensor '" + name + "' runs past its storage");
    TensorInfo ti;
    ti.name = name;
    ti.dtype = t->dtype;
    for (int64_t d : t->shape) ti.shape.push_back((uint64_t)d);
    ti.file_offset = st.data_offset + begin;
    ti.bytes = bytes;
    out.push_back(std::move(ti));
  }
  return out;
}

std::shared_ptr<File> File::open(const std::string& path) {
  std::shared_ptr<File> f(new File());
  f->map_ = MappedFile::open(path);
  f->tensors_ = parse(f->map_->data(), f->map_->size(), path);
  return f;
}

}  // namespace torchfile
}  // namespace medllava
