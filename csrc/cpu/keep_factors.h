// Dropout keep factors on CPU: out[k] = scale where hash_keep(seed, first + k, p) (kernels/random.h),
// else 0, for the hash-keyed masks (drop_mask; the mask is regenerated, never stored).
//
// SplitMix64 is three 64-bit multiplies per index. GCC vectorizes them only with AVX-512DQ
// (vpmullq); with SSE2 or AVX2 the loop stays scalar, about 12x slower (benchmarks/NOTES.md).
// So this one loop gets an AVX-512 build of its own, picked at run time like isa.h's AVX2 pass
// (and off under SSLFAST_CPU_ISA=baseline); the integers, and so the factors, are the same bits.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "../../kernels/random.h"
#include "isa.h"

namespace sslfast::cpu {

namespace keep_detail {

#define SSLFAST_KEEP_FACTORS_BODY \
  for (int64_t k = 0; k < count; ++k) out[k] = hash_keep(seed, first + uint64_t(k), p) ? scale : 0.0f;

inline void plain(uint64_t seed, uint64_t first, int64_t count, float p, float scale, float* out) {
  SSLFAST_KEEP_FACTORS_BODY
}

#if SSLFAST_X86 && defined(__GNUC__)
__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx512cd"))) inline void avx512(uint64_t seed, uint64_t first,
                                                                                          int64_t count, float p,
                                                                                          float scale, float* out) {
  SSLFAST_KEEP_FACTORS_BODY
}
#endif
#undef SSLFAST_KEEP_FACTORS_BODY

inline bool use_avx512() {
  static const bool enabled = [] {
#if SSLFAST_X86 && defined(__GNUC__)
    const char* forced = std::getenv("SSLFAST_CPU_ISA");
    if (forced && std::strcmp(forced, "baseline") == 0) return false;
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
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
inline void keep_factors(uint64_t seed, uint64_t first, int64_t count, float p, float scale, float* out) {
#if SSLFAST_X86 && defined(__GNUC__)
  if (keep_detail::use_avx512()) return keep_detail::avx512(seed, first, count, p, scale, out);
#endif
  keep_detail::plain(seed, first, count, p, scale, out);
}

}  // namespace sslfast::cpu
