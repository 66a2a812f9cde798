// The diffusion CPU kernels and their op entry points, compiled once per instruction set by
// csrc/cpu/diffusion.cpp (see isa.h): no include guard; SSLFAST_AVX2 says which pass this is.
#include "tile_math.h"

namespace {

constexpr int64_t kChunk = 16384;      // elements per parallel task (and per loss partial sum)
constexpr int64_t kGroupChunk = 2048;  // Philox blocks per noise task (4 normals each)

// ---------------------------------------------------------------- Philox4x32-10 on 8 lanes

#if SSLFAST_AVX2
// (hi, lo) 32-bit halves of the 64-bit products a * x on 8 lanes.
inline void mulhilo8(__m256i a, __m256i x, __m256i& hi, __m256i& lo) {
  lo = _mm256_mullo_epi32(x, a);
  const __m256i even = _mm256_mul_epu32(x, a);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), a);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

inline __m256 uniform8(__m256i x) {
  const __m256i folded = _mm256_xor_si256(x, _mm256_srai_epi32(x, 31));  // s < 0 ? -s - 1 : s
  return _mm256_mul_ps(_mm256_cvtepi32_ps(folded), _mm256_set1_ps(4.6566127342e-10f));
}

// sin and cos of x in [0, 2 pi]: quadrant reduction (Cody-Waite) + Cephes sinf / cosf polynomials.
inline void sincos8(__m256 x, __m256& sin_x, __m256& cos_x) {
  const __m256 jf = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(0.63661977236758134f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(jf, _mm256_set1_ps(1.57079637050628662109375f), x);
  r = _mm256_fnmadd_ps(jf, _mm256_set1_ps(-4.371139000186243e-08f), r);
  const __m256 z = _mm256_mul_ps(r, r);
  __m256 sp = _mm256_fmadd_ps(_mm256_set1_ps(-1.9515295891e-4f), z, _mm256_set1_ps(8.3321608736e-3f));
  sp = _mm256_fmadd_ps(sp, z, _mm256_set1_ps(-1.6666654611e-1f));
  sp = _mm256_fmadd_ps(_mm256_mul_ps(sp, z), r, r);
  __m256 cp = _mm256_fmadd_ps(_mm256_set1_ps(2.443315711809948e-5f), z, _mm256_set1_ps(-1.388731625493765e-3f));
  cp = _mm256_fmadd_ps(cp, z, _mm256_set1_ps(4.166664568298827e-2f));
  cp = _mm256_fmadd_ps(_mm256_mul_ps(cp, z), z, _mm256_fnmadd_ps(_mm256_set1_ps(0.5f), z, _mm256_set1_ps(1.0f)));
  const __m256i j = _mm256_cvtps_epi32(jf);
  const __m256 swap =
      _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(j, _mm256_set1_epi32(1)), _mm256_set1_epi32(1)));
  const __m256 s = _mm256_blendv_ps(sp, cp, swap), c = _mm256_blendv_ps(cp, sp, swap);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256i two = _mm256_set1_epi32(2);
  const __m256 neg_s = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(j, two), 30));
  const __m256 neg_c =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(_mm256_add_epi32(j, _mm256_set1_epi32(1)), two), 30));
  sin_x = _mm256_xor_ps(s, _mm256_and_ps(neg_s, sign));
  cos_x = _mm256_xor_ps(c, _mm256_and_ps(neg_c, sign));
}

