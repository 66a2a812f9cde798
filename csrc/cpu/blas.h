// BLAS products of row-major tiles for the tiled CPU kernels. Row-major tiles are handed to MKL's
// Fortran sgemm_ / dgemm_ (exported by libtorch_cpu) as their column-major transposes; calling
// them per tile avoids the dispatcher cost of at::mm, and inside at::parallel_for (an OpenMP
// region) MKL runs single-threaded on its tile. Not instruction-set specific (MKL dispatches).
#pragma once

#include <cstdint>

extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc);
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc);
// MKL only (weak: null on other BLAS builds, which then keep their own threading).
// (MKL's C entry point; the lowercase export is the Fortran one and takes an int*.)
int MKL_Set_Num_Threads_Local(int nt) __attribute__((weak));
}

namespace sslfast::cpu {

// A tile GEMM is small: one BLAS thread per tile, also when a round has a single tile and
// at::parallel_for runs it outside a parallel region, so results never depend on thread count.
struct SingleThreadedBlas {
  int previous = 0;
  SingleThreadedBlas() {
    if (MKL_Set_Num_Threads_Local) previous = MKL_Set_Num_Threads_Local(1);
  }
  ~SingleThreadedBlas() {
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(previous);
  }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;
};

inline void blas_gemm(char ta, char tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                      const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const int m_ = int(m), n_ = int(n), k_ = int(k), lda_ = int(lda), ldb_ = int(ldb), ldc_ = int(ldc);
  sgemm_(&ta, &tb, &m_, &n_, &k_, &alpha, a, &lda_, b, &ldb_, &beta, c, &ldc_);
}

inline void blas_gemm(char ta, char tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
                      const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  const int m_ = int(m), n_ = int(n), k_ = int(k), lda_ = int(lda), ldb_ = int(ldb), ldc_ = int(ldc);
  dgemm_(&ta, &tb, &m_, &n_, &k_, &alpha, a, &lda_, b, &ldb_, &beta, c, &ldc_);
}

// out[rows x cols] = alpha * a[rows x dim] @ b[cols x dim]^T   (a score tile)
template <typename T>
void scores_tile(const T* a, int64_t rows, const T* b, int64_t cols, int64_t dim, T alpha, T* out) {
  blas_gemm('T', 'N', cols, rows, dim, alpha, b, dim, a, dim, T(0), out, cols);
}

// out[rows x dim] += alpha * w[rows x cols] @ b[cols x dim]
template <typename T>
void accumulate_w_b(const T* w, int64_t rows, int64_t cols, const T* b, int64_t dim, T alpha, T* out) {
  blas_gemm('N', 'N', dim, rows, cols, alpha, b, dim, w, cols, T(1), out, dim);
}

// out[cols x dim] += alpha * w[rows x cols]^T @ a[rows x dim]
template <typename T>
void accumulate_wt_a(const T* w, int64_t rows, int64_t cols, const T* a, int64_t dim, T alpha, T* out) {
  blas_gemm('N', 'T', dim, cols, rows, alpha, a, dim, w, cols, T(1), out, dim);
}

}  // namespace sslfast::cpu
