// The masking CPU kernels and their op entry points, compiled once per instruction set by
// csrc/cpu/masking.cpp (see isa.h): no include guard; SSLFAST_AVX2 says which pass this is.

namespace {

// Items per parallel chunk so that each chunk moves >= kMinChunkWork elements: waking the
// OpenMP team costs more than a small op itself (benchmarks/NOTES.md).
constexpr int64_t kMinChunkWork = 1 << 16;
inline int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, kMinChunkWork / std::max<int64_t>(1, work_per_item));
}

template <typename T>
inline bool sorts_before(T a, T b, int64_t ia, int64_t ib) {
  const bool na = std::isnan(a), nb = std::isnan(b);
  if (na || nb) return na == nb ? ia < ib : nb;
  if (a != b) return a < b;
  return ia < ib;
}

// dst[0:d] = src[0:d] (+ add[0:d]); computed in opmath (float for half types), rounded once.
template <typename scalar_t>
inline void copy_row(scalar_t* dst, const scalar_t* src, const scalar_t* add, int64_t d) {
  using acc_t = at::opmath_type<scalar_t>;
  if (add == nullptr) {
    std::memcpy(dst, src, sizeof(scalar_t) * d);
  } else {
    for (int64_t k = 0; k < d; ++k) dst[k] = scalar_t(acc_t(src[k]) + acc_t(add[k]));
  }
}

void check_masking_input(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu(), name, " must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.dim() == 3, name, " must be 3-D [N, tokens, D], got shape ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), name, " must be floating point, got ", x.scalar_type());
}

at::Tensor checked_pos_embed(const c10::optional<at::Tensor>& pos_embed, int64_t tokens, const at::Tensor& x) {
  if (!pos_embed.has_value()) return at::Tensor();
  const at::Tensor& pos = *pos_embed;
  CHECK_CPU(pos);
  TORCH_CHECK(pos.numel() == tokens * x.size(2), "pos_embed must have ", tokens, " x ", x.size(2),
              " elements, got shape ", pos.sizes());
  return pos.to(x.scalar_type()).contiguous();
}

// ------------------------------------------------------------------------------ random_masking