// philox_normal4 for the 8 blocks g0 .. g0 + 7 (their low counter words must not wrap).
inline void philox_normal4x8(uint64_t seed, uint64_t g0, float* z0, float* z1, float* z2, float* z3) {
  __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(int32_t(uint32_t(g0))), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256i c1 = _mm256_set1_epi32(int32_t(uint32_t(g0 >> 32)));
  __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
  __m256i k0 = _mm256_set1_epi32(int32_t(uint32_t(seed))), k1 = _mm256_set1_epi32(int32_t(uint32_t(seed >> 32)));
  const __m256i round_a = _mm256_set1_epi32(int32_t(0xD2511F53u)), round_b = _mm256_set1_epi32(int32_t(0xCD9E8D57u));
  const __m256i key_a = _mm256_set1_epi32(int32_t(0x9E3779B9u)), key_b = _mm256_set1_epi32(int32_t(0xBB67AE85u));
  for (int round = 0; round < 10; ++round) {
    __m256i hi_b, lo_b, hi_a, lo_a;
    mulhilo8(round_b, c2, hi_b, lo_b);
    mulhilo8(round_a, c0, hi_a, lo_a);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi_b, c1), k0);
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi_a, c3), k1);
    c1 = lo_b;
    c3 = lo_a;
    k0 = _mm256_add_epi32(k0, key_a);
    k1 = _mm256_add_epi32(k1, key_b);
  }
  const __m256 two_pi = _mm256_set1_ps(6.283185307179586f), floor_u = _mm256_set1_ps(1.0e-7f);
  const __m256i pairs[2][2] = {{c0, c1}, {c2, c3}};
  float* outs[4] = {z0, z1, z2, z3};
  for (int p = 0; p < 2; ++p) {
    const __m256 u1 = _mm256_max_ps(floor_u, uniform8(pairs[p][0]));
    const __m256 theta = _mm256_mul_ps(two_pi, uniform8(pairs[p][1]));
    const __m256 r = _mm256_sqrt_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), log8(u1)));
    __m256 s, c;
    sincos8(theta, s, c);
    _mm256_storeu_ps(outs[2 * p], _mm256_mul_ps(r, c));
    _mm256_storeu_ps(outs[2 * p + 1], _mm256_mul_ps(r, s));
  }
}
#endif

// The normals of blocks g0 .. g0 + count - 1 into out[k * stride + j] (k = 0..3).
template <typename T>
void philox_normals(uint64_t seed, int64_t g0, int64_t count, T* out, int64_t stride) {
  int64_t j = 0;
#if SSLFAST_AVX2
  alignas(32) float lanes[4][8];
  for (; j + 8 <= count && uint32_t(g0 + j) <= 0xFFFFFFF7u; j += 8) {
    if constexpr (std::is_same_v<T, float>) {
      philox_normal4x8(seed, uint64_t(g0 + j), out + j, out + stride + j, out + 2 * stride + j, out + 3 * stride + j);
    } else {
      philox_normal4x8(seed, uint64_t(g0 + j), lanes[0], lanes[1], lanes[2], lanes[3]);
      for (int k = 0; k < 4; ++k)
        for (int l = 0; l < 8; ++l) out[k * stride + j + l] = T(lanes[k][l]);
    }
  }
#endif
  for (; j < count; ++j) {
    const Normal4 z = philox_normal4(seed, uint64_t(g0 + j));
    for (int k = 0; k < 4; ++k) out[k * stride + j] = T(z.v[k]);
  }
}

