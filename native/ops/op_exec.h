// One op call, described once and run on any backend: the test harness's core. The JS side
// (native/napi/op_harness.h) turns cpuOp / cudaOp arguments into an OpCall; a backend puts its
// buffers where its ops read them (the CPU and the SIMT emulator: in place; a real device: copies)
// and calls exec_op with its Ops (CpuOps, CudaOps). Plain C++: nvcc compiles it for the real device.
// defines: OpBuf, OpCall, op_scratch, exec_op.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../core/dtype.h"
#include "../model/params.h"  // defines: WeightView
#include "op_list.h"          // defines: OpId
#include "ops.h"

namespace medllava {

// One buffer of a call: `bytes` at `host` (0 bytes: absent, the op gets null). `in`: its contents are
// read; `out`: written (the backend copies them back).
struct OpBuf {
  void* host = nullptr;
  size_t bytes = 0;
  bool in = true, out = false;
};

// The arguments of one op, positionally (op_exec.h's table below says which is which).
struct OpCall {
  OpId op = OpId::count;
  int64_t i[8] = {};
  double f[8] = {};
  DType type = DType::F32;
  int code = 0;                 // an enum argument: RopeMode, Activation
  bool flag[2] = {false, false};  // gemm: trans_a, trans_b
  std::vector<OpBuf> bufs;
};

//  op                bufs                               i                          f            other
//  matmul            a, w, bias?, out                   M, N, K                                 type = w's, code = Activation
//  gemm              a, b, c (in/out)                   M, N, K, lda, ldb, ldc     alpha, beta  type = b's, flag = trans_a, trans_b
//  rmsnorm           x, w, out, rstd?                   T, D                       eps
//  rmsnorm_backward  dy, x, w, rstd, dx (in/out), dw? (in/out)   T, D
//  layernorm         x, w, b, out, mean?, rstd?         T, D                       eps
//  layernorm_backward dy, x, w, mean, rstd, dx (in/out), dw? (in/out), db? (in/out)   T, D
//  rope_backward     dx (in/out)                        T, heads, hd, pos0         theta        code = RopeMode
//  activation_backward dout, x, dx (in/out)             n                                       code = Activation
//  attention_backward q, k, v, out, lse, dout, dq, dk, dv (in/out)   T, H, KVH, hd            flag[0] = causal
//  residual_backward dh, a, gamma?, da (in/out), dgamma? (in/out)    n, D          scale
//  bias_backward     dy, db (in/out)                    M, N
//  dropout           x, out                             n, seed                    p
//  embed_backward    dout, ids (read on the host), dtable (in/out)   T, D
//  cross_entropy     logits (in/out), targets (host), weights?, loss  N, V         scale
//  adamw             p (in/out), grad, m (in/out), v (in/out)         n, step      lr, β1, β2, eps, wd, grad_scale
//  sum_squares       x, out (host: one float64)         n
//  rope              x (in/out)                         T, heads, hd, pos0         theta        code = RopeMode
//  silu_mul          gate, up, out                      n
//  silu_mul_backward dout, gate, up, dgate (in/out), dup (in/out)   n
//  activation        x, out                             n                                       code = Activation
//  attention_cached  q, k cache, v cache, out           T, n_past, H, KVH, hd
//  attention_full    q, k, v, out, lse?                 T, H, hd
//  attention_causal  q, k, v, out, lse                  T, H, KVH, hd
//  residual          h (in/out), a, gamma?              n, D                       scale
//  embed             table, ids (read on the host), out T, D                                    type = table's
//  kv_append         src, cache (in/out)                pos, T, width
//  topk              x, idx, val                        n, k

// The scratch a CudaOps needs for `c`: embed's ids (ints), decode attention's partials (floats).
struct OpScratch {
  int64_t ids = 0, floats = 0;
};
inline OpScratch op_scratch(const OpCall& c) {
  OpScratch s;
  if (c.op == OpId::embed) s.ids = c.i[0];
  if (c.op == OpId::attention_cached) s.floats = c.i[2] * 64 * (c.i[4] + 2);
  return s;
}

// Runs `c` on `ops`; ptr[k] is where the backend put bufs[k] (null when absent).
template <class Ops>
void exec_op(Ops& ops, const OpCall& c, void* const* ptr) {
  auto f = [&](int k) { return static_cast<float*>(ptr[k]); };
  auto vec = [&](int k, int64_t n) {  // an f32 vector parameter as the graphs pass it
    WeightView v;
    v.data = ptr[k];
    v.rows = n;
    v.cols = 1;
    return v;
  };
  const int64_t* i = c.i;
  switch (c.op) {
    case OpId::matmul: {
      WeightView w;
      w.data = ptr[1];
      w.type = c.type;
      w.rows = i[1];
      w.cols = i[2];
      ops.matmul(f(0), w, ptr[2] ? vec(2, i[1]) : WeightView{}, f(3), i[0], (Activation)c.code);
      break;
    }
    case OpId::gemm: {
      GemmArgs g;
      g.a = f(0), g.b = ptr[1], g.b_type = c.type, g.c = f(2);
      g.M = i[0], g.N = i[1], g.K = i[2], g.lda = i[3], g.ldb = i[4], g.ldc = i[5];
      g.alpha = (float)c.f[0], g.beta = (float)c.f[1], g.trans_a = c.flag[0], g.trans_b = c.flag[1];
      ops.gemm(g);
      break;
    }
    case OpId::rmsnorm: ops.rmsnorm(f(0), vec(1, i[1]), f(2), i[0], i[1], (float)c.f[0], f(3)); break;
    case OpId::rmsnorm_backward: ops.rmsnorm_backward(f(0), f(1), vec(2, i[1]), f(3), f(4), f(5), i[0], i[1]); break;
    case OpId::layernorm: ops.layernorm(f(0), vec(1, i[1]), vec(2, i[1]), f(3), i[0], i[1], (float)c.f[0], f(4), f(5)); break;
    case OpId::layernorm_backward: ops.layernorm_backward(f(0), f(1), vec(2, i[1]), f(3), f(4), f(5), f(6), f(7), i[0], i[1]); break;
    case OpId::rope_backward: ops.rope_backward(f(0), i[0], i[1], i[2], i[3], (float)c.f[0], (RopeMode)c.code); break;
    case OpId::activation_backward: ops.activation_backward(f(0), f(1), f(2), i[0], (Activation)c.code); break;
    case OpId::attention_backward:
      ops.attention_backward(f(0), f(1), f(2), f(3), f(4), f(5), f(6), f(7), f(8), i[0], i[1], i[2], i[3], c.flag[0]);
      break;
    case OpId::residual_backward: ops.residual_backward(f(0), f(1), f(2), (float)c.f[0], f(3), f(4), i[0], i[1]); break;
    case OpId::bias_backward: ops.bias_backward(f(0), f(1), i[0], i[1]); break;
    case OpId::dropout: ops.dropout(f(0), f(1), i[0], (float)c.f[0], (uint64_t)i[1]); break;
    case OpId::embed_backward: ops.embed_backward(f(0), static_cast<const int32_t*>(c.bufs[1].host), f(2), i[0], i[1]); break;
    case OpId::cross_entropy:
      ops.cross_entropy(f(0), static_cast<const int32_t*>(c.bufs[1].host), f(2), f(3), i[0], i[1], (float)c.f[0]);
      break;
    case OpId::adamw: {
      AdamWArgs a;
      a.lr = (float)c.f[0], a.beta1 = (float)c.f[1], a.beta2 = (float)c.f[2], a.eps = (float)c.f[3], a.weight_decay = (float)c.f[4];
      a.grad_scale = (float)c.f[5], a.step = i[1];
      ops.adamw(f(0), f(1), f(2), f(3), i[0], a);
      break;
    }
    case OpId::sum_squares: {
      double* out = static_cast<double*>(c.bufs[1].host);  // a host value on every backend
      *out = 0;
      ops.sum_squares(f(0), i[0], out);
      break;
    }
    case OpId::rope: ops.rope(f(0), i[0], i[1], i[2], i[3], (float)c.f[0], (RopeMode)c.code); break;
    case OpId::silu_mul: ops.silu_mul(f(0), f(1), f(2), i[0]); break;
    case OpId::silu_mul_backward: ops.silu_mul_backward(f(0), f(1), f(2), f(3), f(4), i[0]); break;
    case OpId::activation: ops.activation(f(0), f(1), i[0], (Activation)c.code); break;
    case OpId::attention_cached:
      ops.attention_cached(f(0), static_cast<const uint16_t*>(ptr[1]), static_cast<const uint16_t*>(ptr[2]), f(3), i[0], i[1], i[2], i[3],
                           i[4]);
      break;
    case OpId::attention_full: ops.attention_full(f(0), f(1), f(2), f(3), i[0], i[1], i[2], f(4)); break;
    case OpId::attention_causal: ops.attention_causal(f(0), f(1), f(2), f(3), f(4), i[0], i[1], i[2], i[3]); break;
    case OpId::residual: ops.residual(f(0), f(1), f(2), (float)c.f[0], i[0], i[1]); break;
    case OpId::embed: {
      WeightView t;
      t.data = ptr[0];
      t.type = c.type;
      t.rows = 0;
      t.cols = i[1];
      ops.embed(t, static_cast<const int32_t*>(c.bufs[1].host), f(2), i[0]);
      break;
    }
    case OpId::kv_append: ops.kv_append(f(0), static_cast<uint16_t*>(ptr[1]), i[0], i[1], i[2]); break;
    case OpId::topk: ops.topk(f(0), i[0], i[1], static_cast<int32_t*>(ptr[1]), f(2)); break;
    case OpId::count: break;
  }
}

}  // namespace medllava
