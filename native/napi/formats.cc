// File formats at the N-API boundary: safetensors and GGUF headers, tensor reads and writes, and
// GGML block (de)quantization. Parsing runs on the worker pool; JS objects are built on the JS
// thread. lib/native.ts declares these exactly.
#include <napi.h>

#include <cstring>
#include <memory>

#include "../formats/ggml_types.h"
#include "../formats/gguf.h"
#include "../formats/safetensors.h"
#include "../formats/torch_pickle.h"
#include "formats.h"
#include "js_error.h"

namespace medllava {
namespace napi {
namespace {

std::string get_string(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!v.IsString()) throw_js(env, ErrorCode::Argument, std::string(what) + " must be a string, got " + js_type_name(v));
  return v.As<Napi::String>().Utf8Value();
}

Napi::Value shape_array(Napi::Env env, const std::vector<uint64_t>& dims) {
  Napi::Array a = Napi::Array::New(env, dims.size());
  for (size_t i = 0; i < dims.size(); ++i) a.Set((uint32_t)i, (double)dims[i]);
  return a;
}

// Copies a byte range into a fresh Uint8Array (the mapping it came from is released afterwards).
Napi::Uint8Array bytes_array(Napi::Env env, const uint8_t* p, size_t n) {
  Napi::Uint8Array a = Napi::Uint8Array::New(env, n);
  if (n) std::memcpy(a.Data(), p, n);
  return a;
}

std::vector<uint64_t> get_dims(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!v.IsArray()) throw_js(env, ErrorCode::Argument, std::string(what) + " must be an array of integers");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<uint64_t> dims;
  for (uint32_t i = 0; i < a.Length(); ++i) dims.push_back((uint64_t)get_int(env, a.Get(i), what, 0, (int64_t)1 << 53));
  return dims;
}

// The bytes of any live TypedArray, read synchronously on the JS thread (workers get copies).
const uint8_t* typed_bytes(Napi::Env env, const Napi::Value& v, size_t* n, const char* what) {
  Napi::TypedArray t = checked_typed(env, v, kAnyTypedArray, what);
  *n = t.ByteLength();
  return typed_data(t);
}

// ---- safetensors ----------------------------------------------------------------------------------
Napi::Value ReadSafetensorsHeader(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = get_string(env, info.Length() ? info[0] : env.Undefined(), "path");
  auto file = std::make_shared<std::shared_ptr<safetensors::File>>();
  return PromiseWorker::Start(
      env, [=] { *file = safetensors::File::open(path); },
      [=](Napi::Env e) {
        const safetensors::Header& h = (*file)->header();
        Napi::Object out = Napi::Object::New(e);
        Napi::Array tensors = Napi::Array::New(e, h.tensors.size());
        for (size_t i = 0; i < h.tensors.size(); ++i) {
          const auto& t = h.tensors[i];
          Napi::Object o = Napi::Object::New(e);
          o.Set("name", t.name);
          o.Set("dtype", t.dtype);
          o.Set("shape", shape_array(e, t.shape));
          o.Set("offset", (double)(h.data_start + t.begin));
          o.Set("byteLength", (double)(t.end - t.begin));
          tensors.Set((uint32_t)i, o);
        }
        Napi::Object meta = Napi::Object::New(e);
        for (const auto& m : h.metadata) meta.Set(m.first, m.second);
        out.Set("tensors", tensors);
        out.Set("metadata", meta);
        out.Set("dataStart", (double)h.data_start);
        return out;
      });
}

struct Span {
  bool found = false;
  const uint8_t* data = nullptr;
  size_t bytes = 0;
};

// Opens `path` with FileT::open on the worker pool and resolves with a copy of the bytes of the
// tensor called `name` (info[1]); `find` returns its span (found = false: E_ARGUMENT).
template <class FileT, class Find>
Napi::Value read_named_tensor(const Napi::CallbackInfo& info, Find find) {
  Napi::Env env = info.Env();
  const std::string path = get_string(env, info.Length() ? info[0] : env.Undefined(), "path");
  const std::string name = get_string(env, info.Length() > 1 ? info[1] : env.Undefined(), "name");
  auto file = std::make_shared<std::shared_ptr<FileT>>();
  auto span = std::make_shared<Span>();
  return PromiseWorker::Start(
      env,
      [=] {
        *file = FileT::open(path);
        *span = find(**file, name);
        if (!span->found) throw Error(ErrorCode::Argument, path + " has no tensor named '" + name + "'");
      },
      [=](Napi::Env e) { return bytes_array(e, span->data, span->bytes); });
}

Napi::Value ReadSafetensorsTensor(const Napi::CallbackInfo& info) {
  return read_named_tensor<safetensors::File>(info, [](const safetensors::File& f, const std::string& name) {
    for (const auto& t : f.header().tensors)
      if (t.name == name) return Span{true, f.tensor_data(t), (size_t)(t.end - t.begin)};
    return Span{};
  });
}

// writeSafetensors(path, tensors: {name, dtype, shape, data: TypedArray}[], metadata: Record<string,string>)
Napi::Value WriteSafetensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[1].IsArray() || !info[2].IsObject())
    throw_js(env, ErrorCode::Argument, "writeSafetensors(path, tensors[], metadata)");
  const std::string path = get_string(env, info[0], "path");
  auto tensors = std::make_shared<std::vector<safetensors::TensorToWrite>>();
  // the worker writes copies: JS may detach or transfer a tensor's buffer while it runs
  auto copies = std::make_shared<std::vector<std::shared_ptr<std::vector<uint8_t>>>>();
  Napi::Array arr = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    if (!arr.Get(i).IsObject()) throw_js(env, ErrorCode::Argument, "tensors[" + std::to_string(i) + "] must be an object");
    Napi::Object o = arr.Get(i).As<Napi::Object>();
    safetensors::TensorToWrite t;
    t.name = get_string(env, o.Get("name"), "tensor name");
    t.dtype = get_string(env, o.Get("dtype"), "tensor dtype");
    t.shape = get_dims(env, o.Get("shape"), "tensor shape");
    const std::string what = "tensor '" + t.name + "' data";
    const Napi::TypedArray d = checked_typed(env, o.Get("data"), kAnyTypedArray, what);
    // raw bytes (Uint8Array) or elements of the dtype's width (Float32Array for F32, Uint16Array for BF16…)
    const size_t es = safetensors::dtype_bytes(t.dtype);
    if (d.TypedArrayType() != napi_uint8_array && es != 0 && d.ElementSize() != es)
      throw_js(env, ErrorCode::Argument,
               what + " is a " + js_type_name(d) + " (" + std::to_string(d.ElementSize()) + "-byte elements) but " + t.dtype +
                   " has " + std::to_string(es) + "-byte elements; pass a Uint8Array of raw bytes or an array of that width");
    copies->push_back(copy_typed<uint8_t>(env, d, kAnyTypedArray, what));
    t.data = copies->back()->data();
    t.bytes = copies->back()->size();
    tensors->push_back(std::move(t));
  }
  auto meta = std::make_shared<std::vector<std::pair<std::string, std::string>>>();
  Napi::Object m = info[2].As<Napi::Object>();
  Napi::Array keys = m.GetPropertyNames();
  for (uint32_t i = 0; i < keys.Length(); ++i) {
    const std::string k = keys.Get(i).As<Napi::String>().Utf8Value();
    meta->emplace_back(k, get_string(env, m.Get(k), "metadata value"));
  }
  return PromiseWorker::Start(
      env, [=] { safetensors::write(path, *tensors, *meta); }, [copies](Napi::Env e) { return e.Undefined(); });
}

