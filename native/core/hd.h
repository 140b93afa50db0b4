// MEDLLAVA_HD: host + device under nvcc, plain host code elsewhere (the SIMT emulator included) —
// for the small helpers both the CPU code and the CUDA kernels call.
#pragma once

#if defined(__CUDACC__)
#define MEDLLAVA_HD __host__ __device__
#else
#define MEDLLAVA_HD
#endif
