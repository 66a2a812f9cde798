// Building blocks of the tiled CPU kernels: vectorized exp / log1p and online-logsumexp
// updates of tile rows and tile columns.
//
// Instruction-set specific: no include guard. Each kernel file includes this inside the namespace
// of each instruction set it is compiled for (isa.h), with SSLFAST_AVX2 set to 1 in the AVX2 +
// FMA pass and 0 in the baseline one; the headers it needs come first, from the kernel file.

template <typename T>
constexpr T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

#if SSLFAST_AVX2
// Cephes expf on 8 lanes (rel. error ~2 ulp). Below -87.3 it flushes to exactly 0, so masked
// (-inf) entries contribute nothing; NaN stays NaN.
inline __m256 exp8(__m256 x) {
  const __m256 input = x;  // the clamps below turn NaN into 88.38 (min_ps returns its 2nd operand)
  const __m256 is_nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3365478515625f), _CMP_LT_OQ);
  x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3365478515625f));
  const __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i pow2 = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(pow2));
  y = _mm256_andnot_ps(underflow, y);
  return _mm256_blendv_ps(y, input, is_nan);
}

// Cephes logf on 8 lanes for positive, finite x.
inline __m256 log8(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  __m256i bits = _mm256_castps_si256(x);
  __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126)));
  __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007FFFFF)),
                                                 _mm256_set1_epi32(0x3F000000)));  // m in [0.5, 1)
  const __m256 small = _mm256_cmp_ps(m, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  e = _mm256_sub_ps(e, _mm256_and_ps(one, small));
  m = _mm256_sub_ps(_mm256_add_ps(m, _mm256_and_ps(m, small)), one);
  const __m256 z = _mm256_mul_ps(m, m);
  __m256 y = _mm256_set1_ps(7.0376836292E-2f);
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.1514610310E-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(1.1676998740E-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.2420140846E-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(1.4249322787E-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.6668057665E-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(2.0000714765E-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-2.4999993993E-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(3.3333331174E-1f));
  y = _mm256_mul_ps(_mm256_mul_ps(y, m), z);
  y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
  y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
  return _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), _mm256_add_ps(m, y));
}

// softplus(x) = max(x, 0) + log1p(exp(-|x|)); log1p(e) = log(1 + e) * e / ((1 + e) - 1) keeps
// full relative precision for tiny e (Goldberg's trick).
inline __m256 softplus8(__m256 x) {
  const __m256 abs_x = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
  const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), abs_x));
  const __m256 u = _mm256_add_ps(_mm256_set1_ps(1.0f), e);
  const __m256 d = _mm256_sub_ps(u, _mm256_set1_ps(1.0f));
  const __m256 exact = _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_EQ_OQ);
  const __m256 log1p_e = _mm256_blendv_ps(_mm256_mul_ps(log8(u), _mm256_div_ps(e, d)), e, exact);
  return _mm256_add_ps(_mm256_max_ps(x, _mm256_setzero_ps()), log1p_e);
}

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

inline float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
#endif

// ---- elementwise pieces; float has AVX2 paths, double (the test precision) is scalar ----

template <typename T>
inline T scalar_softplus(T x) {
  return std::max(x, T(0)) + std::log1p(std::exp(-std::abs(x)));
}

template <typename T>
inline T scalar_sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// max over x[0..n); NaN entries are skipped here and surface through the exp-sum instead.
template <typename T>
inline T max_of_row(const T* x, int64_t n) {
  T m = neg_inf<T>();
  int64_t c = 0;
#if SSLFAST_AVX2
  if constexpr (std::is_same_v<T, float>) {
    __m256 vm = _mm256_set1_ps(m);
    for (; c + 8 <= n; c += 8) vm = _mm256_max_ps(_mm256_loadu_ps(x + c), vm);
    m = hmax8(vm);
  }
#endif
  for (; c < n; ++c) m = x[c] > m ? x[c] : m;
  return m;
}

