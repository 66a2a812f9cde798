// Fused diffusion noise steps on CPU: q_sample, the min-SNR-weighted MSE (fwd / bwd) and one
// generic sampler step that DDPM / DDIM / Euler / DPM-Solver++ 2M are instances of
// (math: sslfast/reference/diffusion.py; coefficients: sslfast/ops/diffusion.py).
//
// Every tensor is [B, ...] contiguous; per-sample coefficients come as a [B, K] table in the
// compute dtype, so timesteps never reach the host. One pass over the data per op.
//
// In-kernel noise: element i = k * Q + g (Q = ceil(n / 4), k in 0..3) takes normal k of the
// Philox4x32-10 block with counter (g_lo, g_hi, 0, 0) and key (seed_lo, seed_hi), Box-Muller on
// (u0, u1) and (u2, u3) as Triton's tl.randn4x. The Triton kernels draw the same stream, so both
// backends give the same noise for the same seed; the noise is never written to memory (it lives
// in a per-chunk scratch that stays in cache).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../checks.h"

namespace sslfast::cpu {
namespace {

constexpr int64_t kChunk = 16384;     // elements per parallel task (and per loss partial sum)
constexpr int64_t kGroupChunk = 2048; // Philox blocks per noise task (4 normals each)

// ---------------------------------------------------------------- Philox4x32-10 + Box-Muller

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

// Calls body(i0, i1, noise) over [0, n) in parallel chunks; noise[j] is the noise of element
// i0 + j (from the tensor, drawn in-kernel from the seed, or nullptr when there is none).
template <typename T, typename Body>
void for_each_chunk(int64_t n, const T* noise, int64_t seed, Body body) {
  if (noise != nullptr || seed < 0) {
    at::parallel_for(0, n, kChunk, [&](int64_t begin, int64_t end) {
      for (int64_t i0 = begin; i0 < end; i0 += kChunk) {
        const int64_t i1 = std::min(end, i0 + kChunk);
        body(i0, i1, noise ? noise + i0 : nullptr);
      }
    });
    return;
  }
  const int64_t groups = (n + 3) / 4;
  at::parallel_for(0, groups, kGroupChunk, [&](int64_t begin, int64_t end) {
    std::vector<T> normals(4 * kGroupChunk);
    for (int64_t g0 = begin; g0 < end; g0 += kGroupChunk) {
      const int64_t count = std::min(end, g0 + kGroupChunk) - g0;
      for (int64_t j = 0; j < count; ++j) {
        const Normal4 z = philox_normal4(uint64_t(seed), uint64_t(g0 + j));
        for (int k = 0; k < 4; ++k) normals[k * kGroupChunk + j] = T(z.v[k]);
      }
      for (int64_t k = 0; k < 4; ++k) {
        const int64_t i0 = k * groups + g0;
        const int64_t i1 = std::min(n, i0 + count);
        if (i0 < i1) body(i0, i1, normals.data() + k * kGroupChunk);
      }
    }
  });
}

// Splits [i0, i1) at sample boundaries: fn(b, j0, j1) with j0..j1 inside sample b.
template <typename Fn>
inline void by_sample(int64_t i0, int64_t i1, int64_t inner, Fn fn) {
  while (i0 < i1) {
    const int64_t b = i0 / inner;
    const int64_t stop = std::min(i1, (b + 1) * inner);
    fn(b, i0, stop);
    i0 = stop;
  }
}

void check_batch_tensor(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu(), name, " must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(x.dim() >= 1 && x.size(0) > 0, name, " must be [B, ...] with B > 0, got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, name,
              " must be float32 or float64 for the CPU kernels, got ", x.scalar_type());
}

void check_like(const std::optional<at::Tensor>& y, const at::Tensor& x, const char* name) {
  if (!y) return;
  check_batch_tensor(*y, name);
  TORCH_CHECK(y->sizes() == x.sizes(), name, " must have shape ", x.sizes(), ", got ", y->sizes());
  TORCH_CHECK(y->scalar_type() == x.scalar_type(), name, " must have dtype ", x.scalar_type());
}

void check_coefs(const at::Tensor& coefs, const at::Tensor& x, int64_t k) {
  TORCH_CHECK(coefs.device().is_cpu() && coefs.is_contiguous(), "coefs must be a contiguous CPU tensor");
  TORCH_CHECK(coefs.dim() == 2 && coefs.size(0) == x.size(0) && coefs.size(1) == k, "coefs must have shape (",
              x.size(0), ", ", k, "), got ", coefs.sizes());
  TORCH_CHECK(coefs.scalar_type() == x.scalar_type(), "coefs must have the dtype of the data");
}

// ---------------------------------------------------------------- q_sample

std::tuple<at::Tensor, at::Tensor> diffusion_q_sample(const at::Tensor& x0, const std::optional<at::Tensor>& noise,
                                                      const at::Tensor& coefs, int64_t seed, bool v_target) {
  check_batch_tensor(x0, "x0");
  check_like(noise, x0, "noise");
  check_coefs(coefs, x0, 2);
  TORCH_CHECK(noise || seed >= 0, "diffusion_q_sample needs noise or a seed >= 0");
  auto x_t = at::empty_like(x0);
  auto target = at::empty_like(x0);
  const int64_t n = x0.numel(), inner = n / x0.size(0);
  if (n == 0) return {x_t, target};
  AT_DISPATCH_FLOATING_TYPES(x0.scalar_type(), "diffusion_q_sample", [&] {
    using T = scalar_t;
    const T* x = x0.data_ptr<T>();
    const T* c = coefs.data_ptr<T>();
    T* xt = x_t.data_ptr<T>();
    T* tg = target.data_ptr<T>();
    for_each_chunk<T>(n, noise ? noise->data_ptr<T>() : nullptr, seed, [&](int64_t i0, int64_t i1, const T* eps) {
      by_sample(i0, i1, inner, [&](int64_t b, int64_t j0, int64_t j1) {
        const T a = c[2 * b], s = c[2 * b + 1];
        const T* e = eps + (j0 - i0);
        if (v_target) {
          for (int64_t j = j0; j < j1; ++j) {
            const T ej = e[j - j0], xj = x[j];
            xt[j] = a * xj + s * ej;
            tg[j] = a * ej - s * xj;
          }
        } else {
          for (int64_t j = j0; j < j1; ++j) {
            const T ej = e[j - j0];
            xt[j] = a * x[j] + s * ej;
            tg[j] = ej;
          }
        }
      });
    });
  });
  return {x_t, target};
}

// ---------------------------------------------------------------- weighted MSE

template <typename T>
double squared_error_sum(const T* a, const T* b, int64_t n) {
  // Eight independent accumulators: vectorizes without reassociation flags, fixed order.
  T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) {
      const T d = a[j + l] - b[j + l];
      acc[l] += d * d;
    }
  double total = 0;
  for (; j < n; ++j) {
    const double d = double(a[j]) - double(b[j]);
    total += d * d;
  }
  for (int l = 0; l < 8; ++l) total += double(acc[l]);
  return total;
}

