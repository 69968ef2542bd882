// Function multi-versioning for the few plain loops of the CPU backend (batch norm, elementwise backward passes):
// GCC compiles each marked function for AVX-512, AVX2+FMA and baseline x86-64 and picks one at load time, so the
// addon stays portable without -march=native. The loops use `#pragma omp simd` (the build passes -fopenmp) so
// that float reductions vectorize without -ffast-math.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define RV_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RV_SIMD_CLONES
#endif
