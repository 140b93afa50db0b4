// Every op kernel of the CUDA backend, one header per op stem (the CPU twin of cuda/<stem>.cuh is
// cpu/<stem>.cc; native/ops/op_list.h lists them). defines: nothing of its own.
#pragma once
#include "activation.cuh"  // defines: silu_mul_launch, activation_launch
#include "attention.cuh"   // defines: flash_attention_launch, attention_decode_launch, kMaxHd
#include "elements.cuh"    // defines: residual_launch, embed_launch, kv_append_launch
#include "matmul.cuh"      // defines: matmul_launch
#include "norm.cuh"        // defines: rmsnorm_launch, layernorm_launch
#include "rope.cuh"        // defines: rope_launch
#include "topk.cuh"        // defines: topk_launch