// sum over c of exp(x[c] - shift)
template <typename T>
inline T sum_exp_shifted(const T* x, int64_t n, T shift) {
  T s = 0;
  int64_t c = 0;
#if SSLFAST_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256 vs = _mm256_set1_ps(shift);
    __m256 acc = _mm256_setzero_ps();
    for (; c + 8 <= n; c += 8) acc = _mm256_add_ps(acc, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + c), vs)));
    s = hsum8(acc);
  }
#endif
  for (; c < n; ++c) s += std::exp(x[c] - shift);
  return s;
}

// acc[c] += exp(x[c] - shift[c])
template <typename T>
inline void add_exp_shifted(const T* x, const T* shift, T* acc, int64_t n) {
  int64_t c = 0;
#if SSLFAST_AVX2
  if constexpr (std::is_same_v<T, float>) {
    for (; c + 8 <= n; c += 8) {
      const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(shift + c)));
      _mm256_storeu_ps(acc + c, _mm256_add_ps(_mm256_loadu_ps(acc + c), e));
    }
  }
#endif
  for (; c < n; ++c) acc[c] += std::exp(x[c] - shift[c]);
}

// w[c] = coef * (exp(x[c] - row_shift) + exp(x[c] - col_shift[c])); the column term only when
// col_shift is given. In place (w == x) is fine.
template <typename T>
inline void softmax_weights(const T* x, T row_shift, const T* col_shift, T coef, T* w, int64_t n) {
  int64_t c = 0;
#if SSLFAST_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256 vr = _mm256_set1_ps(row_shift), vc = _mm256_set1_ps(coef);
    for (; c + 8 <= n; c += 8) {
      const __m256 v = _mm256_loadu_ps(x + c);
      __m256 e = exp8(_mm256_sub_ps(v, vr));
      if (col_shift) e = _mm256_add_ps(e, exp8(_mm256_sub_ps(v, _mm256_loadu_ps(col_shift + c))));
      _mm256_storeu_ps(w + c, _mm256_mul_ps(vc, e));
    }
  }
#endif
  for (; c < n; ++c) {
    T e = std::exp(x[c] - row_shift);
    if (col_shift) e += std::exp(x[c] - col_shift[c]);
    w[c] = coef * e;
  }
}

// out[c] = scale * x[c] + bias
template <typename T>
inline void affine(const T* x, T scale, T bias, T* out, int64_t n) {
  for (int64_t c = 0; c < n; ++c) out[c] = scale * x[c] + bias;
}

// sum over c of softplus(sign * x[c])
template <typename T>
inline T sum_softplus(const T* x, T sign, int64_t n) {
  T s = 0;
  int64_t c = 0;
#if SSLFAST_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256 vsign = _mm256_set1_ps(sign);
    __m256 acc = _mm256_setzero_ps();
    for (; c + 8 <= n; c += 8) acc = _mm256_add_ps(acc, softplus8(_mm256_mul_ps(vsign, _mm256_loadu_ps(x + c))));
    s = hsum8(acc);
  }
#endif
  for (; c < n; ++c) s += scalar_softplus(sign * x[c]);
  return s;
}

// w[c] = coef * sigmoid(x[c]); in place is fine.
template <typename T>
inline void scaled_sigmoid(const T* x, T coef, T* w, int64_t n) {
  int64_t c = 0;
#if SSLFAST_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256 one = _mm256_set1_ps(1.0f), vc = _mm256_set1_ps(coef);
    for (; c + 8 <= n; c += 8) {
      const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_loadu_ps(x + c)));
      _mm256_storeu_ps(w + c, _mm256_div_ps(vc, _mm256_add_ps(one, e)));
    }
  }
#endif
  for (; c < n; ++c) w[c] = coef * scalar_sigmoid(x[c]);
}

