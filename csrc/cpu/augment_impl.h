// The augmentation CPU kernels and their op entry points, compiled once per instruction set by
// csrc/cpu/augment.cpp (see isa.h): no include guard; SSLFAST_AVX2 says which pass this is.

namespace {

// PyTorch's bilinear source index (upsample_bilinear2d, align_corners=False): for output pixel
// `dst` of `out` over an input extent `in`, the two input pixels and the second one's weight.
// In the compute dtype T, as PyTorch computes the index in its accumulation type.
template <typename T>
struct Tap {
  int64_t lo, hi;
  T w_hi;
};

template <typename T>
inline Tap<T> bilinear_tap(int64_t dst, int64_t in, int64_t out) {
  const T scale = T(in) / T(out);
  const T src = std::max(scale * (T(dst) + T(0.5)) - T(0.5), T(0));
  const int64_t lo = std::min<int64_t>(int64_t(src), in - 1);
  const int64_t hi = lo + (lo < in - 1 ? 1 : 0);
  return {lo, hi, src - T(lo)};
}

struct Box {
  int64_t top, left, height, width;
};

std::vector<Box> checked_boxes(const at::Tensor& boxes_, int64_t batch, int64_t height, int64_t width) {
  CHECK_CPU(boxes_);
  TORCH_CHECK(boxes_.dim() == 2 && boxes_.size(0) == batch && boxes_.size(1) == 4, "boxes must have shape (", batch,
              ", 4), got ", boxes_.sizes());
  TORCH_CHECK(at::isIntegralType(boxes_.scalar_type(), false), "boxes must be an integer tensor, got ",
              boxes_.scalar_type());
  const at::Tensor boxes = boxes_.to(at::kLong).contiguous();
  const int64_t* b = boxes.const_data_ptr<int64_t>();
  std::vector<Box> out(batch);
  for (int64_t i = 0; i < batch; ++i) {
    out[i] = {b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]};
    const Box& x = out[i];
    TORCH_CHECK_VALUE(x.height >= 1 && x.width >= 1 && x.top >= 0 && x.left >= 0 && x.top + x.height <= height &&
                          x.left + x.width <= width,
                      "boxes[", i, "] = (", x.top, ", ", x.left, ", ", x.height, ", ", x.width,
                      ") must lie inside the ", height, " x ", width, " image");
  }
  return out;
}

std::vector<uint8_t> checked_flips(const at::Tensor& flips_, int64_t batch) {
  CHECK_CPU(flips_);
  TORCH_CHECK(flips_.dim() == 1 && flips_.size(0) == batch, "flips must have shape (", batch, "), got ",
              flips_.sizes());
  const at::Tensor flips = flips_.to(at::kByte).contiguous();
  const uint8_t* f = flips.const_data_ptr<uint8_t>();
  return std::vector<uint8_t>(f, f + batch);
}

void check_images(const at::Tensor& images) {
  CHECK_CPU(images);
  TORCH_CHECK(images.dim() == 4, "images must be [B, C, H, W], got shape ", images.sizes());
  TORCH_CHECK(at::isFloatingType(images.scalar_type()), "images must be floating point, got ", images.scalar_type());
}

// out[b, c] = the box of images[b, c] resampled to out_h x out_w (mirrored when flips[b]) + noise.
at::Tensor augment_images_fwd(const at::Tensor& images_, const at::Tensor& boxes, const at::Tensor& flips,
                              double noise_std, int64_t seed, std::optional<at::Generator> generator, int64_t out_h,
                              int64_t out_w) {
  check_images(images_);
  TORCH_CHECK_VALUE(out_h >= 1 && out_w >= 1, "size must be >= 1, got ", out_h, " x ", out_w);
  const int64_t batch = images_.size(0), channels = images_.size(1), height = images_.size(2), width = images_.size(3);
  const std::vector<Box> box = checked_boxes(boxes, batch, height, width);
  const std::vector<uint8_t> flip = checked_flips(flips, batch);
  const auto dtype = images_.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor images = images_.to(dtype).contiguous();
  at::Tensor out = empty_output({batch, channels, out_h, out_w}, images.options());
  const int64_t n = out.numel(), area = out_h * out_w;
  const bool noisy = noise_std != 0.0;
  const uint64_t key = noisy ? uint64_t(noise_key(seed, generator)) : 0;
  AT_DISPATCH_FLOATING_TYPES(dtype, "augment_images_fwd", [&] {
    using T = scalar_t;
    const T* src = images.const_data_ptr<T>();
    T* dst = out.data_ptr<T>();
    at::parallel_for(0, batch * channels, std::max<int64_t>(1, 4096 / area), [&](int64_t p0, int64_t p1) {
      std::vector<Tap<T>> rows(out_h), cols(out_w);
      for (int64_t plane = p0; plane < p1; ++plane) {
        const int64_t b = plane / channels;
        const Box& x = box[b];
        for (int64_t i = 0; i < out_h; ++i) rows[i] = bilinear_tap<T>(i, x.height, out_h);
        for (int64_t j = 0; j < out_w; ++j) cols[j] = bilinear_tap<T>(flip[b] ? out_w - 1 - j : j, x.width, out_w);
        const T* in = src + plane * height * width + x.top * width + x.left;
        T* o = dst + plane * area;
        for (int64_t i = 0; i < out_h; ++i) {
          const Tap<T> r = rows[i];
          const T* lo_row = in + r.lo * width;
          const T* hi_row = in + r.hi * width;
          const T h1 = T(r.w_hi), h0 = T(1) - h1;
          for (int64_t j = 0; j < out_w; ++j) {
            const Tap<T> c = cols[j];
            const T w1 = T(c.w_hi), w0 = T(1) - w1;
            T v = h0 * (w0 * lo_row[c.lo] + w1 * lo_row[c.hi]) + h1 * (w0 * hi_row[c.lo] + w1 * hi_row[c.hi]);
            if (noisy) v += T(noise_std) * T(philox_normal_at(key, (o - dst) + i * out_w + j, n));
            o[i * out_w + j] = v;
          }
        }
      }
    });
  });
  return out.scalar_type() == images_.scalar_type() ? out : out.to(images_.scalar_type());
}

