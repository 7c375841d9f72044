// Run-time CPU feature checks for the kernels' dispatch (AVX2 and FMA paths on x86, portable
// loops elsewhere). Owns nothing; safe to call from any thread.
#ifndef CODEGEN_COMMON_CPU_H_
#define CODEGEN_COMMON_CPU_H_

namespace codegen {

// True when this x86 CPU has AVX2 (and FMA with `need_fma`); false on other architectures
// and compilers, where the kernels take their portable loops.
inline bool CpuSupportsAvx2(bool need_fma) {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && (!need_fma || __builtin_cpu_supports("fma"));
#else
  (void)need_fma;
  return false;
#endif
}

}  // namespace codegen

#endif  // CODEGEN_COMMON_CPU_H_
