// Runtime CPU dispatch: what this CPU supports, and which kernel family we use. Shipped builds
// never use -march=native; AVX2/FMA code is compiled per function with target attributes.
#pragma once
#include <string>
#include <vector>

namespace medllava {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false, avx512f = false;
};

const CpuFeatures& cpu_features();        // what the CPU reports
std::vector<std::string> cpu_feature_names();  // e.g. {"avx2","fma","f16c"}

enum class CpuDispatch { Auto, Scalar };
// Tests force the scalar fallback to check it on machines that have AVX2.
void set_cpu_dispatch(CpuDispatch d);
CpuDispatch cpu_dispatch();
// True when the AVX2+FMA+F16C kernels may run (CPU supports them and dispatch is Auto).
bool use_avx2();

}  // namespace medllava
