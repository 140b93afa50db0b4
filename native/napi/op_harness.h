// The test harness's JS side: cpuOp(name, args) / cudaOp(name, args) arguments → an OpCall
// (native/ops/op_exec.h), checked once for every backend, with its outputs as fresh JS arrays
// poisoned with NaN (an element no thread writes shows). An op registers here once and is then
// tested on the CPU, under the SIMT emulator and on a real device alike. Header-only: the product
// addon and the test addon both include it. defines: JsOp, parse_op, op_list, run_in_place.
#pragma once
#include <napi.h>

#include <cmath>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "../ops/op_exec.h"
#include "../ops/op_list.h"
#include "js_error.h"
#include "ops_args.h"

namespace medllava {
namespace napi {

struct JsOp {
  OpCall call;
  Napi::Value result;  // what the call returns to JS once run (its output arrays)
};

namespace harness {
constexpr int64_t kMax = 1LL << 28;

inline Napi::Float32Array poisoned_f32(Napi::Env env, int64_t n) {
  Napi::Float32Array a = Napi::Float32Array::New(env, (size_t)n);
  std::fill(a.Data(), a.Data() + n, NAN);
  return a;
}
template <class T>
OpBuf in(const Napi::Object& o, const char* key, napi_typedarray_type type, int64_t n, bool nullable = false) {
  T* p = arg_array<T>(o, key, type, n, nullable);
  OpBuf b;
  b.host = p;
  b.bytes = p ? (size_t)n * sizeof(T) : 0;
  return b;
}
inline OpBuf out(Napi::TypedArray a, bool read = false) {
  OpBuf b;
  b.host = static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
  b.bytes = a.ByteLength();
  b.in = read;
  b.out = true;
  return b;
}
// a fresh f32 array holding a copy of args[key] (n elements): an in/out buffer
inline Napi::Float32Array copy_f32(const Napi::Object& o, const char* key, int64_t n) {
  const float* src = arg_array<float>(o, key, napi_float32_array, n);
  Napi::Float32Array a = Napi::Float32Array::New(o.Env(), (size_t)n);
  if (n) std::memcpy(a.Data(), src, (size_t)n * 4);
  return a;
}
// an absent optional buffer (the op gets null)
inline OpBuf absent() { return OpBuf{nullptr, 0, false, false}; }
// a result of several arrays: { name: array, … }
inline Napi::Object named(Napi::Env env, std::initializer_list<std::pair<const char*, Napi::Value>> fields) {
  Napi::Object r = Napi::Object::New(env);
  for (const auto& f : fields) r.Set(f.first, f.second);
  return r;
}
inline Activation activation_arg(const Napi::Object& o, const char* key) {
  const std::string act = arg_string(o, key);
  if (act == "gelu") return Activation::Gelu;
  if (act == "quick_gelu") return Activation::QuickGelu;
  if (act == "none") return Activation::None;
  throw_js(o.Env(), ErrorCode::Argument, std::string(key) + " must be 'gelu', 'quick_gelu' or 'none'");
}
// a stored tensor of `n` elements of type t: Float32Array (f32), Uint16Array (f16, bf16) or Uint8Array (blocks)
inline OpBuf typed_in(const Napi::Object& o, const char* key, DType t, int64_t n) {
  const Napi::Value v = o.Get(key);
  if (!v.IsTypedArray()) throw_js(o.Env(), ErrorCode::Argument, std::string(key) + " must be a TypedArray");
  Napi::TypedArray a = v.As<Napi::TypedArray>();
  const napi_typedarray_type want = t == DType::F32 ? napi_float32_array : dtype_is_block(t) ? napi_uint8_array : napi_uint16_array;
  if (a.TypedArrayType() != want) throw_js(o.Env(), ErrorCode::Argument, std::string(key) + " has the wrong element type for " + dtype_name(t));
  if (a.ByteLength() != dtype_bytes(t, n))
    throw_js(o.Env(), ErrorCode::Shape, std::string(key) + " holds " + std::to_string(a.ByteLength()) + " bytes, expected " +
                                             std::to_string(dtype_bytes(t, n)) + " (" + std::to_string(n) + " " + dtype_name(t) + ")");
  OpBuf b;
  b.host = static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
  b.bytes = a.ByteLength();
  return b;
}
}  // namespace harness

// args → the call and its result arrays; E_ARGUMENT / E_SHAPE for anything that does not fit
inline JsOp parse_op(Napi::Env env, const std::string& name, const Napi::Object& o) {
  using namespace harness;
  JsOp j;
  OpCall& c = j.call;
#define MEDLLAVA_OP_NAME(method, js, stem) \
  if (name == js) c.op = OpId::method;
  MEDLLAVA_OP_LIST(MEDLLAVA_OP_NAME)
#undef MEDLLAVA_OP_NAME
  int64_t* i = c.i;
  switch (c.op) {
    case OpId::matmul: {
      const int64_t M = arg_int(o, "M", 0, kMax), N = arg_int(o, "N", 1, kMax), K = arg_int(o, "K", 1, kMax);
      c.type = parse_dtype(arg_string(o, "wType"));
      if (dtype_is_block(c.type) && K % dtype_block_elems(c.type)) throw_js(env, ErrorCode::Shape, "matmul: w's rows must be whole blocks");
      c.code = (int)activation_arg(o, "act");
      i[0] = M, i[1] = N, i[2] = K;
      Napi::Float32Array r = poisoned_f32(env, M * N);
      c.bufs = {in<float>(o, "a", napi_float32_array, M * K), typed_in(o, "w", c.type, N * K), in<float>(o, "bias", napi_float32_array, N, true),
                out(r)};
      j.result = r;
      break;
    }
    case OpId::gemm: {
      const int64_t M = arg_int(o, "M", 0, kMax), N = arg_int(o, "N", 0, kMax), K = arg_int(o, "K", 0, kMax);
      c.flag[0] = o.Get("transA").ToBoolean(), c.flag[1] = o.Get("transB").ToBoolean();
      const int64_t lda = o.Has("lda") ? arg_int(o, "lda", 0, kMax) : (c.flag[0] ? M : K);
      const int64_t ldb = o.Has("ldb") ? arg_int(o, "ldb", 0, kMax) : (c.flag[1] ? K : N);
      const int64_t ldc = o.Has("ldc") ? arg_int(o, "ldc", 0, kMax) : N;
      c.type = o.Has("bType") ? parse_dtype(arg_string(o, "bType")) : DType::F32;
      c.f[0] = o.Has("alpha") ? arg_number(o, "alpha") : 1.0, c.f[1] = o.Has("beta") ? arg_number(o, "beta") : 0.0;
      i[0] = M, i[1] = N, i[2] = K, i[3] = lda, i[4] = ldb, i[5] = ldc;
      // stored extents: the last row need not run to the leading dimension
      const int64_t a_rows = c.flag[0] ? K : M, a_cols = c.flag[0] ? M : K, b_rows = c.flag[1] ? N : K, b_cols = c.flag[1] ? K : N;
      const int64_t a_n = a_rows ? (a_rows - 1) * lda + a_cols : 0, b_n = b_rows ? (b_rows - 1) * ldb + b_cols : 0;
      const int64_t c_n = M ? (M - 1) * ldc + N : 0;
      if (lda < a_cols || ldb < b_cols || ldc < N) throw_js(env, ErrorCode::Shape, "gemm: a leading dimension is shorter than its row");
      if (dtype_is_block(c.type) && (b_cols % dtype_block_elems(c.type) || ldb % dtype_block_elems(c.type)))
        throw_js(env, ErrorCode::Shape, "gemm: b's rows must be whole blocks");
      if (c.f[1] != 0.0 && !o.Get("c").IsTypedArray()) throw_js(env, ErrorCode::Argument, "gemm: beta ≠ 0 needs c");
      // c as given (the elements between rows, past N, must come back untouched), else poisoned
      Napi::Float32Array r = o.Get("c").IsTypedArray() ? copy_f32(o, "c", c_n) : poisoned_f32(env, c_n);
      c.bufs = {in<float>(o, "a", napi_float32_array, a_n), typed_in(o, "b", c.type, b_n), out(r, true)};
      j.result = r;
      break;
    }
    case OpId::rmsnorm:
    case OpId::layernorm: {
      const int64_t T = arg_int(o, "T", 0, kMax), D = arg_int(o, "D", 1, kMax);
      i[0] = T, i[1] = D;
      c.f[0] = arg_number(o, "eps");
      Napi::Float32Array r = poisoned_f32(env, T * D);
      c.bufs = {in<float>(o, "x", napi_float32_array, T * D), in<float>(o, "w", napi_float32_array, D)};
      if (c.op == OpId::layernorm) c.bufs.push_back(in<float>(o, "b", napi_float32_array, D));
      c.bufs.push_back(out(r));
      j.result = r;
      if (o.Get("stats").ToBoolean()) {  // the per-row statistics too: { out, rstd } (layernorm: + mean)
        Napi::Float32Array rstd = poisoned_f32(env, T), mean = poisoned_f32(env, T);
        if (c.op == OpId::layernorm) c.bufs.push_back(out(mean));
        c.bufs.push_back(out(rstd));
        j.result = c.op == OpId::layernorm ? named(env, {{"out", r}, {"mean", mean}, {"rstd", rstd}}) : named(env, {{"out", r}, {"rstd", rstd}});
      } else {
        c.bufs.push_back(absent());
        if (c.op == OpId::layernorm) c.bufs.push_back(absent());
      }
      break;
    }
    case OpId::rmsnorm_backward: {  // { dy, x, w, rstd, dx, dw? } → { dx, dw } (accumulated into copies of dx, dw)
      const int64_t T = arg_int(o, "T", 0, kMax), D = arg_int(o, "D", 1, kMax);
      i[0] = T, i[1] = D;
      Napi::Float32Array dx = copy_f32(o, "dx", T * D);
      const bool has_dw = o.Get("dw").IsTypedArray();
      Napi::Float32Array dw = has_dw ? copy_f32(o, "dw", D) : Napi::Float32Array::New(env, 0);
      c.bufs = {in<float>(o, "dy", napi_float32_array, T * D), in<float>(o, "x", napi_float32_array, T * D), in<float>(o, "w", napi_float32_array, D),
                in<float>(o, "rstd", napi_float32_array, T), out(dx, true), has_dw ? out(dw, true) : absent()};
      j.result = named(env, {{"dx", dx}, {"dw", dw}});
      break;
    }
    case OpId::silu_mul_backward: {  // { dout, gate, up, dgate, dup } → { dgate, dup } (accumulated)
      const int64_t n = arg_int(o, "n", 0, kMax);
      i[0] = n;
      Napi::Float32Array dg = copy_f32(o, "dgate", n), du = copy_f32(o, "dup", n);
      c.bufs = {in<float>(o, "dout", napi_float32_array, n), in<float>(o, "gate", napi_float32_array, n), in<float>(o, "up", napi_float32_array, n),
                out(dg, true), out(du, true)};
      j.result = named(env, {{"dgate", dg}, {"dup", du}});
      break;
    }
    case OpId::layernorm_backward: {  // { dy, x, w, mean, rstd, dx, dw?, db? } → { dx, dw, db } (accumulated)
      const int64_t T = arg_int(o, "T", 0, kMax), D = arg_int(o, "D", 1, kMax);
      i[0] = T, i[1] = D;
      Napi::Float32Array dx = copy_f32(o, "dx", T * D);
      const bool has_dw = o.Get("dw").IsTypedArray(), has_db = o.Get("db").IsTypedArray();
      Napi::Float32Array dw = has_dw ? copy_f32(o, "dw", D) : Napi::Float32Array::New(env, 0);
      Napi::Float32Array db = has_db ? copy_f32(o, "db", D) : Napi::Float32Array::New(env, 0);
      c.bufs = {in<float>(o, "dy", napi_float32_array, T * D), in<float>(o, "x", napi_float32_array, T * D), in<float>(o, "w", napi_float32_array, D),
                in<float>(o, "mean", napi_float32_array, T), in<float>(o, "rstd", napi_float32_array, T), out(dx, true),
                has_dw ? out(dw, true) : absent(), has_db ? out(db, true) : absent()};
      j.result = named(env, {{"dx", dx}, {"dw", dw}, {"db", db}});
      break;
    }
    case OpId::rope:
    case OpId::rope_backward: {
      const int64_t T = arg_int(o, "T", 0, kMax), H = arg_int(o, "heads", 1, kMax), hd = arg_int(o, "hd", 2, 4096);
      if (hd % 2) throw_js(env, ErrorCode::Shape, "rope: hd must be even");
      const std::string mode = arg_string(o, "mode");
      if (mode != "half" && mode != "adjacent") throw_js(env, ErrorCode::Argument, "mode must be 'half' or 'adjacent'");
      i[0] = T, i[1] = H, i[2] = hd, i[3] = arg_int(o, "pos0", 0, kMax);
      c.f[0] = arg_number(o, "theta");
      c.code = (int)(mode == "half" ? RopeMode::Half : RopeMode::Adjacent);
      Napi::Float32Array r = copy_f32(o, "x", T * H * hd);
      c.bufs = {out(r, true)};
      j.result = r;
      break;
    }
    case OpId::silu_mul: {
      const int64_t n = arg_int(o, "n", 0, kMax);
      i[0] = n;
      Napi::Float32Array r = poisoned_f32(env, n);
      c.bufs = {in<float>(o, "gate", napi_float32_array, n), in<float>(o, "up", napi_float32_array, n), out(r)};
      j.result = r;
      break;
    }
    case OpId::activation_backward: {  // { dout, x, dx, act } → dx (accumulated)
      const int64_t n = arg_int(o, "n", 0, kMax);
      i[0] = n;
      c.code = (int)activation_arg(o, "act");
      Napi::Float32Array dx = copy_f32(o, "dx", n);
      c.bufs = {in<float>(o, "dout", napi_float32_array, n), in<float>(o, "x", napi_float32_array, n), out(dx, true)};
      j.result = dx;
      break;
    }
    case OpId::attention_backward: {  // { q, k, v, out, lse, dout, dq, dk, dv, causal } → { dq, dk, dv } (accumulated)
      const int64_t T = arg_int(o, "T", 1, kMax), H = arg_int(o, "H", 1, 4096), KVH = arg_int(o, "KVH", 1, 4096), hd = arg_int(o, "hd", 1, 4096);
      if (H % KVH) throw_js(env, ErrorCode::Argument, "H must be a multiple of KVH");
      i[0] = T, i[1] = H, i[2] = KVH, i[3] = hd;
      c.flag[0] = o.Get("causal").ToBoolean();
      if (!c.flag[0] && KVH != H) throw_js(env, ErrorCode::Argument, "full attention has as many KV heads as heads");
      const int64_t nq = T * H * hd, nk = T * KVH * hd;
      Napi::Float32Array dq = copy_f32(o, "dq", nq), dk = copy_f32(o, "dk", nk), dv = copy_f32(o, "dv", nk);
      c.bufs = {in<float>(o, "q", napi_float32_array, nq), in<float>(o, "k", napi_float32_array, nk), in<float>(o, "v", napi_float32_array, nk),
                in<float>(o, "out", napi_float32_array, nq), in<float>(o, "lse", napi_float32_array, H * T),
                in<float>(o, "dout", napi_float32_array, nq), out(dq, true), out(dk, true), out(dv, true)};
      j.result = named(env, {{"dq", dq}, {"dk", dk}, {"dv", dv}});
      break;
    }
    case OpId::residual_backward: {  // { dh, a, gamma?, scale?, da, dgamma? } → { da, dgamma } (accumulated)
      const int64_t n = arg_int(o, "n", 0, kMax), D = arg_int(o, "D", 1, kMax);
      if (n % D) throw_js(env, ErrorCode::Shape, "residualBackward: n must be a multiple of D");
      i[0] = n, i[1] = D;
      c.f[0] = arg_scale(o);
      Napi::Float32Array da = copy_f32(o, "da", n);
      const bool has_dg = o.Get("dgamma").IsTypedArray();
      if (has_dg && !o.Get("gamma").IsTypedArray()) throw_js(env, ErrorCode::Argument, "residualBackward: dgamma needs gamma");
      Napi::Float32Array dg = has_dg ? copy_f32(o, "dgamma", D) : Napi::Float32Array::New(env, 0);
      c.bufs = {in<float>(o, "dh", napi_float32_array, n), in<float>(o, "a", napi_float32_array, n), in<float>(o, "gamma", napi_float32_array, D, true),
                out(da, true), has_dg ? out(dg, true) : absent()};
      j.result = named(env, {{"da", da}, {"dgamma", dg}});
      break;
    }
    case OpId::bias_backward: {  // { dy, db, M, N } → db (accumulated)
      const int64_t M = arg_int(o, "M", 0, kMax), N = arg_int(o, "N", 1, kMax);
      i[0] = M, i[1] = N;
      Napi::Float32Array db = copy_f32(o, "db", N);
      c.bufs = {in<float>(o, "dy", napi_float32_array, M * N), out(db, true)};
      j.result = db;
      break;
    }
    case OpId::dropout: {  // { x, n, p, seed } → out
      const int64_t n = arg_int(o, "n", 0, kMax);
      i[0] = n, i[1] = arg_int(o, "seed", 0, 1LL << 53);
      c.f[0] = arg_number(o, "p");
      if (!(c.f[0] >= 0 && c.f[0] < 1)) throw_js(env, ErrorCode::Argument, "dropout: p must be in [0, 1)");
      Napi::Float32Array r = poisoned_f32(env, n);
      c.bufs = {in<float>(o, "x", napi_float32_array, n), out(r)};
      j.result = r;
      break;
    }
    case OpId::embed_backward: {  // { dout, ids, dtable, T, D, vocab } → dtable (accumulated)
      const int64_t T = arg_int(o, "T", 0, kMax), D = arg_int(o, "D", 1, kMax), V = arg_int(o, "vocab", 1, kMax);
      i[0] = T, i[1] = D;
      const int32_t* ids = arg_array<int32_t>(o, "ids", napi_int32_array, T);
      for (int64_t t = 0; t < T; ++t)
        if (ids[t] >= V) throw_js(env, ErrorCode::Argument, "embedBackward: an id is outside the vocabulary");
      Napi::Float32Array dt = copy_f32(o, "dtable", V * D);
      OpBuf idb;
      idb.host = const_cast<int32_t*>(ids);
      idb.bytes = (size_t)T * 4;
      c.bufs = {in<float>(o, "dout", napi_float32_array, T * D), idb, out(dt, true)};
      j.result = dt;
      break;
    }
    case OpId::cross_entropy: {  // { logits, targets, weights?, scale?, N, V } → { dlogits, loss }
      const int64_t N = arg_int(o, "N", 0, kMax), V = arg_int(o, "V", 1, kMax);
      i[0] = N, i[1] = V;
      c.f[0] = o.Has("scale") ? arg_number(o, "scale") : 1.0;
      const int32_t* tg = arg_array<int32_t>(o, "targets", napi_int32_array, N);
      Napi::Float32Array lg = copy_f32(o, "logits", N * V), loss = poisoned_f32(env, N);
      OpBuf tb;
      tb.host = const_cast<int32_t*>(tg);
      tb.bytes = (size_t)N * 4;
      c.bufs = {out(lg, true), tb, in<float>(o, "weights", napi_float32_array, N, true), out(loss)};
      j.result = named(env, {{"dlogits", lg}, {"loss", loss}});
      break;
    }
    case OpId::adamw: {  // { p, grad, m, v, n, step, lr, beta1, beta2, eps, weightDecay, gradScale? } → { p, m, v }
      const int64_t n = arg_int(o, "n", 0, kMax);
      i[0] = n, i[1] = arg_int(o, "step", 1, kMax);
      c.f[0] = arg_number(o, "lr"), c.f[1] = arg_number(o, "beta1"), c.f[2] = arg_number(o, "beta2"), c.f[3] = arg_number(o, "eps");
      c.f[4] = arg_number(o, "weightDecay"), c.f[5] = o.Has("gradScale") ? arg_number(o, "gradScale") : 1.0;
      Napi::Float32Array p = copy_f32(o, "p", n), m = copy_f32(o, "m", n), v = copy_f32(o, "v", n);
      c.bufs = {out(p, true), in<float>(o, "grad", napi_float32_array, n), out(m, true), out(v, true)};
      j.result = named(env, {{"p", p}, {"m", m}, {"v", v}});
      break;
    }
    case OpId::sum_squares: {  // { x, n } → Float64Array [Σ x²]
      const int64_t n = arg_int(o, "n", 0, kMax);
      i[0] = n;
      Napi::Float64Array r = Napi::Float64Array::New(env, 1);
      r[0] = NAN;
      OpBuf ob;
      ob.host = r.Data();
      ob.bytes = 8;
      ob.in = false;
      c.bufs = {in<float>(o, "x", napi_float32_array, n), ob};
      j.result = r;
      break;
    }
    case OpId::activation: {
      const int64_t n = arg_int(o, "n", 0, kMax);
      i[0] = n;
      c.code = (int)activation_arg(o, "act");
      Napi::Float32Array r = poisoned_f32(env, n);
      c.bufs = {in<float>(o, "x", napi_float32_array, n), out(r)};
      j.result = r;
      break;
    }
    case OpId::attention_cached: {
      const int64_t T = arg_int(o, "T", 1, kMax), np = arg_int(o, "nPast", 0, kMax), H = arg_int(o, "H", 1, 4096),
                    KVH = arg_int(o, "KVH", 1, 4096), hd = arg_int(o, "hd", 1, 4096);
      if (H % KVH) throw_js(env, ErrorCode::Argument, "H must be a multiple of KVH");
      i[0] = T, i[1] = np, i[2] = H, i[3] = KVH, i[4] = hd;
      const int64_t n_kv = np + T;
      Napi::Float32Array r = poisoned_f32(env, T * H * hd);
      c.bufs = {in<float>(o, "q", napi_float32_array, T * H * hd), in<uint16_t>(o, "kCache", napi_uint16_array, n_kv * KVH * hd),
                in<uint16_t>(o, "vCache", napi_uint16_array, n_kv * KVH * hd), out(r)};
      j.result = r;
      break;
    }
    case OpId::attention_full: {
      const int64_t T = arg_int(o, "T", 1, kMax), H = arg_int(o, "H", 1, 4096), hd = arg_int(o, "hd", 1, 4096);
      i[0] = T, i[1] = H, i[2] = hd;
      const int64_t n = T * H * hd;
      Napi::Float32Array r = poisoned_f32(env, n);
      c.bufs = {in<float>(o, "q", napi_float32_array, n), in<float>(o, "k", napi_float32_array, n), in<float>(o, "v", napi_float32_array, n),
                out(r)};
      j.result = r;
      if (o.Get("stats").ToBoolean()) {  // each row's log-sum-exp too: { out, lse }
        Napi::Float32Array lse = poisoned_f32(env, H * T);
        c.bufs.push_back(out(lse));
        j.result = named(env, {{"out", r}, {"lse", lse}});
      } else {
        c.bufs.push_back(absent());
      }
      break;
    }
    case OpId::attention_causal: {
      const int64_t T = arg_int(o, "T", 1, kMax), H = arg_int(o, "H", 1, 4096), KVH = arg_int(o, "KVH", 1, 4096), hd = arg_int(o, "hd", 1, 4096);
      if (H % KVH) throw_js(env, ErrorCode::Argument, "H must be a multiple of KVH");
      i[0] = T, i[1] = H, i[2] = KVH, i[3] = hd;
      Napi::Float32Array r = poisoned_f32(env, T * H * hd), lse = poisoned_f32(env, H * T);
      c.bufs = {in<float>(o, "q", napi_float32_array, T * H * hd), in<float>(o, "k", napi_float32_array, T * KVH * hd),
                in<float>(o, "v", napi_float32_array, T * KVH * hd), out(r), out(lse)};
      j.result = named(env, {{"out", r}, {"lse", lse}});
      break;
    }
    case OpId::residual: {
      const int64_t n = arg_int(o, "n", 0, kMax), D = arg_int(o, "D", 1, kMax);
      if (n % D) throw_js(env, ErrorCode::Shape, "residual: n must be a multiple of D");
      i[0] = n, i[1] = D;
      c.f[0] = arg_scale(o);
      Napi::Float32Array r = copy_f32(o, "h", n);
      c.bufs = {out(r, true), in<float>(o, "a", napi_float32_array, n), in<float>(o, "gamma", napi_float32_array, D, true)};
      j.result = r;
      break;
    }
    case OpId::embed: {
      const EmbedArgs e = embed_args(o);
      i[0] = e.T, i[1] = e.D;
      c.type = e.type;
      const int64_t V = arg_int(o, "vocab", 1, kMax);
      Napi::Float32Array r = poisoned_f32(env, e.T * e.D);
      OpBuf table;
      table.host = const_cast<uint8_t*>(e.table);
      table.bytes = dtype_bytes(e.type, V * e.D);
      OpBuf ids;
      ids.host = const_cast<int32_t*>(e.ids);
      ids.bytes = (size_t)e.T * 4;
      c.bufs = {table, ids, out(r)};
      j.result = r;
      break;
    }
    case OpId::kv_append: {
      const int64_t T = arg_int(o, "T", 0, kMax), width = arg_int(o, "width", 1, kMax), pos = arg_int(o, "pos", 0, kMax);
      const Napi::Value cv = o.Get("cache");
      arg_array<uint16_t>(o, "cache", napi_uint16_array, -1);
      const Napi::TypedArray ct = cv.As<Napi::TypedArray>();
      if ((int64_t)ct.ElementLength() % width) throw_js(env, ErrorCode::Shape, "kvAppend: the cache is not whole rows of width");
      const int64_t rows = (int64_t)ct.ElementLength() / width;
      if (pos + T > rows) throw_js(env, ErrorCode::Shape, "kvAppend: the cache has too few rows");
      i[0] = pos, i[1] = T, i[2] = width;
      Napi::Uint16Array r = Napi::Uint16Array::New(env, (size_t)(rows * width));
      std::memcpy(r.Data(), typed_data(ct), (size_t)(rows * width) * 2);
      c.bufs = {in<float>(o, "src", napi_float32_array, T * width), out(r, true)};
      j.result = r;
      break;
    }
    case OpId::topk: {
      const int64_t n = arg_int(o, "n", 1, kMax), k = arg_int(o, "k", 1, n < 1024 ? n : 1024);
      i[0] = n, i[1] = k;
      Napi::Int32Array idx = Napi::Int32Array::New(env, (size_t)k);
      std::fill(idx.Data(), idx.Data() + k, -7);
      Napi::Float32Array val = poisoned_f32(env, k);
      c.bufs = {in<float>(o, "x", napi_float32_array, n), out(idx), out(val)};
      j.result = named(env, {{"idx", idx}, {"val", val}});
      break;
    }
    case OpId::count: throw_js(env, ErrorCode::Argument, "no op named '" + name + "' (opList() lists them)");
  }
  return j;
}

// opList() -> [{ name, method, stem, cpu, cuda }]: the op table, with each op's two source files
inline Napi::Value op_list(Napi::Env env) {
  Napi::Array a = Napi::Array::New(env);
  uint32_t k = 0;
#define MEDLLAVA_OP_ENTRY(method, js, stem)                          \
  {                                                                  \
    Napi::Object e = Napi::Object::New(env);                         \
    e.Set("name", js);                                               \
    e.Set("method", #method);                                        \
    e.Set("stem", stem);                                             \
    e.Set("cpu", std::string("native/cpu/") + stem + ".cc");        \
    e.Set("cuda", std::string("native/cuda/") + stem + ".cuh");     \
    a.Set(k++, e);                                                   \
  }
  MEDLLAVA_OP_LIST(MEDLLAVA_OP_ENTRY)
#undef MEDLLAVA_OP_ENTRY
  return a;
}

// Runs a parsed call on a backend whose ops read host memory in place (the CPU, the emulator).
template <class Ops>
Napi::Value run_in_place(Ops& ops, JsOp& j) {
  std::vector<void*> ptr;
  for (const OpBuf& b : j.call.bufs) ptr.push_back(b.bytes ? b.host : nullptr);
  exec_op(ops, j.call, ptr.data());
  return j.result;
}

}  // namespace napi
}  // namespace medllava
