// Scratch memory of the CPU kernels: a kernel's temporary arrays (running maxima, per-thread
// tiles, partial sums).
//
// Large blocks come from the torch CPU allocator, so that the profiler (and the benchmark's
// peak-memory column) sees every byte a kernel needs. Blocks under kSmallScratchBytes come from
// plain malloc: an allocation through the dispatcher costs about a microsecond, several per call,
// which on small inputs was a large share of a call (docs/ARCHITECTURE.md, "Per-call cost").
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <memory>

namespace sslfast::cpu {

constexpr int64_t kSmallScratchBytes = 256 * 1024;

template <typename T>
class HostArray {
 public:
  explicit HostArray(int64_t n) : n_(std::max<int64_t>(n, 1)) {
    if (n_ * int64_t(sizeof(T)) < kSmallScratchBytes) {
      small_.reset(new T[n_]);
      ptr_ = small_.get();
    } else {
      large_ = at::empty({n_}, at::dtype(c10::CppTypeToScalarType<T>::value));
      ptr_ = large_.data_ptr<T>();
    }
  }
  T* data() { return ptr_; }
  T& operator[](int64_t i) { return ptr_[i]; }
  int64_t size() const { return n_; }

 private:
  int64_t n_;
  std::unique_ptr<T[]> small_;
  at::Tensor large_;
  T* ptr_ = nullptr;
};

// n values, all `fill`.
template <typename T>
struct Buffer : HostArray<T> {
  Buffer(int64_t n, T fill) : HostArray<T>(n) { std::fill(this->data(), this->data() + this->size(), fill); }
};

// One `size`-element area per thread of the current parallel region.
template <typename T>
struct Scratch {
  HostArray<T> storage;
  int64_t size;
  explicit Scratch(int64_t size_)
      : storage(at::get_num_threads() * std::max<int64_t>(size_, 1)), size(std::max<int64_t>(size_, 1)) {}
  T* get(int thread) { return storage.data() + thread * size; }
  T* get() { return get(at::get_thread_num()); }
};

}  // namespace sslfast::cpu