at::Tensor diffusion_loss_fwd(const at::Tensor& model_output, const at::Tensor& target, const at::Tensor& weight) {
  check_batch_tensor(model_output, "model_output");
  check_like(target, model_output, "target");
  const int64_t batch = model_output.size(0);
  TORCH_CHECK(weight.device().is_cpu() && weight.is_contiguous() && weight.dim() == 1 && weight.size(0) == batch &&
                  weight.scalar_type() == model_output.scalar_type(),
              "weight must be a contiguous [B] CPU tensor in the dtype of model_output");
  const int64_t inner = model_output.numel() / batch;
  const int64_t chunks = std::max<int64_t>(1, (inner + kChunk - 1) / kChunk);
  // Partial sums per (sample, chunk), added in a fixed order: independent of the thread count.
  auto partial = at::empty({batch, chunks}, at::kDouble);
  auto per_sample = at::empty({batch}, model_output.options());
  AT_DISPATCH_FLOATING_TYPES(model_output.scalar_type(), "diffusion_loss_fwd", [&] {
    using T = scalar_t;
    const T* m = model_output.data_ptr<T>();
    const T* t = target.data_ptr<T>();
    double* p = partial.data_ptr<double>();
    at::parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / chunks, c = task % chunks;
        const int64_t j0 = b * inner + c * kChunk, j1 = b * inner + std::min(inner, (c + 1) * kChunk);
        p[task] = j1 > j0 ? squared_error_sum(m + j0, t + j0, j1 - j0) : 0.0;
      }
    });
    const T* w = weight.data_ptr<T>();
    T* out = per_sample.data_ptr<T>();
    for (int64_t b = 0; b < batch; ++b) {
      double total = 0;
      for (int64_t c = 0; c < chunks; ++c) total += p[b * chunks + c];
      out[b] = T(double(w[b]) * total / double(std::max<int64_t>(inner, 1)));
    }
  });
  return per_sample;
}

