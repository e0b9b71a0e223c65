// The BLAS we link: OpenBLAS from the scipy-openblas32 wheel (symbols prefixed scipy_).
// It is always called single-threaded; lstmcpp splits large products across its own OpenMP
// team (gemm_parallel), so the cores never carry two thread pools at once.
#pragma once

#include <cstdint>

namespace lstmcpp {

// Row-major C (M,N) = alpha * op(A) op(B) + beta * C, with op(X) = X^T when trans_X.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
          const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* C,
          int64_t ldc);

// The same product split over up to `threads` OpenMP threads by rows (or columns) of C.
template <class T>
void gemm_parallel(int threads, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                   T alpha, const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C,
                   int64_t ldc);

// Puts our OpenBLAS back to one thread if anything changed that (threadpoolctl limiting "all
// BLAS" reaches this copy too). Call on the calling thread, outside any parallel region, before
// products run inside our team; gemm_parallel does.
void blas_single_threaded();

// OpenBLAS's description of itself (version, kernels in use, threads).
const char* blas_config();

}  // namespace lstmcpp
