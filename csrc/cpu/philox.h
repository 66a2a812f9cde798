// In-kernel Gaussian noise of the CPU kernels: Philox4x32-10 + Box-Muller, the stream of Triton's
// tl.randn4x (element i = k * Q + g, Q = ceil(n / 4), takes normal k of block g), so the C++ and
// Triton kernels draw the same noise for the same key. Scalar and instruction-set independent (the
// diffusion kernels have an 8-lane version of it); also how a key is drawn from a generator.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <optional>

namespace sslfast::cpu {

struct Normal4 {
  float v[4];
};

inline uint32_t mulhi32(uint32_t a, uint32_t b) { return uint32_t((uint64_t(a) * uint64_t(b)) >> 32); }

inline Normal4 philox_normal4(uint64_t seed, uint64_t group) {
  uint32_t c0 = uint32_t(group), c1 = uint32_t(group >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint32_t a0 = c0, a2 = c2;
    c0 = mulhi32(0xCD9E8D57u, a2) ^ c1 ^ k0;
    c2 = mulhi32(0xD2511F53u, a0) ^ c3 ^ k1;
    c1 = 0xCD9E8D57u * a2;
    c3 = 0xD2511F53u * a0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  // Triton's uint_to_uniform_float: the int32 view folded to [0, 2^31), times 2^-31.
  auto uniform = [](uint32_t x) {
    int32_t s = int32_t(x);
    s = s < 0 ? -s - 1 : s;
    return float(s) * 4.6566127342e-10f;
  };
  Normal4 out;
  const uint32_t c[4] = {c0, c1, c2, c3};
  for (int p = 0; p < 2; ++p) {
    const float u1 = std::max(1.0e-7f, uniform(c[2 * p]));
    const float u2 = uniform(c[2 * p + 1]);
    const float r = std::sqrt(-2.0f * std::log(u1));
    const float theta = 6.283185307179586f * u2;
    out.v[2 * p] = r * std::cos(theta);
    out.v[2 * p + 1] = r * std::sin(theta);
  }
  return out;
}

// The Philox key of in-kernel noise: `seed` when >= 0, else drawn from `generator` (or the default
// CPU generator) as torch.randint(0, 2**62, (), generator=generator) draws it.
inline int64_t noise_key(int64_t seed, const std::optional<at::Generator>& generator) {
  if (seed >= 0) return seed;
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(generator, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return int64_t(gen->random64() % (uint64_t(1) << 62));
}

// The normal of element i of an n-element tensor in the stream above.
inline float philox_normal_at(uint64_t key, int64_t i, int64_t n) {
  const int64_t groups = (n + 3) / 4;
  return philox_normal4(key, uint64_t(i % groups)).v[i / groups];
}

}  // namespace sslfast::cpu