// The adjoint of the resampling: each output pixel's gradient back to its four taps. One
// (sample, channel) plane per task, pixels in a fixed order: deterministic, no atomics.
at::Tensor augment_images_bwd(const at::Tensor& grad_, const at::Tensor& boxes, const at::Tensor& flips, int64_t height,
                              int64_t width) {
  check_images(grad_);
  const int64_t batch = grad_.size(0), channels = grad_.size(1), out_h = grad_.size(2), out_w = grad_.size(3);
  const int64_t area = std::max<int64_t>(1, out_h * out_w);
  const std::vector<Box> box = checked_boxes(boxes, batch, height, width);
  const std::vector<uint8_t> flip = checked_flips(flips, batch);
  const auto dtype = grad_.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor grad = grad_.to(dtype).contiguous();
  at::Tensor out = at::zeros({batch, channels, height, width}, grad.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "augment_images_bwd", [&] {
    using T = scalar_t;
    const T* g = grad.const_data_ptr<T>();
    T* dst = out.data_ptr<T>();
    at::parallel_for(0, batch * channels, std::max<int64_t>(1, 4096 / area), [&](int64_t p0, int64_t p1) {
      std::vector<Tap<T>> rows(out_h), cols(out_w);
      for (int64_t plane = p0; plane < p1; ++plane) {
        const int64_t b = plane / channels;
        const Box& x = box[b];
        for (int64_t i = 0; i < out_h; ++i) rows[i] = bilinear_tap<T>(i, x.height, out_h);
        for (int64_t j = 0; j < out_w; ++j) cols[j] = bilinear_tap<T>(flip[b] ? out_w - 1 - j : j, x.width, out_w);
        T* in = dst + plane * height * width + x.top * width + x.left;
        const T* gp = g + plane * out_h * out_w;
        for (int64_t i = 0; i < out_h; ++i) {
          const Tap<T> r = rows[i];
          const T h1 = T(r.w_hi), h0 = T(1) - h1;
          for (int64_t j = 0; j < out_w; ++j) {
            const Tap<T> c = cols[j];
            const T w1 = T(c.w_hi), w0 = T(1) - w1, v = gp[i * out_w + j];
            in[r.lo * width + c.lo] += h0 * w0 * v;
            in[r.lo * width + c.hi] += h0 * w1 * v;
            in[r.hi * width + c.lo] += h1 * w0 * v;
            in[r.hi * width + c.hi] += h1 * w1 * v;
          }
        }
      }
    });
  });
  return out.scalar_type() == grad_.scalar_type() ? out : out.to(grad_.scalar_type());
}

// x with entries (or, per_column, columns of the last dimension) zeroed where
// uniform(seed, index) < p: the mask is never stored; the backward is this op on the gradient.
at::Tensor drop_mask_fwd(const at::Tensor& x_, double p, int64_t seed, bool per_column) {
  CHECK_CPU(x_);
  TORCH_CHECK(at::isFloatingType(x_.scalar_type()), "x must be floating point, got ", x_.scalar_type());
  TORCH_CHECK_VALUE(p >= 0 && p <= 1, "p must be in [0, 1], got ", p);
  TORCH_CHECK(!per_column || x_.dim() >= 1, "per_column needs x with at least one dimension");
  const at::Tensor x = x_.contiguous();
  at::Tensor out = empty_output_like(x);
  const int64_t n = x.numel(), columns = per_column ? x.size(-1) : n;
  if (n == 0) return out;
  const float pf = float(p);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "drop_mask_fwd", [&] {
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    // x times a 0 / 1 factor, as the reference (x * keep): a dropped NaN stays NaN. The factors
    // come from keep_factors (vectorized hash, keep_factors.h) a block at a time, then one
    // multiply per entry that the compiler vectorizes.
    if (per_column) {
      std::vector<float> factors(columns);
      keep_factors(uint64_t(seed), 0, columns, pf, factors.data());
      std::vector<scalar_t> keep(factors.begin(), factors.end());
      const scalar_t* k = keep.data();
      at::parallel_for(0, n / columns, std::max<int64_t>(1, 16384 / columns), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const scalar_t* row = in + r * columns;
          scalar_t* dst = o + r * columns;
          for (int64_t c = 0; c < columns; ++c) dst[c] = row[c] * k[c];
        }
      });
    } else {
      constexpr int64_t kBlock = 4096;
      at::parallel_for(0, n, 16384, [&](int64_t i0, int64_t i1) {
        float factors[kBlock];
        for (int64_t b = i0; b < i1; b += kBlock) {
          const int64_t len = std::min(kBlock, i1 - b);
          keep_factors(uint64_t(seed), uint64_t(b), len, pf, factors);
          for (int64_t k = 0; k < len; ++k) o[b + k] = in[b + k] * scalar_t(factors[k]);
        }
      });
    }
  });
  return out;
}

}  // namespace