// Calls body(i0, i1, noise) over [0, n) in parallel chunks; noise[j] is the noise of element
// i0 + j (from the tensor, drawn in-kernel from the seed, or nullptr when there is none).
template <typename T, typename Body>
void for_each_chunk(int64_t n, const T* noise, int64_t seed, Body body) {
  // Chunks sit at fixed multiples of the chunk size, whatever the thread count: every element
  // takes the same (vector or scalar) code path in every run, so results are bitwise stable.
  if (noise != nullptr || seed < 0) {
    at::parallel_for(0, (n + kChunk - 1) / kChunk, 1, [&](int64_t begin, int64_t end) {
      for (int64_t chunk = begin; chunk < end; ++chunk) {
        const int64_t i0 = chunk * kChunk, i1 = std::min(n, i0 + kChunk);
        body(i0, i1, noise ? noise + i0 : nullptr);
      }
    });
    return;
  }
  const int64_t groups = (n + 3) / 4;
  at::parallel_for(0, (groups + kGroupChunk - 1) / kGroupChunk, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> normals(4 * kGroupChunk);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t g0 = chunk * kGroupChunk, count = std::min(groups, g0 + kGroupChunk) - g0;
      philox_normals<T>(uint64_t(seed), g0, count, normals.data(), kGroupChunk);
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
  TORCH_CHECK(x.dim() >= 1 && x.size(0) > 0, name, " must be [B, ...] with B > 0, got shape ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), name, " must be floating point, got ", x.scalar_type());
}

// The kernels compute in float32 / float64: half inputs are widened, any strides made contiguous;
// outputs go back in the input dtype (finish).
at::ScalarType compute_dtype(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

at::Tensor compute_input(const at::Tensor& x, at::ScalarType dtype) { return x.to(dtype).contiguous(); }

std::optional<at::Tensor> compute_input(const std::optional<at::Tensor>& x, at::ScalarType dtype) {
  return x ? std::optional<at::Tensor>(compute_input(*x, dtype)) : std::nullopt;
}

at::Tensor finish(const at::Tensor& out, const at::Tensor& like) {
  return out.scalar_type() == like.scalar_type() ? out : out.to(like.scalar_type());
}

void check_like(const std::optional<at::Tensor>& y, const at::Tensor& x, const char* name) {
  if (!y) return;
  check_batch_tensor(*y, name);
  TORCH_CHECK(y->sizes() == x.sizes(), name, " must have shape ", x.sizes(), ", got ", y->sizes());
}

// Rows t[b] of a per-timestep table [T, K] (or [T] for K = 1) as a [B, K] array in T: the
// timesteps are read here, on the host, so this is also where their range is checked.
template <typename T>
std::vector<T> gather_rows(const at::Tensor& table, const at::Tensor& t, int64_t batch, int64_t k) {
  TORCH_CHECK(table.device().is_cpu() && at::isFloatingType(table.scalar_type()),
              "table must be a floating-point CPU tensor");
  TORCH_CHECK((k == 1 && table.dim() == 1) || (table.dim() == 2 && table.size(1) == k), "table must have ", k,
              " columns, got shape ", table.sizes());
  TORCH_CHECK(t.device().is_cpu(), "t must be a CPU tensor, got ", t.device());
  TORCH_CHECK_TYPE(at::isIntegralType(t.scalar_type(), false), "t must be an integer tensor, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 0 || (t.dim() == 1 && (t.size(0) == 1 || t.size(0) == batch)),
                    "t must be a scalar or have shape (", batch, ",), got ", t.sizes());
  const int64_t steps = table.size(0);
  const at::Tensor rows = table.to(c10::CppTypeToScalarType<T>::value).contiguous();
  const at::Tensor ts = t.to(at::kLong).contiguous();
  const T* r = rows.const_data_ptr<T>();
  const int64_t* tp = ts.const_data_ptr<int64_t>();
  std::vector<T> out(batch * k);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t step = tp[ts.numel() == 1 ? 0 : b];
    TORCH_CHECK_VALUE(step >= 0 && step < steps, "t must be in [0, ", steps, "), got ", step);
    std::copy(r + step * k, r + (step + 1) * k, out.begin() + b * k);
  }
  return out;
}

// ---------------------------------------------------------------- q_sample

std::tuple<at::Tensor, at::Tensor> q_sample_fwd(const at::Tensor& x0_, const std::optional<at::Tensor>& noise_,
                                                const at::Tensor& table, const at::Tensor& t, int64_t seed,
                                                std::optional<at::Generator> generator, bool v_target) {
  check_batch_tensor(x0_, "x0");
  check_like(noise_, x0_, "noise");
  const auto dtype = compute_dtype(x0_);
  const at::Tensor x0 = compute_input(x0_, dtype);
  const auto noise = compute_input(noise_, dtype);
  auto x_t = empty_output_like(x0);
  auto target = empty_output_like(x0);
  const int64_t n = x0.numel(), batch = x0.size(0), inner = n / batch;
  AT_DISPATCH_FLOATING_TYPES(dtype, "q_sample_fwd", [&] {
    using T = scalar_t;
    const std::vector<T> coefs = gather_rows<T>(table, t, batch, 2);
    const int64_t key = noise ? -1 : noise_key(seed, generator);
    if (n == 0) return;
    const T* x = x0.data_ptr<T>();
    const T* c = coefs.data();
    T* xt = x_t.data_ptr<T>();
    T* tg = target.data_ptr<T>();
    for_each_chunk<T>(n, noise ? noise->data_ptr<T>() : nullptr, key, [&](int64_t i0, int64_t i1, const T* eps) {
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
  return {finish(x_t, x0_), finish(target, x0_)};
}

// d/dx0 of (x_t, target) = (a x0 + s eps, eps or a eps - s x0): a g_xt (- s g_target for v).
at::Tensor q_sample_bwd(const std::optional<at::Tensor>& grad_x_t_, const std::optional<at::Tensor>& grad_target_,
                        const at::Tensor& table, const at::Tensor& t, bool v_target) {
  TORCH_CHECK(grad_x_t_ || grad_target_, "q_sample_bwd needs grad_x_t or grad_target");
  const at::Tensor& like = grad_x_t_ ? *grad_x_t_ : *grad_target_;
  check_batch_tensor(like, "grad_x_t");
  check_like(grad_target_, like, "grad_target");
  const auto dtype = compute_dtype(like);
  const auto g_xt = compute_input(grad_x_t_, dtype);
  const auto g_tg = v_target ? compute_input(grad_target_, dtype) : std::nullopt;
  auto grad = at::empty(like.sizes(), like.options().dtype(dtype));
  const int64_t n = grad.numel(), batch = grad.size(0), inner = n / batch;
  AT_DISPATCH_FLOATING_TYPES(dtype, "q_sample_bwd", [&] {
    using T = scalar_t;
    const std::vector<T> coefs = gather_rows<T>(table, t, batch, 2);
    const T* c = coefs.data();
    const T* gx = g_xt ? g_xt->data_ptr<T>() : nullptr;
    const T* gt = g_tg ? g_tg->data_ptr<T>() : nullptr;
    T* out = grad.data_ptr<T>();
    for_each_chunk<T>(n, nullptr, -1, [&](int64_t i0, int64_t i1, const T*) {
      by_sample(i0, i1, inner, [&](int64_t b, int64_t j0, int64_t j1) {
        const T a = c[2 * b], s = c[2 * b + 1];
        for (int64_t j = j0; j < j1; ++j) {
          T v = gx ? a * gx[j] : T(0);
          if (gt) v -= s * gt[j];
          out[j] = v;
        }
      });
    });
  });
  return finish(grad, like);
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

// reduction: 0 none ([B] per-sample losses), 1 mean, 2 sum (over the batch).
void check_reduction(int64_t reduction) {
  TORCH_CHECK_VALUE(reduction >= 0 && reduction <= 2, "reduction must be 0 (none), 1 (mean) or 2 (sum), got ",
                    reduction);
}

// Per-sample w[t_b] * mean((model_output - target)^2), reduced over the batch; float32 (float64
// for float64) whatever the input dtype.
at::Tensor diffusion_loss_fwd(const at::Tensor& model_output_, const at::Tensor& target_, const at::Tensor& weights,
                              const at::Tensor& t, int64_t reduction) {
  check_batch_tensor(model_output_, "model_output");
  check_like(target_, model_output_, "target");
  check_reduction(reduction);
  const auto dtype = compute_dtype(model_output_);
  const at::Tensor model_output = compute_input(model_output_, dtype), target = compute_input(target_, dtype);
  const int64_t batch = model_output.size(0);
  const int64_t inner = model_output.numel() / batch;
  const int64_t chunks = std::max<int64_t>(1, (inner + kChunk - 1) / kChunk);
  // Partial sums per (sample, chunk), added in a fixed order: independent of the thread count.
  std::vector<double> partial(batch * chunks, 0.0);
  at::Tensor out = reduction == 0 ? at::empty({batch}, model_output.options()) : at::empty({}, model_output.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "diffusion_loss_fwd", [&] {
    using T = scalar_t;
    const std::vector<T> w = gather_rows<T>(weights, t, batch, 1);
    const T* m = model_output.data_ptr<T>();
    const T* tg = target.data_ptr<T>();
    double* p = partial.data();
    at::parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / chunks, c = task % chunks;
        const int64_t j0 = b * inner + c * kChunk, j1 = b * inner + std::min(inner, (c + 1) * kChunk);
        p[task] = j1 > j0 ? squared_error_sum(m + j0, tg + j0, j1 - j0) : 0.0;
      }
    });
    T* o = out.data_ptr<T>();
    double total = 0;
    for (int64_t b = 0; b < batch; ++b) {
      double sum = 0;
      for (int64_t c = 0; c < chunks; ++c) sum += p[b * chunks + c];
      const double per_sample = double(w[b]) * sum / double(std::max<int64_t>(inner, 1));
      if (reduction == 0) o[b] = T(per_sample);
      total += double(T(per_sample));  // the per-sample values, rounded as eager's reduction sees them
    }
    if (reduction != 0) o[0] = T(reduction == 1 ? total / double(batch) : total);
  });
  return out;
}

at::Tensor diffusion_loss_bwd(const at::Tensor& grad_, const at::Tensor& model_output_, const at::Tensor& target_,
                              const at::Tensor& weights, const at::Tensor& t, int64_t reduction) {
  check_batch_tensor(model_output_, "model_output");
  check_like(target_, model_output_, "target");
  check_reduction(reduction);
  const auto dtype = compute_dtype(model_output_);
  const at::Tensor model_output = compute_input(model_output_, dtype), target = compute_input(target_, dtype);
  const int64_t batch = model_output.size(0);
  TORCH_CHECK(grad_.numel() == (reduction == 0 ? batch : 1), "grad must have ", reduction == 0 ? batch : 1,
              " elements, got ", grad_.numel());
  const at::Tensor upstream = grad_.to(at::kDouble).contiguous();
  auto grad = empty_output_like(model_output);
  const int64_t n = model_output.numel(), inner = n / batch;
  AT_DISPATCH_FLOATING_TYPES(dtype, "diffusion_loss_bwd", [&] {
    using T = scalar_t;
    const std::vector<T> w = gather_rows<T>(weights, t, batch, 1);
    const double* g = upstream.const_data_ptr<double>();
    // 2 w_b g_b / inner per sample, in double, then one pass over the data.
    std::vector<T> scale(batch);
    for (int64_t b = 0; b < batch; ++b) {
      const double gb = reduction == 0 ? g[b] : (reduction == 1 ? g[0] / double(batch) : g[0]);
      scale[b] = T(2.0 * double(w[b]) * gb / double(std::max<int64_t>(inner, 1)));
    }
    if (n == 0) return;
    const T* m = model_output.data_ptr<T>();
    const T* tg = target.data_ptr<T>();
    T* out = grad.data_ptr<T>();
    for_each_chunk<T>(n, nullptr, -1, [&](int64_t i0, int64_t i1, const T*) {
      by_sample(i0, i1, inner, [&](int64_t b, int64_t j0, int64_t j1) {
        const T sb = scale[b];
        for (int64_t j = j0; j < j1; ++j) out[j] = sb * (m[j] - tg[j]);
      });
    });
  });
  return finish(grad, model_output_);
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

template <typename T>
struct StepArgs {
  const T *x, *cond, *unc, *prev, *cf;
  T *out, *x0w;
  T g, lo, hi;
};

// One sample's segment. The optional terms are template flags, so each instantiation is a
// branch-free loop the compiler vectorizes (and an absent term costs no bytes and no 0 * NaN).
template <typename T, bool UNCOND, bool PREV, bool NOISE, bool CLIP, bool WRITE_X0>
void step_segment(const StepArgs<T>& a, int64_t b, int64_t j0, int64_t j1, const T* z) {
  const T* c = a.cf + b * kStepCoefs;
  const T c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3], c4 = c[4], c5 = c[5], c6 = c[6], c7 = c[7], c8 = c[8], c9 = c[9],
          g = a.g, lo = a.lo, hi = a.hi;
  const T* __restrict__ x = a.x;
  const T* __restrict__ cond = a.cond;
  const T* __restrict__ unc = a.unc;
  const T* __restrict__ prev = a.prev;
  T* __restrict__ o = a.out;
  T* __restrict__ x0w = a.x0w;
  for (int64_t j = j0; j < j1; ++j) {
    const T xj = x[j];
    T m = cond[j];
    if constexpr (UNCOND) m = unc[j] + g * (m - unc[j]);
    T x0 = c0 * xj + c1 * m;
    if constexpr (CLIP) x0 = std::min(std::max(x0, lo), hi);  // NaN stays NaN
    const T eps = c2 * xj + c3 * m + c4 * x0;
    T r = c5 * x0 + c6 * eps + c7 * xj;
    if constexpr (PREV) r += c8 * prev[j];
    if constexpr (NOISE) r += c9 * z[j - j0];
    o[j] = r;
    if constexpr (WRITE_X0) x0w[j] = x0;
  }
}

template <typename T>
using StepFn = void (*)(const StepArgs<T>&, int64_t, int64_t, int64_t, const T*);

template <typename T, bool U, bool P, bool N, bool C>
StepFn<T> pick_x0(bool w) {
  return w ? &step_segment<T, U, P, N, C, true> : &step_segment<T, U, P, N, C, false>;
}
template <typename T, bool U, bool P, bool N>
StepFn<T> pick_clip(bool c, bool w) {
  return c ? pick_x0<T, U, P, N, true>(w) : pick_x0<T, U, P, N, false>(w);
}
template <typename T, bool U, bool P>
StepFn<T> pick_noise(bool n, bool c, bool w) {
  return n ? pick_clip<T, U, P, true>(c, w) : pick_clip<T, U, P, false>(c, w);
}
template <typename T, bool U>
StepFn<T> pick_prev(bool p, bool n, bool c, bool w) {
  return p ? pick_noise<T, U, true>(n, c, w) : pick_noise<T, U, false>(n, c, w);
}
template <typename T>
StepFn<T> pick_step(bool u, bool p, bool n, bool c, bool w) {
  return u ? pick_prev<T, true>(p, n, c, w) : pick_prev<T, false>(p, n, c, w);
}

// Per sample b (coefficient row c = coefs[b]):
//   m   = uncond + g (cond - uncond)           (classifier-free guidance, when uncond is given)
//   x0  = clamp(c0 x + c1 m, -r, r)            (clamp only when clip)
//   eps = c2 x + c3 m + c4 x0
//   out = c5 x0 + c6 eps + c7 x + c8 prev_x0 + c9 noise
// Writes out, and x0 when write_x0 (DPM-Solver++ keeps it for the next step).
// Runs the generic step over the data with per-sample coefficient rows `coefs` [B, 10] (in T).
template <typename T>
void run_step(const at::Tensor& sample, const at::Tensor& model_output, const std::optional<at::Tensor>& uncond,
              const std::optional<at::Tensor>& prev_x0, const std::optional<at::Tensor>& noise, const T* coefs,
              double guidance_scale, bool clip, double clip_range, int64_t key, bool write_x0, at::Tensor& out,
              at::Tensor& x0_out) {
  const int64_t n = sample.numel(), inner = n / sample.size(0);
  if (n == 0) return;
  StepArgs<T> args{sample.data_ptr<T>(),
                   model_output.data_ptr<T>(),
                   uncond ? uncond->data_ptr<T>() : nullptr,
                   prev_x0 ? prev_x0->data_ptr<T>() : nullptr,
                   coefs,
                   out.data_ptr<T>(),
                   write_x0 ? x0_out.data_ptr<T>() : nullptr,
                   T(guidance_scale),
                   T(-clip_range),
                   T(clip_range)};
  const bool has_noise = noise.has_value() || key >= 0;
  const StepFn<T> segment = pick_step<T>(uncond.has_value(), prev_x0.has_value(), has_noise, clip, write_x0);
  for_each_chunk<T>(n, noise ? noise->data_ptr<T>() : nullptr, key, [&](int64_t i0, int64_t i1, const T* z) {
    by_sample(i0, i1, inner,
              [&](int64_t b, int64_t j0, int64_t j1) { segment(args, b, j0, j1, z ? z + (j0 - i0) : nullptr); });
  });
}

struct StepInputs {
  at::Tensor sample, model_output;
  std::optional<at::Tensor> uncond, prev_x0, noise;
  at::Tensor out, x0_out;
};

StepInputs step_inputs(const at::Tensor& sample, const at::Tensor& model_output,
                       const std::optional<at::Tensor>& uncond, const std::optional<at::Tensor>& prev_x0,
                       const std::optional<at::Tensor>& noise, bool write_x0) {
  check_batch_tensor(sample, "sample");
  check_like(model_output, sample, "model_output");
  check_like(uncond, sample, "uncond");
  check_like(prev_x0, sample, "prev_x0");
  check_like(noise, sample, "noise");
  const auto dtype = compute_dtype(sample);
  StepInputs in{compute_input(sample, dtype), compute_input(model_output, dtype), compute_input(uncond, dtype),
                compute_input(prev_x0, dtype), compute_input(noise, dtype)};
  in.out = empty_output_like(in.sample);
  in.x0_out = write_x0 ? empty_output_like(in.sample) : at::empty({0}, in.sample.options());
  return in;
}

// Per sample b (coefficient row c = table[t[b]], or table[b] without t):
//   m   = uncond + g (cond - uncond)           (classifier-free guidance, when uncond is given)
//   x0  = clamp(c0 x + c1 m, -r, r)            (clamp only when clip)
//   eps = c2 x + c3 m + c4 x0
//   out = c5 x0 + c6 eps + c7 x + c8 prev_x0 + c9 noise
// Writes out, and x0 when write_x0 (DPM-Solver++ keeps it for the next step).
std::tuple<at::Tensor, at::Tensor> diffusion_step(const at::Tensor& sample_, const at::Tensor& model_output,
                                                  const std::optional<at::Tensor>& uncond,
                                                  const std::optional<at::Tensor>& prev_x0,
                                                  const std::optional<at::Tensor>& noise, const at::Tensor& table,
                                                  const std::optional<at::Tensor>& t, double guidance_scale, bool clip,
                                                  double clip_range, bool random_noise, int64_t seed,
                                                  std::optional<at::Generator> generator, bool write_x0) {
  StepInputs in = step_inputs(sample_, model_output, uncond, prev_x0, noise, write_x0);
  const int64_t batch = in.sample.size(0);
  AT_DISPATCH_FLOATING_TYPES(in.sample.scalar_type(), "diffusion_step", [&] {
    using T = scalar_t;
    std::vector<T> coefs;
    if (t) {
      coefs = gather_rows<T>(table, *t, batch, kStepCoefs);
    } else {
      TORCH_CHECK(table.device().is_cpu() && table.dim() == 2 && table.size(0) == batch && table.size(1) == kStepCoefs,
                  "table must have shape (", batch, ", ", kStepCoefs, ") without t, got ", table.sizes());
      const at::Tensor rows = table.to(in.sample.scalar_type()).contiguous();
      coefs.assign(rows.const_data_ptr<T>(), rows.const_data_ptr<T>() + batch * kStepCoefs);
    }
    const int64_t key = (random_noise && !in.noise) ? noise_key(seed, generator) : -1;
    run_step<T>(in.sample, in.model_output, in.uncond, in.prev_x0, in.noise, coefs.data(), guidance_scale, clip,
                clip_range, key, write_x0, in.out, in.x0_out);
  });
  return {finish(in.out, sample_), write_x0 ? finish(in.x0_out, sample_) : in.x0_out};
}

// ---------------------------------------------------------------- sigma-parameterized step coefficients
//
// The [B, 10] coefficient rows of the generic step for Euler (EulerDiscreteScheduler, s_churn = 0)
// and DPM-Solver++ 2M (dpmsolver++, midpoint), computed per sample in double from the sigmas:
// one op instead of ~30 [B]-sized torch ops per sampling step. Math: sslfast/reference/diffusion.py.

enum class Prediction { kEpsilon, kSample, kV };

Prediction parse_prediction(c10::string_view name) {
  if (name == "epsilon") return Prediction::kEpsilon;
  if (name == "sample") return Prediction::kSample;
  TORCH_CHECK_VALUE(name == "v_prediction", "prediction_type must be epsilon, sample or v_prediction, got ", name);
  return Prediction::kV;
}

// A scalar or [1] / [B] sigma as a flat double tensor (no copy when it already is one).
at::Tensor sigma_column(const at::Tensor& sigma, int64_t batch, const char* name) {
  TORCH_CHECK(sigma.device().is_cpu(), name, " must be a CPU tensor, got ", sigma.device());
  TORCH_CHECK(sigma.is_floating_point(), name, " must be a floating tensor, got ", sigma.scalar_type());
  TORCH_CHECK(sigma.dim() == 0 || (sigma.dim() == 1 && (sigma.size(0) == 1 || sigma.size(0) == batch)), name,
              " must be a scalar or have shape (", batch, ",), got ", sigma.sizes());
  return sigma.to(at::kDouble).contiguous().reshape({-1});
}

inline double sigma_at(const at::Tensor& column, int64_t b) {
  const double* p = column.const_data_ptr<double>();
  return column.numel() == 1 ? p[0] : p[b];
}

// x0 = c0 x + c1 m from the model output at noise level sigma (into c[0], c[1]).
template <bool DPM>
inline void x0_coefs(Prediction pred, double sigma, double* c) {
  if (pred == Prediction::kSample) {
    c[0] = 0.0;
    c[1] = 1.0;
    return;
  }
  const double norm = std::sqrt(sigma * sigma + 1.0);
  if (DPM) {  // alpha = 1 / norm, sigma_t = sigma / norm
    c[0] = pred == Prediction::kEpsilon ? norm : 1.0 / norm;
    c[1] = pred == Prediction::kEpsilon ? -sigma : -sigma / norm;
  } else {
    c[0] = pred == Prediction::kEpsilon ? 1.0 : 1.0 / (norm * norm);
    c[1] = pred == Prediction::kEpsilon ? -sigma : -sigma / norm;
  }
}

// lambda = log(alpha) - log(sigma_t) of DPMSolverMultistepScheduler, written as diffusers does.
inline double dpm_lambda(double sigma) {
  const double alpha = 1.0 / std::sqrt(sigma * sigma + 1.0);
  return std::log(alpha) - std::log(sigma * alpha);
}

template <typename T>
std::vector<T> sigma_coefs(const at::Tensor& sigma, const at::Tensor& sigma_next,
                           const std::optional<at::Tensor>& sigma_prev, int64_t batch, c10::string_view solver,
                           c10::string_view prediction_type) {
  const bool dpm = solver == "dpmpp_2m";
  TORCH_CHECK_VALUE(dpm || solver == "euler", "solver must be euler or dpmpp_2m, got ", solver);
  TORCH_CHECK_VALUE(dpm || !sigma_prev, "sigma_prev is a DPM-Solver++ 2M input");
  const Prediction pred = parse_prediction(prediction_type);
  const at::Tensor s0 = sigma_column(sigma, batch, "sigma"), s_next = sigma_column(sigma_next, batch, "sigma_next");
  const at::Tensor s1 = sigma_prev ? sigma_column(*sigma_prev, batch, "sigma_prev") : at::Tensor();
  std::vector<T> out(batch * kStepCoefs);
  for (int64_t b = 0; b < batch; ++b) {
    double c[kStepCoefs] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    const double s = sigma_at(s0, b), sn = sigma_at(s_next, b);
    TORCH_CHECK_VALUE(s >= 0 && sn >= 0, "sigma and sigma_next must be >= 0, got ", s, " and ", sn);
    if (dpm) {
      x0_coefs<true>(pred, s, c);
      const double alpha_t = 1.0 / std::sqrt(sn * sn + 1.0);
      const double lambda_s0 = dpm_lambda(s);
      const double h = dpm_lambda(sn) - lambda_s0;
      const double phi = alpha_t * (std::exp(-h) - 1.0);
      if (s1.defined()) {
        const double r0 = (lambda_s0 - dpm_lambda(sigma_at(s1, b))) / h;
        c[5] = -phi * (1.0 + 0.5 / r0);
        c[8] = 0.5 * phi / r0;
      } else {
        c[5] = -phi;
      }
      c[7] = (sn * alpha_t) / (s / std::sqrt(s * s + 1.0));  // sigma_t(next) / sigma_t(this)
    } else {
      x0_coefs<false>(pred, s, c);
      const double ratio = (sn - s) / s;
      c[5] = -ratio;
      c[7] = 1.0 + ratio;
    }
    for (int64_t k = 0; k < kStepCoefs; ++k) out[b * kStepCoefs + k] = T(c[k]);
  }
  return out;
}

// Euler / DPM-Solver++ 2M: the generic step with its coefficients computed from the sigmas here
// (one op per sampling step instead of ~30 [B]-sized torch ops).
std::tuple<at::Tensor, at::Tensor> diffusion_sigma_step(const at::Tensor& sample_, const at::Tensor& model_output,
                                                        const std::optional<at::Tensor>& uncond,
                                                        const std::optional<at::Tensor>& prev_x0,
                                                        const at::Tensor& sigma, const at::Tensor& sigma_next,
                                                        const std::optional<at::Tensor>& sigma_prev,
                                                        c10::string_view solver, c10::string_view prediction_type,
                                                        double guidance_scale, bool write_x0) {
  StepInputs in = step_inputs(sample_, model_output, uncond, prev_x0, std::nullopt, write_x0);
  AT_DISPATCH_FLOATING_TYPES(in.sample.scalar_type(), "diffusion_sigma_step", [&] {
    using T = scalar_t;
    const std::vector<T> coefs =
        sigma_coefs<T>(sigma, sigma_next, sigma_prev, in.sample.size(0), solver, prediction_type);
    run_step<T>(in.sample, in.model_output, in.uncond, in.prev_x0, std::nullopt, coefs.data(), guidance_scale, false,
                1.0, -1, write_x0, in.out, in.x0_out);
  });
  return {finish(in.out, sample_), write_x0 ? finish(in.x0_out, sample_) : in.x0_out};
}

}  // namespace
