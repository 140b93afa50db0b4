// Choosing the next token from logits on the CPU: the repetition penalty (CTRL's: positive logits
// divided, negative multiplied), then top-k → top-p → min-p → temperature, as llama.cpp's common
// sampler chain orders them; greedy (temperature 0) is the penalised argmax, lowest id on ties.
// Float64 throughout; the random stream is mulberry32 (32-bit state, the same sequence everywhere).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "../ops/ops.h"

namespace medllava {

double sample_next_uniform(uint32_t* state) {
  uint32_t s = *state + 0x6d2b79f5u;
  *state = s;
  uint32_t t = s;
  t = (t ^ (t >> 15)) * (t | 1u);
  t ^= t + (t ^ (t >> 7)) * (t | 61u);
  return (double)(t ^ (t >> 14)) / 4294967296.0;
}

SampleResult sample_cpu(const float* logits, int64_t V, const SampleOptions& o, const int32_t* history, int64_t H, uint32_t* rng) {
  std::vector<double> x(logits, logits + V);
  // log-softmax of the raw logits: the reported log-probability (the model's own distribution)
  double m = -INFINITY;
  for (int64_t i = 0; i < V; ++i) m = std::max(m, x[(size_t)i]);
  double z = 0;
  for (int64_t i = 0; i < V; ++i) z += std::exp(x[(size_t)i] - m);
  const double lse = m + std::log(z);
  if (o.repetition_penalty != 1.0) {
    std::vector<bool> seen((size_t)V, false);  // each token of the history once
    for (int64_t j = 0; j < H; ++j) {
      const int32_t t = history[j];
      if (t < 0 || t >= V || seen[(size_t)t]) continue;
      seen[(size_t)t] = true;
      double& v = x[(size_t)t];
      v = v > 0 ? v / o.repetition_penalty : v * o.repetition_penalty;
    }
  }
  int64_t choice = 0;
  if (o.temperature == 0) {
    for (int64_t i = 1; i < V; ++i)
      if (x[(size_t)i] > x[(size_t)choice]) choice = i;
  } else {
    // candidates by falling logit, lower id first among equals; top-k needs only its k first
    std::vector<int32_t> ids((size_t)V);
    std::iota(ids.begin(), ids.end(), 0);
    auto before = [&](int32_t a, int32_t b) { return x[(size_t)a] > x[(size_t)b] || (x[(size_t)a] == x[(size_t)b] && a < b); };
    const int64_t k = o.top_k > 0 && o.top_k < V ? o.top_k : V;
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), before);
    ids.resize((size_t)k);
    // probabilities over the candidates at temperature t, relative to the first (largest)
    auto softmax = [&](double t) {
      std::vector<double> p(ids.size());
      const double top = x[(size_t)ids[0]];
      double s = 0;
      for (size_t i = 0; i < ids.size(); ++i) s += p[i] = std::exp((x[(size_t)ids[i]] - top) / t);
      for (double& v : p) v /= s;
      return p;
    };
    if (o.top_p < 1) {  // the smallest prefix whose probability (at T = 1) reaches top_p
      const std::vector<double> p = softmax(1);
      double acc = 0;
      size_t keep = ids.size();
      for (size_t i = 0; i < ids.size(); ++i) {
        acc += p[i];
        if (acc >= o.top_p) {
          keep = i + 1;
          break;
        }
      }
      ids.resize(keep);
    }
    if (o.min_p > 0) {  // tokens at least min_p times as likely as the most likely one (at T = 1)
      const std::vector<double> p = softmax(1);
      std::vector<int32_t> kept;
      // the first is always kept (p[0] ≥ min_p · p[0] for finite logits; with NaN logits nothing would be)
      for (size_t i = 0; i < ids.size(); ++i)
        if (i == 0 || p[i] >= o.min_p * p[0]) kept.push_back(ids[i]);
      ids.swap(kept);
    }
    const std::vector<double> p = softmax(o.temperature);
    double r = sample_next_uniform(rng);
    choice = ids.back();
    for (size_t i = 0; i < ids.size(); ++i) {
      r -= p[i];
      if (r < 0) {
        choice = ids[i];
        break;
      }
    }
  }
  return {(int32_t)choice, (double)logits[choice] - lse};
}

}  // namespace medllava