// ---- GGUF ----------------------------------------------------------------------------------------
const char* value_type_name(gguf::ValueType t) {
  static const char* names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
  return names[(int)t];
}

gguf::ValueType value_type_from(Napi::Env env, const std::string& s) {
  static const char* names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
  for (int i = 0; i <= 12; ++i)
    if (s == names[i]) return (gguf::ValueType)i;
  throw_js(env, ErrorCode::Argument, "unknown GGUF value type '" + s + "'");
}

Napi::Value integer(Napi::Env env, uint64_t u) {
  return u <= (1ULL << 53) ? Napi::Number::New(env, (double)u).As<Napi::Value>() : Napi::BigInt::New(env, u).As<Napi::Value>();
}
Napi::Value integer(Napi::Env env, int64_t i) {
  return (i <= (1LL << 53) && i >= -(1LL << 53)) ? Napi::Number::New(env, (double)i).As<Napi::Value>()
                                                  : Napi::BigInt::New(env, i).As<Napi::Value>();
}

Napi::Value to_js(Napi::Env env, const gguf::Value& v) {
  using T = gguf::ValueType;
  switch (v.type) {
    case T::U8: case T::U16: case T::U32: case T::U64: return integer(env, v.u);
    case T::I8: case T::I16: case T::I32: case T::I64: return integer(env, v.i);
    case T::F32: case T::F64: return Napi::Number::New(env, v.f);
    case T::BOOL: return Napi::Boolean::New(env, v.u != 0);
    case T::STRING: return Napi::String::New(env, v.s);
    case T::ARRAY: {
      const size_t n = (size_t)v.count;
      auto typed = [&](napi_typedarray_type tt, size_t es) {
        Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(env, n * es);
        if (n) std::memcpy(buf.Data(), v.raw.data(), n * es);
        napi_value result;
        if (napi_create_typedarray(env, tt, n, buf, 0, &result) != napi_ok) throw_js(env, ErrorCode::OOM, "cannot create a TypedArray");
        return Napi::Value(env, result);
      };
      switch (v.elem) {
        case T::U8: return typed(napi_uint8_array, 1);
        case T::I8: return typed(napi_int8_array, 1);
        case T::U16: return typed(napi_uint16_array, 2);
        case T::I16: return typed(napi_int16_array, 2);
        case T::U32: return typed(napi_uint32_array, 4);
        case T::I32: return typed(napi_int32_array, 4);
        case T::F32: return typed(napi_float32_array, 4);
        case T::U64: return typed(napi_biguint64_array, 8);
        case T::I64: return typed(napi_bigint64_array, 8);
        case T::F64: return typed(napi_float64_array, 8);
        case T::BOOL: {
          Napi::Array a = Napi::Array::New(env, n);
          for (size_t i = 0; i < n; ++i) a.Set((uint32_t)i, v.raw[i] != 0);
          return a;
        }
        default: {
          Napi::Array a = Napi::Array::New(env, v.items.size());
          for (size_t i = 0; i < v.items.size(); ++i) a.Set((uint32_t)i, to_js(env, v.items[i]));
          return a;
        }
      }
    }
  }
  return env.Undefined();
}