at::Tensor diffusion_loss_bwd(const at::Tensor& grad_per_sample, const at::Tensor& model_output,
                              const at::Tensor& target, const at::Tensor& weight) {
  check_batch_tensor(model_output, "model_output");
  check_like(target, model_output, "target");
  const int64_t batch = model_output.size(0);
  TORCH_CHECK(grad_per_sample.numel() == batch && weight.numel() == batch, "grad_per_sample and weight must be [B]");
  auto grad = at::empty_like(model_output);
  const int64_t n = model_output.numel(), inner = n / batch;
  if (n == 0) return grad;
  // 2 w_b g_b / inner per sample, in double, then one pass over the data.
  auto scale = (grad_per_sample.to(at::kDouble).contiguous() * weight.to(at::kDouble) * (2.0 / double(inner)))
                   .to(model_output.scalar_type())
                   .contiguous();
  AT_DISPATCH_FLOATING_TYPES(model_output.scalar_type(), "diffusion_loss_bwd", [&] {
    using T = scalar_t;
    const T* m = model_output.data_ptr<T>();
    const T* t = target.data_ptr<T>();
    const T* s = scale.data_ptr<T>();
    T* g = grad.data_ptr<T>();
    at::parallel_for(0, n, kChunk, [&](int64_t begin, int64_t end) {
      by_sample(begin, end, inner, [&](int64_t b, int64_t j0, int64_t j1) {
        const T sb = s[b];
        for (int64_t j = j0; j < j1; ++j) g[j] = sb * (m[j] - t[j]);
      });
    });
  });
  return grad;
}

// ---------------------------------------------------------------- generic sampler step
//
// Per sample b (coefficient row c = coefs[b]):
//   m   = uncond + g (cond - uncond)           (classifier-free guidance, when uncond is given)
//   x0  = clamp(c0 x + c1 m, -r, r)            (clamp only when clip)
//   eps = c2 x + c3 m + c4 x0
//   out = c5 x0 + c6 eps + c7 x + c8 prev_x0 + c9 noise
// Writes out, and x0 when write_x0 (DPM-Solver++ keeps it for the next step).

constexpr int64_t kStepCoefs = 10;

std::tuple<at::Tensor, at::Tensor> diffusion_step(const at::Tensor& sample, const at::Tensor& model_output,
                                                  const std::optional<at::Tensor>& uncond,
                                                  const std::optional<at::Tensor>& prev_x0,
                                                  const std::optional<at::Tensor>& noise, const at::Tensor& coefs,
                                                  double guidance_scale, bool clip, double clip_range, int64_t seed,
                                                  bool write_x0) {
  check_batch_tensor(sample, "sample");
  check_like(model_output, sample, "model_output");
  check_like(uncond, sample, "uncond");
  check_like(prev_x0, sample, "prev_x0");
  check_like(noise, sample, "noise");
  check_coefs(coefs, sample, kStepCoefs);
  auto out = at::empty_like(sample);
  auto x0_out = write_x0 ? at::empty_like(sample) : at::empty({0}, sample.options());
  const int64_t n = sample.numel(), inner = n / sample.size(0);
  if (n == 0) return {out, x0_out};
  AT_DISPATCH_FLOATING_TYPES(sample.scalar_type(), "diffusion_step", [&] {
    using T = scalar_t;
    const T* x = sample.data_ptr<T>();
    const T* cond = model_output.data_ptr<T>();
    const T* unc = uncond ? uncond->data_ptr<T>() : nullptr;
    const T* prev = prev_x0 ? prev_x0->data_ptr<T>() : nullptr;
    const T* cf = coefs.data_ptr<T>();
    T* o = out.data_ptr<T>();
    T* x0w = write_x0 ? x0_out.data_ptr<T>() : nullptr;
    const T g = T(guidance_scale), lo = T(-clip_range), hi = T(clip_range);
    for_each_chunk<T>(n, noise ? noise->data_ptr<T>() : nullptr, seed, [&](int64_t i0, int64_t i1, const T* eps_noise) {
      by_sample(i0, i1, inner, [&](int64_t b, int64_t j0, int64_t j1) {
        const T* c = cf + b * kStepCoefs;
        const T c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3], c4 = c[4], c5 = c[5], c6 = c[6], c7 = c[7], c8 = c[8],
                c9 = c[9];
        const T* z = eps_noise ? eps_noise + (j0 - i0) : nullptr;
        for (int64_t j = j0; j < j1; ++j) {
          const T xj = x[j];
          T m = cond[j];
          if (unc) m = unc[j] + g * (m - unc[j]);
          T x0 = c0 * xj + c1 * m;
          if (clip) x0 = std::min(std::max(x0, lo), hi);
          const T eps = c2 * xj + c3 * m + c4 * x0;
          T r = c5 * x0 + c6 * eps + c7 * xj;
          if (prev) r += c8 * prev[j];
          if (z) r += c9 * z[j - j0];
          o[j] = r;
          if (x0w) x0w[j] = x0;
        }
      });
    });
  });
  return {out, x0_out};
}

}  // namespace

TORCH_LIBRARY_IMPL(sslfast, CPU, m) {
  m.impl("diffusion_q_sample", &diffusion_q_sample);
  m.impl("diffusion_loss_fwd", &diffusion_loss_fwd);
  m.impl("diffusion_loss_bwd", &diffusion_loss_bwd);
  m.impl("diffusion_step", &diffusion_step);
}

}  // namespace sslfast::cpu
