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
    // zmm state enabled by the OS: XCR0 bits 1, 2 (SSE, AVX) and 5, 6, 7 (opmask, zmm0-15 high, zmm16-31)
    bool os_zmm = false;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 27))) {  // OSXSAVE
      unsigned lo, hi;
      __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
      os_zmm = (lo & 0xe6) == 0xe6;
    }
    r.avx512f = os_zmm && __builtin_cpu_supports("avx512f");
    r.avx512bw = os_zmm && __builtin_cpu_supports("avx512bw");
    r.avx512vl = os_zmm && __builtin_cpu_supports("avx512vl");
    r.avx512vnni = os_zmm && __builtin_cpu_supports("avx512vnni");
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
  if (f.avx512bw) out.push_back("avx512bw");
  if (f.avx512vl) out.push_back("avx512vl");
  if (f.avx512vnni) out.push_back("avx512vnni");
  return out;
}

static std::atomic<int> g_dispatch{(int)CpuDispatch::Auto};

void set_cpu_dispatch(CpuDispatch d) { g_dispatch.store((int)d); }
CpuDispatch cpu_dispatch() { return (CpuDispatch)g_dispatch.load(); }

bool use_avx2() {
  const auto& f = cpu_features();
  return cpu_dispatch() != CpuDispatch::Scalar && f.avx2 && f.fma && f.f16c;
}

bool use_avx512() {
  const auto& f = cpu_features();
  const CpuDispatch d = cpu_dispatch();
  return (d == CpuDispatch::Auto || d == CpuDispatch::Avx512NoVnni) && use_avx2() && f.avx512f && f.avx512bw && f.avx512vl;
}

bool use_vnni() { return cpu_dispatch() == CpuDispatch::Auto && use_avx512() && cpu_features().avx512vnni; }

const char* cpu_dispatch_name() { return use_avx512() ? "avx512" : use_avx2() ? "avx2" : "scalar"; }

}  // namespace medllava