// JS {type, value, elementType?} -> gguf::Value
gguf::Value from_js(Napi::Env env, const std::string& type, const Napi::Value& value, const Napi::Value& element_type,
                    const std::string& key) {
  using T = gguf::ValueType;
  gguf::Value v;
  v.type = value_type_from(env, type);
  auto num = [&](const Napi::Value& x) -> double {
    if (x.IsBigInt()) { bool lossless; return (double)x.As<Napi::BigInt>().Int64Value(&lossless); }
    if (!x.IsNumber()) throw_js(env, ErrorCode::Argument, "metadata '" + key + "' must be a number");
    return x.As<Napi::Number>().DoubleValue();
  };
  switch (v.type) {
    case T::U64:
      if (value.IsBigInt()) { bool lossless; v.u = value.As<Napi::BigInt>().Uint64Value(&lossless); break; }
      v.u = (uint64_t)num(value);
      break;
    case T::I64:
      if (value.IsBigInt()) { bool lossless; v.i = value.As<Napi::BigInt>().Int64Value(&lossless); break; }
      v.i = (int64_t)num(value);
      break;
    case T::U8: case T::U16: case T::U32: v.u = (uint64_t)num(value); break;
    case T::I8: case T::I16: case T::I32: v.i = (int64_t)num(value); break;
    case T::F32: case T::F64: v.f = num(value); break;
    case T::BOOL: v.u = value.ToBoolean() ? 1 : 0; break;
    case T::STRING: v.s = get_string(env, value, "metadata value"); break;
    case T::ARRAY: {
      v.elem = value_type_from(env, get_string(env, element_type, "elementType"));
      if (v.elem == T::STRING || v.elem == T::ARRAY) {
        if (!value.IsArray()) throw_js(env, ErrorCode::Argument, "metadata '" + key + "' must be an array");
        Napi::Array a = value.As<Napi::Array>();
        for (uint32_t i = 0; i < a.Length(); ++i) {
          if (v.elem == T::STRING) {
            gguf::Value s;
            s.type = T::STRING;
            s.s = get_string(env, a.Get(i), "string array element");
            v.items.push_back(std::move(s));
          } else {
            Napi::Object o = a.Get(i).As<Napi::Object>();
            v.items.push_back(from_js(env, "array", o.Get("value"), o.Get("elementType"), key));
          }
        }
        v.count = v.items.size();
      } else if (v.elem == T::BOOL) {
        Napi::Array a = value.As<Napi::Array>();
        for (uint32_t i = 0; i < a.Length(); ++i) v.raw.push_back(a.Get(i).ToBoolean() ? 1 : 0);
        v.count = v.raw.size();
      } else {
        size_t n;
        const uint8_t* p = typed_bytes(env, value, &n, "numeric array metadata");
        static const size_t sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
        const size_t es = sizes[(int)v.elem];
        if (!value.IsTypedArray() || value.As<Napi::TypedArray>().ElementSize() != es)
          throw_js(env, ErrorCode::Argument, "metadata '" + key + "': a TypedArray of the element type is required");
        v.raw.assign(p, p + n);
        v.count = n / es;
      }
      break;
    }
  }
  return v;
}

