// Dropout keep factors on CPU: out[k] = 1 where hash_keep(seed, first + k, p) (kernels/random.h),
// else 0, for the hash-keyed masks (drop_mask; the mask is regenerated, never stored).
//
// SplitMix64 is three 64-bit multiplies per index. GCC vectorizes them only with AVX-512DQ
// (vpmullq); with SSE2 or AVX2 the loop stays scalar, about 12x slower (benchmarks/NOTES.md).
// So this one loop gets an AVX-512 build of its own, picked at run time when isa.h picks the AVX2
// pass and the CPU has AVX-512 (so SSLFAST_CPU_ISA=baseline turns it off too); the integers, and so
// the factors, are the same bits.
#pragma once

#include <cstdint>

#include "../../kernels/random.h"
#include "isa.h"

namespace sslfast::cpu {

namespace keep_detail {

#define SSLFAST_KEEP_FACTORS_BODY \
  for (int64_t k = 0; k < count; ++k) out[k] = hash_keep(seed, first + uint64_t(k), p) ? 1.0f : 0.0f;

inline void plain(uint64_t seed, uint64_t first, int64_t count, float p, float* out) { SSLFAST_KEEP_FACTORS_BODY }

#if SSLFAST_X86 && defined(__GNUC__)
__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx512cd"))) inline void avx512(uint64_t seed, uint64_t first,
                                                                                          int64_t count, float p,
                                                                                          float* out) {
  SSLFAST_KEEP_FACTORS_BODY
}
#endif
#undef SSLFAST_KEEP_FACTORS_BODY

inline bool use_avx512() {
  static const bool enabled = [] {
#if SSLFAST_X86 && defined(__GNUC__)
    return use_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512cd");
#else
    return false;
#endif
  }();
  return enabled;
}

}  // namespace keep_detail

// out[0, count): the factors of indices first .. first + count - 1.
inline void keep_factors(uint64_t seed, uint64_t first, int64_t count, float p, float* out) {
#if SSLFAST_X86 && defined(__GNUC__)
  if (keep_detail::use_avx512()) return keep_detail::avx512(seed, first, count, p, out);
#endif
  keep_detail::plain(seed, first, count, p, out);
}

}  // namespace sslfast::cpu
