// Every op kernel of the CUDA backend, one header per op stem (the CPU twin of cuda/<stem>.cuh is
// cpu/<stem>.cc; native/ops/op_list.h lists them). defines: nothing of its own.
#pragma once
#include "activation.cuh"  // defines: silu_mul_launch, activation_launch and their _backward_launch
#include "attention.cuh"   // defines: flash_attention_launch, attention_decode_launch, attention_backward_launch, kMaxHd
#include "elements.cuh"    // defines: residual_launch, embed_launch, kv_append_launch, residual_backward_launch,
                           //   bias_backward_launch, embed_backward_launch
#include "loss.cuh"        // defines: cross_entropy_launch, adamw_launch, sum_squares_launch, sum_squares_blocks
#include "matmul.cuh"      // defines: matmul_launch
#include "norm.cuh"        // defines: rmsnorm_launch, layernorm_launch and their _backward_launch
#include "rope.cuh"        // defines: rope_launch, rope_backward_launch
#include "topk.cuh"        // defines: topk_launch
