// Counter-based random numbers shared by the CPU and CUDA kernels, and reproduced in
// sslfast/reference/random.py: uniform(seed, index) is a pure function of its arguments (a
// SplitMix64 hash), so a dropout mask is regenerated in the backward pass instead of stored, and
// every backend draws the same numbers. Plain C++ (no torch headers): nvcc compiles it in CI.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define SSLFAST_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SSLFAST_HOST_DEVICE inline
#endif

namespace sslfast {

// SplitMix64's output function of the counter seed * golden + index + 1.
SSLFAST_HOST_DEVICE uint64_t hash64(uint64_t seed, uint64_t index) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ULL + (index + 1) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) on a 2^-24 grid (exact in float32).
SSLFAST_HOST_DEVICE float hash_uniform(uint64_t seed, uint64_t index) {
  return float(hash64(seed, index) >> 40) * 5.9604644775390625e-08f;
}

// Dropout's keep decision for probability p of dropping.
SSLFAST_HOST_DEVICE bool hash_keep(uint64_t seed, uint64_t index, float p) { return hash_uniform(seed, index) >= p; }

}  // namespace sslfast
