// Large CPU outputs backed by transparent huge pages where the kernel allows it.
//
// A fresh output from at::empty is untouched memory: the kernel that fills it takes one page
// fault per 4 KiB, and under a hypervisor each costs about 1.5 us (measured on the 2-core KVM dev
// machine: allocating and filling 51 MB took 19 ms, refilling the same buffer 2.5 ms). For a
// memory-bound op that is a third of its time. Marking the 2 MiB-aligned interior of the
// allocation MADV_HUGEPAGE before anything touches it makes those faults 2 MiB each (what torch
// does for every allocation under THP_MEM_ALLOC_ENABLE=1). The tensor stays an ordinary
// at::empty tensor: same allocator, same deleter, counted by the profiler like any other.
//
// Only a hint: on kernels without THP, in "never" mode, or for memory that was already touched
// (a reused heap block) madvise changes nothing or fails, and the result is the same tensor.
// SSLFAST_HUGE_PAGES=0 turns it off (read on every call, so a benchmark can compare both in one
// process); the values computed never depend on it.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <cstdlib>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace sslfast::cpu {

inline void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  constexpr int64_t kMinBytes = int64_t(4) << 20;  // below two huge pages the hint gains nothing
  const int64_t bytes = t.nbytes();
  if (bytes < kMinBytes) return;
  const char* enabled = std::getenv("SSLFAST_HUGE_PAGES");
  if (enabled && enabled[0] == '0' && enabled[1] == '\0') return;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = (begin + uintptr_t(bytes)) & ~(kHuge - 1);
  if (last > first) (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

// at::empty / at::empty_like whose pages are first touched by the kernel that fills them.
inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
  advise_huge_pages(t);
  return t;
}

inline at::Tensor empty_output_like(const at::Tensor& like) {
  at::Tensor t = at::empty_like(like, at::MemoryFormat::Contiguous);
  advise_huge_pages(t);
  return t;
}

}  // namespace sslfast::cpu