Napi::Value ReadGguf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = get_string(env, info.Length() ? info[0] : env.Undefined(), "path");
  auto file = std::make_shared<std::shared_ptr<gguf::File>>();
  return PromiseWorker::Start(
      env, [=] { *file = gguf::File::open(path); },
      [=](Napi::Env e) {
        const gguf::Header& h = (*file)->header();
        Napi::Object out = Napi::Object::New(e);
        out.Set("version", h.version);
        out.Set("alignment", (double)h.alignment);
        out.Set("dataStart", (double)h.data_start);
        Napi::Array meta = Napi::Array::New(e, h.metadata.size());
        for (size_t i = 0; i < h.metadata.size(); ++i) {
          const auto& kv = h.metadata[i];
          Napi::Object o = Napi::Object::New(e);
          o.Set("key", kv.key);
          o.Set("type", value_type_name(kv.value.type));
          if (kv.value.type == gguf::ValueType::ARRAY) o.Set("elementType", value_type_name(kv.value.elem));
          o.Set("value", to_js(e, kv.value));
          meta.Set((uint32_t)i, o);
        }
        out.Set("metadata", meta);
        Napi::Array tensors = Napi::Array::New(e, h.tensors.size());
        for (size_t i = 0; i < h.tensors.size(); ++i) {
          const auto& t = h.tensors[i];
          Napi::Object o = Napi::Object::New(e);
          o.Set("name", t.name);
          o.Set("dims", shape_array(e, t.dims));
          o.Set("type", ggml::type_info(t.type)->name);
          o.Set("typeId", t.type);
          o.Set("offset", (double)t.offset);
          o.Set("byteLength", (double)t.bytes);
          tensors.Set((uint32_t)i, o);
        }
        out.Set("tensors", tensors);
        return out;
      });
}

// readGgufTensor(path, name, dequantize: boolean) -> Float32Array (dequantized) | Uint8Array (raw)
Napi::Value ReadGgufTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = get_string(env, info.Length() ? info[0] : env.Undefined(), "path");
  const std::string name = get_string(env, info.Length() > 1 ? info[1] : env.Undefined(), "name");
  const bool deq = info.Length() > 2 && info[2].ToBoolean();
  auto file = std::make_shared<std::shared_ptr<gguf::File>>();
  auto found = std::make_shared<const gguf::TensorInfo*>(nullptr);
  auto values = std::make_shared<std::vector<float>>();
  return PromiseWorker::Start(
      env,
      [=] {
        *file = gguf::File::open(path);
        for (const auto& t : (*file)->header().tensors)
          if (t.name == name) *found = &t;
        if (!*found) throw Error(ErrorCode::Argument, path + " has no tensor named '" + name + "'");
        if (deq) {
          values->resize((size_t)(*found)->elements);
          ggml::dequantize((*found)->type, (*file)->tensor_data(**found), values->data(), (int64_t)(*found)->elements);
        }
      },
      [=](Napi::Env e) -> Napi::Value {
        if (!deq) return bytes_array(e, (*file)->tensor_data(**found), (size_t)(*found)->bytes);
        Napi::Float32Array a = Napi::Float32Array::New(e, values->size());
        if (!values->empty()) std::memcpy(a.Data(), values->data(), values->size() * 4);
        return a;
      });
}

uint32_t ggml_type_from(Napi::Env env, const Napi::Value& v) {
  const std::string s = get_string(env, v, "GGML type");
  for (uint32_t t = 0; t < 64; ++t)
    if (const ggml::TypeInfo* i = ggml::type_info(t))
      if (s == i->name) return t;
  throw_js(env, ErrorCode::Argument, "unknown GGML type '" + s + "'");
}

