#include "cpu_features.h"

#include <atomic>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace medllava {

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    CpuFeatures r;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    r.avx2 = __builtin_cpu_supports("avx2");
    r.fma = __builtin_cpu_supports("fma");
    // F16C: CPUID.1:ECX bit 29 (clang's __builtin_cpu_supports has no "f16c"); usable when AVX is
    r.f16c = false;
    unsigned eax, ebx, ecx, edx;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx)) r.f16c = (ecx & (1u << 29)) && __builtin_cpu_supports("avx");
    r.avx512f = __builtin_cpu_supports("avx512f");
#endif
    return r;
  }();
  return f;
}

std::vector<std::string> cpu_feature_names() {
  const auto& f = cpu_features();
  std::vector<std::string> out;
  if (f.avx2) out.push_back("avx2");
  if (f.fma) out.push_back("fma");
  if (f.f16c) out.push_back("f16c");
  if (f.avx512f) out.push_back("avx512f");
  return out;
}

static std::atomic<int> g_dispatch{(int)CpuDispatch::Auto};

void set_cpu_dispatch(CpuDispatch d) { g_dispatch.store((int)d); }
CpuDispatch cpu_dispatch() { return (CpuDispatch)g_dispatch.load(); }

bool use_avx2() {
  const auto& f = cpu_features();
  return cpu_dispatch() == CpuDispatch::Auto && f.avx2 && f.fma && f.f16c;
}

}  // namespace medllava