// (sum of a[c] * b[c], sum of a[c]) accumulated in double
template <typename T>
inline void sum_product_and_sum(const T* a, const T* b, int64_t n, double& product_sum, double& plain_sum) {
  T ps = 0, s = 0;
  int64_t c = 0;
#if SSLFAST_AVX2
  if constexpr (std::is_same_v<T, float>) {
    __m256 vp = _mm256_setzero_ps(), vs = _mm256_setzero_ps();
    for (; c + 8 <= n; c += 8) {
      const __m256 va = _mm256_loadu_ps(a + c);
      vp = _mm256_fmadd_ps(va, _mm256_loadu_ps(b + c), vp);
      vs = _mm256_add_ps(vs, va);
    }
    ps = hsum8(vp);
    s = hsum8(vs);
  }
#endif
  for (; c < n; ++c) {
    ps += a[c] * b[c];
    s += a[c];
  }
  product_sum += double(ps);
  plain_sum += double(s);
}

template <typename T>
inline double dot(const T* a, const T* b, int64_t n) {
  double s = 0;
  for (int64_t c = 0; c < n; ++c) s += double(a[c]) * double(b[c]);
  return s;
}

// Online logsumexp: fold a tile's rows into running (max, sum) of those rows.
template <typename T>
void fold_rows_lse(const T* tile, int64_t rows, int64_t cols, T* run_max, T* run_sum) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = tile + r * cols;
    const T tile_max = max_of_row(x, cols);
    const T new_max = tile_max > run_max[r] ? tile_max : run_max[r];
    if (new_max == neg_inf<T>()) continue;  // every entry so far masked
    run_sum[r] = run_sum[r] * std::exp(run_max[r] - new_max) + sum_exp_shifted(x, cols, new_max);
    run_max[r] = new_max;
  }
}

// Online logsumexp over a tile's columns; scratch holds 2 * cols values.
template <typename T>
void fold_cols_lse(const T* tile, int64_t rows, int64_t cols, T* run_max, T* run_sum, T* scratch) {
  T* shift = scratch;
  T* acc = scratch + cols;
  std::copy(run_max, run_max + cols, shift);
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = tile + r * cols;
    for (int64_t c = 0; c < cols; ++c) shift[c] = x[c] > shift[c] ? x[c] : shift[c];
  }
  for (int64_t c = 0; c < cols; ++c) {
    if (shift[c] == neg_inf<T>()) shift[c] = 0;  // column fully masked: exp(-inf - 0) = 0
    acc[c] = 0;
  }
  for (int64_t r = 0; r < rows; ++r) add_exp_shifted(tile + r * cols, shift, acc, cols);
  for (int64_t c = 0; c < cols; ++c) {
    if (acc[c] == T(0) && run_sum[c] == T(0)) continue;
    run_sum[c] = run_sum[c] * std::exp(run_max[c] - shift[c]) + acc[c];
    run_max[c] = shift[c];
  }
}

// Folds a running (max, sum) with a tile's contribution exp(shift) * sum.
template <typename T>
inline void merge_lse(T& run_max, T& run_sum, T shift, T sum) {
  const T new_max = shift > run_max ? shift : run_max;
  run_sum = run_sum * std::exp(run_max - new_max) + sum * std::exp(shift - new_max);
  run_max = new_max;
}

// Largest spread (nats) between a tile's maximum and a row's or column's own maximum for which
// one shared shift is safe: every row/column sum then keeps a term >= exp(-64), far from
// float underflow, so the result is the per-row computation's, rounding aside.
constexpr double kSharedShiftRange = 64.0;