// writeGguf(path, metadata: {key, type, value, elementType?}[], tensors: {name, dims, type, data}[], alignment)
// data: Float32Array (quantized to `type` here) or Uint8Array (already in `type`'s layout)
Napi::Value WriteGguf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[1].IsArray() || !info[2].IsArray())
    throw_js(env, ErrorCode::Argument, "writeGguf(path, metadata[], tensors[], alignment)");
  const std::string path = get_string(env, info[0], "path");
  auto meta = std::make_shared<std::vector<gguf::KeyValue>>();
  Napi::Array ma = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < ma.Length(); ++i) {
    Napi::Object o = ma.Get(i).As<Napi::Object>();
    gguf::KeyValue kv;
    kv.key = get_string(env, o.Get("key"), "metadata key");
    kv.value = from_js(env, get_string(env, o.Get("type"), "metadata type"), o.Get("value"), o.Get("elementType"), kv.key);
    meta->push_back(std::move(kv));
  }
  struct Pending {
    gguf::TensorToWrite t;
    const float* f32 = nullptr;  // to quantize in the worker
    size_t n = 0;
    std::vector<uint8_t> quantized;
  };
  auto tensors = std::make_shared<std::vector<Pending>>();
  // the worker writes copies: JS may detach or transfer a tensor's buffer while it runs
  auto copies = std::make_shared<std::vector<std::shared_ptr<std::vector<uint8_t>>>>();
  Napi::Array ta = info[2].As<Napi::Array>();
  for (uint32_t i = 0; i < ta.Length(); ++i) {
    Napi::Object o = ta.Get(i).As<Napi::Object>();
    Pending p;
    p.t.name = get_string(env, o.Get("name"), "tensor name");
    p.t.dims = get_dims(env, o.Get("dims"), "tensor dims");
    p.t.type = ggml_type_from(env, o.Get("type"));
    Napi::Value d = o.Get("data");
    const std::string what = "tensor '" + p.t.name + "' data";
    const Napi::TypedArray da = checked_typed(env, d, kAnyTypedArray, what);
    if (da.TypedArrayType() != napi_float32_array && da.TypedArrayType() != napi_uint8_array)
      throw_js(env, ErrorCode::Argument, what + " must be a Float32Array (values) or a Uint8Array (bytes in the type's layout), got " +
                                             js_type_name(d));
    copies->push_back(copy_typed<uint8_t>(env, d, kAnyTypedArray, what));
    const uint8_t* bytes = copies->back()->data();
    const size_t n = copies->back()->size();
    if (da.TypedArrayType() == napi_float32_array && p.t.type != ggml::F32) {
      if (!ggml::can_quantize(p.t.type))
        throw_js(env, ErrorCode::Unsupported, std::string("cannot quantize to ") + ggml::type_info(p.t.type)->name);
      p.f32 = reinterpret_cast<const float*>(bytes);
      p.n = n / 4;
    } else {
      p.t.data = bytes;
      p.t.bytes = n;
    }
    tensors->push_back(std::move(p));
  }
  const uint64_t alignment = (uint64_t)get_int(env, info[3], "alignment", 1, 1 << 20);
  return PromiseWorker::Start(
      env,
      [=] {
        std::vector<gguf::TensorToWrite> out;
        for (Pending& p : *tensors) {
          if (p.f32) {
            const ggml::TypeInfo* ti = ggml::type_info(p.t.type);
            if (p.n % ti->block_elems) throw Error(ErrorCode::Shape, "tensor '" + p.t.name + "' does not fill whole blocks");
            p.quantized.resize(p.n / ti->block_elems * ti->block_bytes);
            ggml::quantize(p.t.type, p.f32, p.quantized.data(), (int64_t)p.n);
            p.t.data = p.quantized.data();
            p.t.bytes = p.quantized.size();
          }
          out.push_back(p.t);
        }
        gguf::write(path, *meta, out, alignment);
      },
      [copies](Napi::Env e) { return e.Undefined(); });
}

