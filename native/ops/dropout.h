// Dropout's mask, one definition for every backend (CPU, CUDA, CUDA under the SIMT emulator): a
// counter-based hash of (seed, element index), so that backward regenerates the forward's mask
// instead of storing it, and a test can rebuild it in any language. defines: dropout_mix32,
// dropout_keep, dropout_linear_seed.
#pragma once
#include <cstdint>

#include "../core/hd.h"  // defines: MEDLLAVA_HD

namespace medllava {

// lowbias32: a 32-bit integer hash with good avalanche
MEDLLAVA_HD inline uint32_t dropout_mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// Element i of a tensor under `seed` is kept when u ≥ p, u = the hash's top 24 bits / 2²⁴, where
// hash = mix(lo(i) ^ mix(hi(i) ^ mix(lo(seed) ^ mix(hi(seed))))).
MEDLLAVA_HD inline bool dropout_keep(uint64_t seed, uint64_t i, float p) {
  const uint32_t s = dropout_mix32((uint32_t)seed ^ dropout_mix32((uint32_t)(seed >> 32)));
  const uint32_t h = dropout_mix32((uint32_t)i ^ dropout_mix32((uint32_t)(i >> 32) ^ s));
  return (float)(h >> 8) * (1.0f / 16777216.0f) >= p;
}

// The seed of one LoRA linear's dropout in one step: step · 0x9E3779B97F4A7C15 + (id of its A + 1), mod 2⁶⁴.
MEDLLAVA_HD inline uint64_t dropout_linear_seed(uint64_t step, int lora_a) {
  return step * 0x9E3779B97F4A7C15ull + (uint64_t)(lora_a + 1);
}

}  // namespace medllava
