// Compiles SSLFAST_IMPL (a family's kernels) once per instruction set, in namespaces
// sslfast::cpu::baseline and (x86-64) sslfast::cpu::avx2; see isa.h. Include it after every
// header the kernels need, outside any namespace.
#ifndef SSLFAST_IMPL
#error "define SSLFAST_IMPL (the family's _impl.h) before including isa_instantiate.h"
#endif

namespace sslfast::cpu::baseline {
#define SSLFAST_AVX2 0
#include SSLFAST_IMPL
#undef SSLFAST_AVX2
}  // namespace sslfast::cpu::baseline

#if SSLFAST_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace sslfast::cpu::avx2 {
#define SSLFAST_AVX2 1
#include SSLFAST_IMPL
#undef SSLFAST_AVX2
}  // namespace sslfast::cpu::avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

#undef SSLFAST_IMPL