// Online logsumexp of a tile into its rows' state and (col_max != nullptr) its columns' state:
// one pass for the row and column maxima, one exp pass for both sums with the tile maximum as
// the shared shift. Tiles of a wider dynamic range (tiny temperatures) take the exact
// per-direction path. scratch holds 2 * cols + rows values.
template <typename T>
void fold_tile_lse(const T* tile, int64_t rows, int64_t cols, T* row_max, T* row_sum, T* col_max, T* col_sum,
                   T* scratch) {
  T* tile_col_max = scratch;
  T* col_acc = scratch + cols;
  T* tile_row_max = scratch + 2 * cols;
  std::fill(tile_col_max, tile_col_max + cols, neg_inf<T>());
  T shift = neg_inf<T>();
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = tile + r * cols;
    if (!col_max) {  // rows only: no column maxima to keep
      tile_row_max[r] = max_of_row(x, cols);
      shift = tile_row_max[r] > shift ? tile_row_max[r] : shift;
      continue;
    }
    int64_t c = 0;
    T m = neg_inf<T>();
#if SSLFAST_AVX2
    if constexpr (std::is_same_v<T, float>) {
      __m256 vm = _mm256_set1_ps(m);
      for (; c + 8 <= cols; c += 8) {
        const __m256 v = _mm256_loadu_ps(x + c);
        vm = _mm256_max_ps(v, vm);
        _mm256_storeu_ps(tile_col_max + c, _mm256_max_ps(v, _mm256_loadu_ps(tile_col_max + c)));
      }
      m = hmax8(vm);
    }
#endif
    for (; c < cols; ++c) {
      m = x[c] > m ? x[c] : m;
      tile_col_max[c] = x[c] > tile_col_max[c] ? x[c] : tile_col_max[c];
    }
    tile_row_max[r] = m;
    shift = m > shift ? m : shift;
  }
  if (shift == neg_inf<T>()) return;  // every entry masked
  // The spread that matters: rows/columns with at least one unmasked entry.
  T lowest = shift;
  for (int64_t r = 0; r < rows; ++r)
    if (tile_row_max[r] != neg_inf<T>()) lowest = std::min(lowest, tile_row_max[r]);
  if (col_max)
    for (int64_t c = 0; c < cols; ++c)
      if (tile_col_max[c] != neg_inf<T>()) lowest = std::min(lowest, tile_col_max[c]);
  if (!(double(shift) - double(lowest) <= kSharedShiftRange)) {
    fold_rows_lse(tile, rows, cols, row_max, row_sum);
    if (col_max) fold_cols_lse(tile, rows, cols, col_max, col_sum, scratch);
    return;
  }
  std::fill(col_acc, col_acc + cols, T(0));
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = tile + r * cols;
    if (!col_max) {  // rows only: no column sums to accumulate
      if (tile_row_max[r] != neg_inf<T>()) merge_lse(row_max[r], row_sum[r], shift, sum_exp_shifted(x, cols, shift));
      continue;
    }
    T s = 0;
    int64_t c = 0;
#if SSLFAST_AVX2
    if constexpr (std::is_same_v<T, float>) {
      const __m256 vs = _mm256_set1_ps(shift);
      __m256 acc = _mm256_setzero_ps();
      for (; c + 8 <= cols; c += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + c), vs));
        acc = _mm256_add_ps(acc, e);
        _mm256_storeu_ps(col_acc + c, _mm256_add_ps(_mm256_loadu_ps(col_acc + c), e));
      }
      s = hsum8(acc);
    }
#endif
    for (; c < cols; ++c) {
      const T e = std::exp(x[c] - shift);
      s += e;
      col_acc[c] += e;
    }
    if (tile_row_max[r] != neg_inf<T>()) merge_lse(row_max[r], row_sum[r], shift, s);
  }
  if (col_max)
    for (int64_t c = 0; c < cols; ++c)
      if (tile_col_max[c] != neg_inf<T>()) merge_lse(col_max[c], col_sum[c], shift, col_acc[c]);
}

template <typename T>
void finish_lse(const T* run_max, const T* run_sum, int64_t n, T* lse) {
  for (int64_t i = 0; i < n; ++i) lse[i] = run_max[i] + std::log(run_sum[i]);
}
