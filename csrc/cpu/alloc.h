// Large CPU outputs backed by transparent huge pages where the kernel allows it.
//
// A fresh output from at::empty is untouched memory: the kernel that fills it takes one page
// fault per 4 KiB, which under a hypervisor was a third of a memory-bound op's time
// (benchmarks/NOTES.md, "huge pages"). Marking the 2 MiB-aligned interior of the
// allocation MADV_HUGEPAGE before anything touches it makes those faults 2 MiB each (torch does
// the same for allocations of 2 MiB and more under THP_MEM_ALLOC_ENABLE=1). The tensor stays an
// ordinary at::empty tensor: same allocator, same deleter, counted by the profiler like any other.
//
// Only outputs of 32 MiB and more: glibc serves those from their own mmap (its dynamic mmap
// threshold never exceeds 32 MiB on 64-bit), so the hint covers exactly this tensor's mapping
// and is unmapped with it. Smaller blocks can come from the heap, where the flag would outlive
// the tensor and mark memory reused by unrelated allocations; between 4 and 32 MiB the hint made
// no measurable difference (benchmarks/NOTES.md). Without THP (or in "never" mode) madvise fails
// and nothing changes. SSLFAST_HUGE_PAGES=0 turns it off (read on every call, so a benchmark can
// compare both in one process); the values computed never depend on it.
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
  constexpr int64_t kMinBytes = int64_t(32) << 20;  // glibc's largest mmap threshold, see above
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