template <typename scalar_t, typename noise_t, typename index_t>
void random_masking_kernel(const scalar_t* x, const noise_t* noise, const scalar_t* pos, int64_t n, int64_t prefix,
                           int64_t length, int64_t keep, int64_t d, scalar_t* visible, scalar_t* mask,
                           index_t* ids_restore) {
  const int64_t total = prefix + length, out_rows = prefix + keep;
  Scratch<int64_t> order_scratch(length);
  const int64_t work = (prefix + keep) * d + length * 8;
  at::parallel_for(0, n, grain_for(work), [&](int64_t begin, int64_t end) {
    int64_t* order = order_scratch.get();
    for (int64_t s = begin; s < end; ++s) {
      const noise_t* u = noise + s * length;
      for (int64_t i = 0; i < length; ++i) order[i] = i;
      std::sort(order, order + length, [u](int64_t a, int64_t b) { return sorts_before(u[a], u[b], a, b); });
      index_t* restore = ids_restore + s * length;
      scalar_t* m = mask + s * length;
      for (int64_t rank = 0; rank < length; ++rank) {
        restore[order[rank]] = index_t(rank);
        m[order[rank]] = scalar_t(rank < keep ? 0 : 1);
      }
      const scalar_t* xs = x + s * total * d;
      scalar_t* out = visible + s * out_rows * d;
      for (int64_t j = 0; j < prefix; ++j) copy_row(out + j * d, xs + j * d, pos ? pos + j * d : nullptr, d);
      for (int64_t k = 0; k < keep; ++k) {
        const int64_t src = prefix + order[k];
        copy_row(out + (prefix + k) * d, xs + src * d, pos ? pos + src * d : nullptr, d);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> random_masking_fwd(const at::Tensor& x_, const at::Tensor& noise_,
                                                                  const c10::optional<at::Tensor>& pos_embed,
                                                                  int64_t len_keep, int64_t num_prefix_tokens,
                                                                  bool int32_indices) {
  check_masking_input(x_, "x");
  CHECK_CPU(noise_);
  const int64_t n = x_.size(0), total = x_.size(1), d = x_.size(2), prefix = num_prefix_tokens;
  TORCH_CHECK(prefix >= 0 && prefix <= total, "num_prefix_tokens must be in [0, ", total, "], got ", prefix);
  const int64_t length = total - prefix;
  TORCH_CHECK(len_keep >= 0 && len_keep <= length, "len_keep must be in [0, ", length, "], got ", len_keep);
  CHECK_SHAPE(noise_, n, length);
  TORCH_CHECK(noise_.scalar_type() == at::kFloat || noise_.scalar_type() == at::kDouble,
              "noise must be float32 or float64, got ", noise_.scalar_type());
  const at::Tensor x = x_.contiguous(), noise = noise_.contiguous();
  const at::Tensor pos = checked_pos_embed(pos_embed, total, x);
  at::Tensor visible = empty_output({n, prefix + len_keep, d}, x.options());
  at::Tensor mask = at::empty({n, length}, x.options());
  at::Tensor ids_restore = at::empty({n, length}, x.options().dtype(int32_indices ? at::kInt : at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "random_masking_fwd", [&] {
    const scalar_t* pos_ptr = pos.defined() ? pos.data_ptr<scalar_t>() : nullptr;
    auto run = [&](auto noise_ptr, auto ids_ptr) {
      random_masking_kernel(x.data_ptr<scalar_t>(), noise_ptr, pos_ptr, n, prefix, length, len_keep, d,
                            visible.data_ptr<scalar_t>(), mask.data_ptr<scalar_t>(), ids_ptr);
    };
    auto with_noise = [&](auto ids_ptr) {
      if (noise.scalar_type() == at::kFloat)
        run(noise.data_ptr<float>(), ids_ptr);
      else
        run(noise.data_ptr<double>(), ids_ptr);
    };
    if (int32_indices)
      with_noise(ids_restore.data_ptr<int32_t>());
    else
      with_noise(ids_restore.data_ptr<int64_t>());
  });
  return {visible, mask, ids_restore};
}

// ------------------------------------------------------------------------------ unshuffle

// out[s, j] = src[s, j] for prefix rows; out[s, P + i] = src[s, P + r] when 0 <= r < keep with
// r = ids_restore[s, i], else token (or zero without a token); + pos[j] when given.
template <typename scalar_t, typename index_t>
void unshuffle_kernel(const scalar_t* src, const index_t* ids_restore, const scalar_t* token, const scalar_t* pos,
                      int64_t n, int64_t prefix, int64_t length, int64_t keep, int64_t d, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t src_rows = prefix + keep, total = prefix + length;
  at::parallel_for(0, n * total, grain_for(d), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t s = row / total, j = row % total;
      const scalar_t* from = nullptr;
      if (j < prefix) {
        from = src + (s * src_rows + j) * d;
      } else {
        const int64_t r = int64_t(ids_restore[s * length + (j - prefix)]);
        if (r >= 0 && r < keep) from = src + (s * src_rows + prefix + r) * d;
      }
      scalar_t* dst = out + row * d;
      const scalar_t* add = pos ? pos + j * d : nullptr;
      if (from != nullptr) {
        copy_row(dst, from, add, d);
      } else if (token != nullptr) {
        copy_row(dst, token, add, d);
      } else if (add != nullptr) {
        for (int64_t k = 0; k < d; ++k) dst[k] = scalar_t(acc_t(0) + acc_t(add[k]));
      } else {
        std::fill(dst, dst + d, scalar_t(0));
      }
    }
  });
}

template <typename F>
void dispatch_index(const at::Tensor& ids, F&& f) {
  if (ids.scalar_type() == at::kInt)
    f(ids.data_ptr<int32_t>());
  else
    f(ids.data_ptr<int64_t>());
}

void check_ids_restore(const at::Tensor& ids, int64_t n) {
  CHECK_CPU(ids);
  TORCH_CHECK(ids.scalar_type() == at::kInt || ids.scalar_type() == at::kLong,
              "ids_restore must be int32 or int64, got ", ids.scalar_type());
  TORCH_CHECK(ids.dim() == 2 && ids.size(0) == n, "ids_restore must be [", n, ", L], got shape ", ids.sizes());
}

at::Tensor unshuffle_fwd(const at::Tensor& x_visible_, const at::Tensor& ids_restore_, const at::Tensor& mask_token_,
                         const c10::optional<at::Tensor>& pos_embed, int64_t num_prefix_tokens) {
  check_masking_input(x_visible_, "x_visible");
  const int64_t n = x_visible_.size(0), d = x_visible_.size(2), prefix = num_prefix_tokens;
  check_ids_restore(ids_restore_, n);
  TORCH_CHECK(prefix >= 0 && prefix <= x_visible_.size(1), "num_prefix_tokens must be in [0, ", x_visible_.size(1),
              "], got ", prefix);
  const int64_t length = ids_restore_.size(1), keep = x_visible_.size(1) - prefix;
  TORCH_CHECK(keep <= length, "x_visible has ", keep, " patch tokens but ids_restore only ", length);
  CHECK_CPU(mask_token_);
  TORCH_CHECK(mask_token_.numel() == d, "mask_token must have D = ", d, " elements, got shape ", mask_token_.sizes());
  const at::Tensor src = x_visible_.contiguous(), ids = ids_restore_.contiguous();
  const at::Tensor token = mask_token_.to(src.scalar_type()).contiguous();
  const at::Tensor pos = checked_pos_embed(pos_embed, prefix + length, src);
  at::Tensor out = empty_output({n, prefix + length, d}, src.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "unshuffle_fwd", [&] {
    dispatch_index(ids, [&](auto ids_ptr) {
      unshuffle_kernel(src.data_ptr<scalar_t>(), ids_ptr, token.data_ptr<scalar_t>(),
                       pos.defined() ? pos.data_ptr<scalar_t>() : nullptr, n, prefix, length, keep, d,
                       out.data_ptr<scalar_t>());
    });
  });
  return out;
}

// The gradient of random_masking w.r.t. x (pos_embed's is its sum over the batch): the kept rows
// go back to their original positions, zeros elsewhere -- an unshuffle with a zero mask token.
at::Tensor random_masking_bwd(const at::Tensor& grad_visible_, const at::Tensor& ids_restore_,
                              int64_t num_prefix_tokens) {
  check_masking_input(grad_visible_, "grad_visible");
  const int64_t n = grad_visible_.size(0), d = grad_visible_.size(2), prefix = num_prefix_tokens;
  check_ids_restore(ids_restore_, n);
  TORCH_CHECK(prefix >= 0 && prefix <= grad_visible_.size(1), "num_prefix_tokens out of range: ", prefix);
  const int64_t length = ids_restore_.size(1), keep = grad_visible_.size(1) - prefix;
  TORCH_CHECK(keep <= length, "grad_visible has more rows than ids_restore allows");
  const at::Tensor src = grad_visible_.contiguous(), ids = ids_restore_.contiguous();
  at::Tensor out = empty_output({n, prefix + length, d}, src.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "random_masking_bwd", [&] {
    dispatch_index(ids, [&](auto ids_ptr) {
      unshuffle_kernel<scalar_t>(src.data_ptr<scalar_t>(), ids_ptr, nullptr, nullptr, n, prefix, length, keep, d,
                                 out.data_ptr<scalar_t>());
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> unshuffle_bwd(const at::Tensor& grad_out_, const at::Tensor& ids_restore_,
                                                 int64_t len_keep, int64_t num_prefix_tokens) {
  check_masking_input(grad_out_, "grad_out");
  const int64_t n = grad_out_.size(0), d = grad_out_.size(2), prefix = num_prefix_tokens;
  check_ids_restore(ids_restore_, n);
  const int64_t length = ids_restore_.size(1);
  TORCH_CHECK(grad_out_.size(1) == prefix + length, "grad_out must have ", prefix + length, " tokens, got ",
              grad_out_.size(1));
  TORCH_CHECK(len_keep >= 0 && len_keep <= length, "len_keep must be in [0, ", length, "], got ", len_keep);
  const at::Tensor g = grad_out_.contiguous(), ids = ids_restore_.contiguous();
  // Zero-initialized: with a malformed ids_restore some visible slots receive nothing.
  at::Tensor grad_visible = at::zeros({n, prefix + len_keep, d}, g.options());
  at::Tensor grad_token;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "unshuffle_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor partial = at::zeros({n, d}, g.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    scalar_t* gv = grad_visible.data_ptr<scalar_t>();
    acc_t* part = partial.data_ptr<acc_t>();
    const int64_t total = prefix + length, vis_rows = prefix + len_keep;
    dispatch_index(ids, [&](auto ids_ptr) {
      at::parallel_for(0, n, grain_for(total * d), [&](int64_t begin, int64_t end) {
        for (int64_t s = begin; s < end; ++s) {
          const scalar_t* gs = g.data_ptr<scalar_t>() + s * total * d;
          std::memcpy(gv + s * vis_rows * d, gs, sizeof(scalar_t) * prefix * d);
          acc_t* acc = part + s * d;
          for (int64_t i = 0; i < length; ++i) {
            const int64_t r = int64_t(ids_ptr[s * length + i]);
            const scalar_t* row = gs + (prefix + i) * d;
            if (r >= 0 && r < len_keep) {
              std::memcpy(gv + (s * vis_rows + prefix + r) * d, row, sizeof(scalar_t) * d);
            } else {
              for (int64_t k = 0; k < d; ++k) acc[k] += acc_t(row[k]);
            }
          }
        }
      });
    });
    grad_token = partial.sum(0).to(g.scalar_type());
  });
  return {grad_visible, grad_token};
}

// ------------------------------------------------------------------------------ masked_patch_loss

struct PatchGeometry {
  int64_t n, channels, height, width, p, patches_w, patches, features;
};

// Copies patch `l` of sample `s` into t[features] in MAE's (p_row, p_col, c) order.
template <typename scalar_t, typename acc_t>
inline void load_patch(const scalar_t* imgs, const PatchGeometry& g, int64_t s, int64_t l, acc_t* t) {
  const int64_t hi = l / g.patches_w, wi = l % g.patches_w;
  for (int64_t c = 0; c < g.channels; ++c) {
    const scalar_t* plane = imgs + ((s * g.channels + c) * g.height + hi * g.p) * g.width + wi * g.p;
    for (int64_t pi = 0; pi < g.p; ++pi) {
      const scalar_t* row = plane + pi * g.width;
      acc_t* dst = t + pi * g.p * g.channels + c;
      for (int64_t qi = 0; qi < g.p; ++qi) dst[qi * g.channels] = acc_t(row[qi]);
    }
  }
}

// A patch's pixels are C * p short rows spread over the image: latency-bound without help.
// Prefetching the next patch's rows while this one is reduced hides most of it.
template <typename scalar_t>
inline void prefetch_patch(const scalar_t* imgs, const PatchGeometry& g, int64_t s, int64_t l) {
  const int64_t hi = l / g.patches_w, wi = l % g.patches_w;
  for (int64_t c = 0; c < g.channels; ++c) {
    const scalar_t* plane = imgs + ((s * g.channels + c) * g.height + hi * g.p) * g.width + wi * g.p;
    for (int64_t pi = 0; pi < g.p; ++pi) __builtin_prefetch(plane + pi * g.width);
  }
}

// Eight independent partial sums: vectorizes without -ffast-math and keeps the rounding error
// of a long sum near that of torch's own (blocked) reductions.
template <typename acc_t, typename F>
inline acc_t lane_sum(int64_t count, F&& term) {
  acc_t lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= count; i += 8)
    for (int k = 0; k < 8; ++k) lanes[k] += term(i + k);
  for (int k = 0; i < count; ++i, ++k) lanes[k] += term(i);
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

// Normalizes t in place (norm_pix): (t - mean) / sqrt(unbiased var + 1e-6).
template <typename acc_t>
inline void normalize_patch(acc_t* t, int64_t f) {
  const acc_t mean = lane_sum<acc_t>(f, [&](int64_t i) { return t[i]; }) / acc_t(f);
  const acc_t var = lane_sum<acc_t>(f, [&](int64_t i) { return (t[i] - mean) * (t[i] - mean); }) / acc_t(f - 1);
  const acc_t rstd = acc_t(1) / std::sqrt(var + acc_t(1e-6));
  for (int64_t i = 0; i < f; ++i) t[i] = (t[i] - mean) * rstd;
}

PatchGeometry check_loss_inputs(const at::Tensor& pred, const at::Tensor& imgs, const at::Tensor& mask,
                                int64_t patch_size) {
  CHECK_CPU(pred);
  CHECK_CPU(imgs);
  CHECK_CPU(mask);
  CHECK_DIM(imgs, 4);
  CHECK_DIM(pred, 3);
  TORCH_CHECK(patch_size > 0, "patch_size must be > 0, got ", patch_size);
  PatchGeometry g{imgs.size(0), imgs.size(1), imgs.size(2), imgs.size(3), patch_size, 0, 0, 0};
  TORCH_CHECK(g.height % patch_size == 0 && g.width % patch_size == 0, "image size ", g.height, " x ", g.width,
              " is not divisible by patch_size ", patch_size);
  g.patches_w = g.width / patch_size;
  g.patches = (g.height / patch_size) * g.patches_w;
  g.features = patch_size * patch_size * g.channels;
  CHECK_SHAPE(pred, g.n, g.patches, g.features);
  CHECK_SHAPE(mask, g.n, g.patches);
  CHECK_SAME_DTYPE(pred, imgs);
  TORCH_CHECK(at::isFloatingType(pred.scalar_type()), "pred must be floating point, got ", pred.scalar_type());
  return g;
}

template <typename scalar_t>
using loss_acc_t = at::opmath_type<scalar_t>;

// Per-patch loss contributions (mask * loss_of_patch), then one fixed-order double sum.
at::Tensor masked_patch_loss_fwd(const at::Tensor& pred_, const at::Tensor& imgs_, const at::Tensor& mask_,
                                 int64_t patch_size, bool norm_pix, bool l1) {
  const PatchGeometry g = check_loss_inputs(pred_, imgs_, mask_, patch_size);
  const at::Tensor pred = pred_.contiguous(), imgs = imgs_.contiguous();
  const at::Tensor mask = mask_.to(at::kDouble).contiguous();
  const at::ScalarType out_type = pred.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor contrib = at::zeros({g.n * g.patches}, pred.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "masked_patch_loss_fwd", [&] {
    using acc_t = loss_acc_t<scalar_t>;
    Scratch<acc_t> scratch(g.features);
    const scalar_t* ip = imgs.data_ptr<scalar_t>();
    const double* mp = mask.data_ptr<double>();
    double* cp = contrib.data_ptr<double>();
    const int64_t f = g.features;
    at::parallel_for(0, g.n * g.patches, grain_for(4 * g.features), [&](int64_t begin, int64_t end) {
      acc_t* t = scratch.get();
      for (int64_t patch = begin; patch < end; ++patch) {
        const double m = mp[patch];
        if (m == 0) continue;  // unmasked: never read
        if (patch + 1 < end && mp[patch + 1] != 0)
          prefetch_patch(ip, g, (patch + 1) / g.patches, (patch + 1) % g.patches);
        load_patch(ip, g, patch / g.patches, patch % g.patches, t);
        if (norm_pix) normalize_patch(t, f);
        const scalar_t* pr = pred.data_ptr<scalar_t>() + patch * f;
        acc_t s;
        if (l1)
          s = lane_sum<acc_t>(f, [&](int64_t i) { return std::abs(acc_t(pr[i]) - t[i]); });
        else
          s = lane_sum<acc_t>(f, [&](int64_t i) {
            const acc_t e = acc_t(pr[i]) - t[i];
            return e * e;
          });
        cp[patch] = m * (l1 ? double(s) : double(s) / double(f));
      }
    });
  });
  const double msum = mask.sum().item<double>();
  const double total = contrib.sum().item<double>();
  const double denom = l1 ? (msum * double(patch_size * patch_size) + 1e-5) * double(g.channels) : msum;
  return at::full({}, total / denom, pred.options().dtype(out_type));
}

at::Tensor masked_patch_loss_bwd(const at::Tensor& grad_loss, const at::Tensor& pred_, const at::Tensor& imgs_,
                                 const at::Tensor& mask_, int64_t patch_size, bool norm_pix, bool l1) {
  const PatchGeometry g = check_loss_inputs(pred_, imgs_, mask_, patch_size);
  CHECK_ONE_ELEMENT(grad_loss);
  const at::Tensor pred = pred_.contiguous(), imgs = imgs_.contiguous();
  const at::Tensor mask = mask_.to(at::kDouble).contiguous();
  const double msum = mask.sum().item<double>();
  const double denom = l1 ? (msum * double(patch_size * patch_size) + 1e-5) * double(g.channels) : msum;
  const double scale = grad_loss.to(at::kDouble).item<double>() / denom;
  at::Tensor grad = empty_output_like(pred);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "masked_patch_loss_bwd", [&] {
    using acc_t = loss_acc_t<scalar_t>;
    Scratch<acc_t> scratch(g.features);
    const scalar_t* ip = imgs.data_ptr<scalar_t>();
    const double* mp = mask.data_ptr<double>();
    scalar_t* gp = grad.data_ptr<scalar_t>();
    const int64_t f = g.features;
    at::parallel_for(0, g.n * g.patches, grain_for(4 * g.features), [&](int64_t begin, int64_t end) {
      acc_t* t = scratch.get();
      for (int64_t patch = begin; patch < end; ++patch) {
        scalar_t* out = gp + patch * f;
        const double m = mp[patch];
        if (m == 0) {
          std::fill(out, out + f, scalar_t(0));
          continue;
        }
        if (patch + 1 < end && mp[patch + 1] != 0)
          prefetch_patch(ip, g, (patch + 1) / g.patches, (patch + 1) % g.patches);
        load_patch(ip, g, patch / g.patches, patch % g.patches, t);
        if (norm_pix) normalize_patch(t, f);
        const scalar_t* pr = pred.data_ptr<scalar_t>() + patch * f;
        if (l1) {
          const acc_t w = acc_t(scale * m);
          for (int64_t i = 0; i < f; ++i) {
            const acc_t e = acc_t(pr[i]) - t[i];
            out[i] = scalar_t(e > 0 ? w : (e < 0 ? -w : (e == e ? acc_t(0) : e)));
          }
        } else {
          const acc_t w = acc_t(scale * m * 2.0 / double(f));
          for (int64_t i = 0; i < f; ++i) out[i] = scalar_t(w * (acc_t(pr[i]) - t[i]));
        }
      }
    });
  });
  return grad;
}

}  // namespace
