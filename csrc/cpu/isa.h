// Instruction sets of the CPU kernels, chosen at run time (docs/ARCHITECTURE.md, "Build").
//
// The extension is compiled for the baseline of its target (x86-64: SSE2), so a build made on one
// machine runs on any other. Each family's kernels (<family>_impl.h) are compiled twice on x86-64:
// in namespace `baseline`, and in namespace `avx2` with AVX2 + FMA enabled for those functions
// only (#pragma GCC target; torch's headers are included before it, so none of their code is
// built for AVX2). The kernel registration picks one of the two per op when the library loads:
// AVX2 when the CPU has AVX2 and FMA, unless SSLFAST_CPU_ISA=baseline asks for the other.
#pragma once

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#define SSLFAST_X86 1
#include <immintrin.h>
#else
#define SSLFAST_X86 0
#endif

namespace sslfast::cpu {

inline bool use_avx2() {
  static const bool enabled = [] {
#if SSLFAST_X86
    const char* forced = std::getenv("SSLFAST_CPU_ISA");
    if (forced && std::strcmp(forced, "baseline") == 0) return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
  }();
  return enabled;
}

inline const char* cpu_isa() { return use_avx2() ? "avx2" : "baseline"; }

}  // namespace sslfast::cpu

// The kernel a registration uses: `fn` of the chosen instruction set (both have one signature).
#if SSLFAST_X86
#define SSLFAST_PICK(fn) (::sslfast::cpu::use_avx2() ? &::sslfast::cpu::avx2::fn : &::sslfast::cpu::baseline::fn)
#else
#define SSLFAST_PICK(fn) (&::sslfast::cpu::baseline::fn)
#endif
