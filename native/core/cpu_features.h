// Runtime CPU dispatch: what this CPU supports, and which kernel family we use. Shipped builds
// never use -march=native; AVX2/FMA code is compiled per function with target attributes.
#pragma once
#include <string>
#include <vector>

namespace medllava {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  // AVX-512 F/BW/VL with the OS saving zmm state (XCR0 opmask + zmm bits), and VNNI (vpdpbusd)
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512vnni = false;
};

const CpuFeatures& cpu_features();        // what the CPU reports
std::vector<std::string> cpu_feature_names();  // e.g. {"avx2","fma","f16c"}

enum class CpuDispatch { Auto, Avx512NoVnni, Avx2, Scalar };
// Tests force each kernel family to check it on machines that have better: AVX-512 without its
// VNNI int8 path, AVX2, or the scalar kernels.
void set_cpu_dispatch(CpuDispatch d);
CpuDispatch cpu_dispatch();
// True when the AVX2+FMA+F16C kernels may run (CPU supports them and dispatch is not Scalar).
bool use_avx2();
// True when the AVX-512 (F, BW, VL) kernels may run: the CPU and OS support them and dispatch is
// Auto or Avx512NoVnni.
bool use_avx512();
// True when the AVX-512 VNNI int8 kernels may run: use_avx512(), the CPU has VNNI, dispatch is Auto.
bool use_vnni();
// The kernel family in use: "avx512", "avx2" or "scalar".
const char* cpu_dispatch_name();

}  // namespace medllava