// ggmlQuantize(type, Float32Array) -> Uint8Array ; ggmlDequantize(type, Uint8Array, n) -> Float32Array
Napi::Value GgmlQuantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint32_t t = ggml_type_from(env, info.Length() ? info[0] : env.Undefined());
  Napi::Float32Array x =
      checked_typed(env, info.Length() > 1 ? info[1] : env.Undefined(), napi_float32_array, "ggmlQuantize(type, values): values")
          .As<Napi::Float32Array>();
  const ggml::TypeInfo* ti = ggml::type_info(t);
  if (x.ElementLength() % ti->block_elems) throw_js(env, ErrorCode::Shape, "length is not a multiple of the block size");
  Napi::Uint8Array out = Napi::Uint8Array::New(env, x.ElementLength() / ti->block_elems * ti->block_bytes);
  ggml::quantize(t, x.Data(), out.Data(), (int64_t)x.ElementLength());
  return out;
}

Napi::Value GgmlDequantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint32_t t = ggml_type_from(env, info.Length() ? info[0] : env.Undefined());
  size_t n_bytes;
  const Napi::TypedArray da = checked_typed(env, info.Length() > 1 ? info[1] : env.Undefined(), napi_uint8_array, "ggmlDequantize(type, data): data");
  n_bytes = da.ByteLength();
  const uint8_t* p = typed_data(da);
  const int64_t n = get_int(env, info.Length() > 2 ? info[2] : env.Undefined(), "n", 0, (int64_t)1 << 40);
  const ggml::TypeInfo* ti = ggml::type_info(t);
  if (n % ti->block_elems || (uint64_t)(n / ti->block_elems) * ti->block_bytes != n_bytes)
    throw_js(env, ErrorCode::Shape, "data does not hold exactly n elements of the type");
  Napi::Float32Array out = Napi::Float32Array::New(env, (size_t)n);
  ggml::dequantize(t, p, out.Data(), n);
  return out;
}

// ---- PyTorch zip checkpoints (restricted unpickler) -------------------------------------------------
Napi::Value ReadTorchCheckpoint(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = get_string(env, info.Length() ? info[0] : env.Undefined(), "path");
  auto file = std::make_shared<std::shared_ptr<torchfile::File>>();
  return PromiseWorker::Start(
      env, [=] { *file = torchfile::File::open(path); },
      [=](Napi::Env e) {
        const auto& ts = (*file)->tensors();
        Napi::Array tensors = Napi::Array::New(e, ts.size());
        for (size_t i = 0; i < ts.size(); ++i) {
          Napi::Object o = Napi::Object::New(e);
          o.Set("name", ts[i].name);
          o.Set("dtype", ts[i].dtype);
          o.Set("shape", shape_array(e, ts[i].shape));
          o.Set("offset", (double)ts[i].file_offset);
          o.Set("byteLength", (double)ts[i].bytes);
          tensors.Set((uint32_t)i, o);
        }
        Napi::Object out = Napi::Object::New(e);
        out.Set("tensors", tensors);
        return out;
      });
}

Napi::Value ReadTorchTensor(const Napi::CallbackInfo& info) {
  return read_named_tensor<torchfile::File>(info, [](const torchfile::File& f, const std::string& name) {
    for (const auto& t : f.tensors())
      if (t.name == name) return Span{true, f.data(t), (size_t)t.bytes};
    return Span{};
  });
}

}  // namespace

void register_formats(Napi::Env env, Napi::Object exports) {
  exports.Set("readSafetensorsHeader", Napi::Function::New<guarded<ReadSafetensorsHeader>>(env, "readSafetensorsHeader"));
  exports.Set("readSafetensorsTensor", Napi::Function::New<guarded<ReadSafetensorsTensor>>(env, "readSafetensorsTensor"));
  exports.Set("writeSafetensors", Napi::Function::New<guarded<WriteSafetensors>>(env, "writeSafetensors"));
  exports.Set("readGguf", Napi::Function::New<guarded<ReadGguf>>(env, "readGguf"));
  exports.Set("readGgufTensor", Napi::Function::New<guarded<ReadGgufTensor>>(env, "readGgufTensor"));
  exports.Set("writeGguf", Napi::Function::New<guarded<WriteGguf>>(env, "writeGguf"));
  exports.Set("readTorchCheckpoint", Napi::Function::New<guarded<ReadTorchCheckpoint>>(env, "readTorchCheckpoint"));
  exports.Set("readTorchTensor", Napi::Function::New<guarded<ReadTorchTensor>>(env, "readTorchTensor"));
  exports.Set("ggmlQuantize", Napi::Function::New<guarded<GgmlQuantize>>(env, "ggmlQuantize"));
  exports.Set("ggmlDequantize", Napi::Function::New<guarded<GgmlDequantize>>(env, "ggmlDequantize"));
}

}  // namespace napi
}  // namespace medllava
