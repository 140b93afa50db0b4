// Every op the graphs call, once: X(method, harness name, stem). `method` is the CpuOps / CudaOps
// method (native/cpu/ops_cpu.h, native/cuda/ops_cuda.cuh), declared in native/ops/ops.h as
// <method>_cpu; its CPU code is in native/cpu/<stem>.cc, its kernel and launcher in
// native/cuda/<stem>.cuh. The test harness (native/ops/op_exec.h, native/napi/op_harness.h) runs each
// by its harness name on every backend — the CPU, the SIMT-emulated device, a real CUDA device — and
// test/kernels/ops.test.ts checks that every entry is tested on each. defines: MEDLLAVA_OP_LIST, OpId.
#pragma once

#define MEDLLAVA_OP_LIST(X)                             \
  X(matmul, "matmul", "matmul")                         \
  X(gemm, "gemm", "matmul")                             \
  X(rmsnorm, "rmsnorm", "norm")                         \
  X(rmsnorm_backward, "rmsnormBackward", "norm")        \
  X(layernorm, "layernorm", "norm")                     \
  X(layernorm_backward, "layernormBackward", "norm")    \
  X(rope, "rope", "rope")                               \
  X(rope_backward, "ropeBackward", "rope")              \
  X(silu_mul, "siluMul", "activation")                  \
  X(silu_mul_backward, "siluMulBackward", "activation") \
  X(activation, "activation", "activation")             \
  X(activation_backward, "activationBackward", "activation") \
  X(attention_cached, "attentionCached", "attention")   \
  X(attention_full, "attentionFull", "attention")       \
  X(attention_causal, "attentionCausal", "attention")   \
  X(attention_backward, "attentionBackward", "attention") \
  X(residual, "residual", "elements")                   \
  X(residual_backward, "residualBackward", "elements")  \
  X(bias_backward, "biasBackward", "elements")          \
  X(dropout, "dropout", "elements")                     \
  X(embed, "embed", "elements")                         \
  X(embed_backward, "embedBackward", "elements")        \
  X(kv_append, "kvAppend", "elements")                  \
  X(cross_entropy, "crossEntropy", "loss")              \
  X(adamw, "adamw", "loss")                             \
  X(sum_squares, "sumSquares", "loss")                  \
  X(topk, "topk", "topk")

namespace medllava {
enum class OpId {
#define MEDLLAVA_OP_ENUM(method, js, stem) method,
  MEDLLAVA_OP_LIST(MEDLLAVA_OP_ENUM)
#undef MEDLLAVA_OP_ENUM
      count
};
}  // namespace medllava
