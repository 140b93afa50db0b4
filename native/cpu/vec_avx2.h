// AVX2 vector math shared by the CPU kernels (matmul epilogues, softmax): e^x, erf, GELU and
// quick_gelu on 8 lanes. Each function carries its own target attribute: include freely, call only
// behind a use_avx2() check.
#pragma once
#include <immintrin.h>

#include "../ops/activation.h"

namespace medllava {

// ---- vector activations (AVX2) ------------------------------------------------------------------
// e^x: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in two for exact reduction), e^r by its degree-7
// Taylor polynomial (truncation < 6e-9 relative), 2^n added to the exponent bits.
__attribute__((target("avx2,fma"))) inline __m256 exp_avx2(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.0f)), _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

// erf(x) = ±(1 − erfc|x|), erfc(z) = t·exp(−z² + P(t)), t = 1/(1 + z/2): the Chebyshev fit from
// Numerical Recipes (erfcc), fractional error < 1.2e-7 for every z ≥ 0.
__attribute__((target("avx2,fma"))) inline __m256 erf_avx2(__m256 x) {
  const __m256 sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0f));
  const __m256 z = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
  const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(z, _mm256_set1_ps(0.5f), _mm256_set1_ps(1.0f)));
  __m256 p = _mm256_set1_ps(0.17087277f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.82215223f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.48851587f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.13520398f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.27886807f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.18628806f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.09678418f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.37409196f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.00002368f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.26551223f));
  const __m256 erfc = _mm256_mul_ps(t, exp_avx2(_mm256_fnmadd_ps(z, z, p)));
  return _mm256_or_ps(_mm256_sub_ps(_mm256_set1_ps(1.0f), erfc), sign);
}

__attribute__((target("avx2,fma"))) inline __m256 activation_avx2(__m256 x, Activation act) {
  switch (act) {
    case Activation::Gelu: {
      const __m256 e = erf_avx2(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f)));
      return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    }
    case Activation::QuickGelu: {
      const __m256 e = exp_avx2(_mm256_mul_ps(x, _mm256_set1_ps(-1.702f)));
      return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    }
    default: return x;
  }
}

}  // namespace medllava
