// Graph construction on CPU (sslfast/graph.py): csr_by_key, the stable counting sort that builds
// both the destination-sorted CSR and its transpose, with the gathers that follow each sort
// (col = src[perm], row = target[csc_perm]) and the inverse permutation fused into its scatter
// pass, so each E-sized array is written once, in one pass, instead of by a chain of torch ops.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <utility>

namespace sslfast::cpu {
namespace {

// What the scatter pass writes for item k landing at sorted position pos (null: not wanted).
struct SortOutputs {
  int64_t* perm;          // perm[pos] = k
  const int64_t* values;  // sorted[pos] = values[k]
  int64_t* sorted;
  int64_t* inverse;  // inverse[k] = pos
};

// Stable counting sort of int64 keys in [0, n) into ptr[n + 1] (CSR offsets) and the outputs
// above, with keys[perm] non-decreasing and equal keys in input order (= torch.sort(stable=True)).
// Threads take contiguous edge ranges; range t's slot for key v starts after every earlier range's
// v-entries, so the result is the unique stable order whatever the thread count.
//
// Returns false when a key is outside [0, n) (the outputs are then unspecified); it never throws,
// the caller does. On the H100 image (torch 2.11, GCC 13.3) a TORCH_CHECK thrown from inside the
// sort segfaulted; the cause is not established (benchmarks/NOTES.md: the guess was the sort's
// stack realignment, but with GCC 12 the caller realigns as well, and throws fine here).
[[gnu::noinline]] bool counting_sort(const int64_t* key, int64_t edges, int64_t n, int64_t ranges, int64_t* cursor,
                                     int64_t* ptr, SortOutputs out) {
  std::atomic<bool> bad{false};
  auto range_of = [&](int64_t t) { return std::make_pair(edges * t / ranges, edges * (t + 1) / ranges); };
  at::parallel_for(0, ranges, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int64_t* count = cursor + t * n;
      const auto [k0, k1] = range_of(t);
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t v = key[k];
        if (v < 0 || v >= n) {
          bad = true;
          continue;
        }
        ++count[v];
      }
    }
  });
  if (bad) return false;
  int64_t running = 0;
  for (int64_t v = 0; v < n; ++v) {
    ptr[v] = running;
    for (int64_t t = 0; t < ranges; ++t) {
      const int64_t c = cursor[t * n + v];
      cursor[t * n + v] = running;
      running += c;
    }
  }
  ptr[n] = running;
  at::parallel_for(0, ranges, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int64_t* next = cursor + t * n;
      const auto [k0, k1] = range_of(t);
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t pos = next[key[k]]++;
        out.perm[pos] = k;
        if (out.sorted) out.sorted[pos] = out.values[k];
        if (out.inverse) out.inverse[k] = pos;
      }
    }
  });
  return true;
}

void check_long_vector(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kLong && t.dim() == 1, name,
              " must be a 1-D int64 CPU tensor");
}

// (offsets [n + 1], perm [E], values[perm] (empty without values), inverse of perm (empty unless
// inverse)).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> csr_by_key(const at::Tensor& keys_in, int64_t n,
                                                                      const c10::optional<at::Tensor>& values_in,
                                                                      bool inverse) {
  check_long_vector(keys_in, "keys");
  TORCH_CHECK(n >= 0, "num_nodes must be >= 0, got ", n);
  const at::Tensor keys = keys_in.contiguous();
  const int64_t edges = keys.numel();
  at::Tensor values;
  if (values_in) {
    check_long_vector(*values_in, "values");
    TORCH_CHECK(values_in->numel() == edges, "values must have as many entries as keys (", edges, "), got ",
                values_in->numel());
    values = values_in->contiguous();
  }
  at::Tensor offsets = at::zeros({n + 1}, keys.options());
  at::Tensor perm = at::empty({edges}, keys.options());
  at::Tensor sorted = at::empty({values.defined() ? edges : 0}, keys.options());
  at::Tensor inv = at::empty({inverse ? edges : 0}, keys.options());
  // one histogram per range: worth it only when the ranges are long next to n
  const int64_t ranges =
      std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), edges / std::max<int64_t>(n, 1 << 16)));
  // Through the torch allocator, so the benchmark's memory probe sees it (up to threads x N x 8 B).
  at::Tensor cursor = at::zeros({ranges * n}, keys.options());
  const SortOutputs out{perm.data_ptr<int64_t>(), values.defined() ? values.data_ptr<int64_t>() : nullptr,
                        values.defined() ? sorted.data_ptr<int64_t>() : nullptr,
                        inverse ? inv.data_ptr<int64_t>() : nullptr};
  const bool ok = counting_sort(keys.data_ptr<int64_t>(), edges, n, ranges, cursor.data_ptr<int64_t>(),
                                offsets.data_ptr<int64_t>(), out);
  TORCH_CHECK(ok, "keys must be in [0, num_nodes = ", n, ")");
  return {offsets, perm, sorted, inv};
}

}  // namespace

TORCH_LIBRARY_IMPL(sslfast, CPU, m) { m.impl("csr_by_key", &csr_by_key); }

}  // namespace sslfast::cpu
