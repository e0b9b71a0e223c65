#include "core/blas.h"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <stdexcept>

#include "core/team.h"

extern "C" char* scipy_openblas_get_config(void);

namespace lstmcpp {

namespace {

blasint checked(int64_t n) {
    if (n < 0 || n > INT_MAX) throw std::length_error("lstmcpp: matrix dimension exceeds the BLAS's 32-bit index");
    return static_cast<blasint>(n);
}

CBLAS_TRANSPOSE op(bool trans) { return trans ? CblasTrans : CblasNoTrans; }


}  // namespace

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    scipy_cblas_sgemm(CblasRowMajor, op(ta), op(tb), checked(M), checked(N), checked(K), alpha,
                      A, checked(lda), B, checked(ldb), beta, C, checked(ldc));
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    scipy_cblas_dgemm(CblasRowMajor, op(ta), op(tb), checked(M), checked(N), checked(K), alpha,
                      A, checked(lda), B, checked(ldb), beta, C, checked(ldc));
}

void blas_single_threaded() {
    if (scipy_openblas_get_num_threads() != 1) scipy_openblas_set_num_threads(1);
}

// A product too large for one thread is cut along the larger of M and N by shape_chunk, and the
// team shares the pieces. The cut depends on the shape alone, never on the number of threads:
// OpenBLAS's kernels for some CPUs (Haswell's, which it runs on AMD Zen 3) round an element
// differently when a call has a different number of rows or columns, so cutting by thread count
// would make results depend on it. The team's threads take the pieces as they come
// (run_team_chunks). Below about a million multiply-adds the product is one call.

template <class T>
void gemm_parallel(int threads, bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha,
                   const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
    blas_single_threaded();
    if (double(M) * double(N) * double(K) < 1e6) {
        gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    const bool split_rows = M >= N;
    const int64_t extent = split_rows ? M : N;
    const int64_t chunk = shape_chunk(extent);
    const int64_t chunks = (extent + chunk - 1) / chunk;
    auto run_chunks = [&](Range mine) {
        for (int64_t q = mine.begin; q < mine.end; ++q) {
            const int64_t begin = q * chunk, size = std::min(chunk, extent - begin);
            if (split_rows) {
                const T* A_part = ta ? A + begin : A + begin * lda;
                gemm(ta, tb, size, N, K, alpha, A_part, lda, B, ldb, beta, C + begin * ldc, ldc);
            } else {
                const T* B_part = tb ? B + begin * ldb : B + begin;
                gemm(ta, tb, M, size, K, alpha, A, lda, B_part, ldb, beta, C + begin, ldc);
            }
        }
    };
    run_team_chunks(threads, chunks, [&](int64_t q) { run_chunks(Range{q, q + 1}); });
}

template void gemm_parallel<float>(int, bool, bool, int64_t, int64_t, int64_t, float,
                                   const float*, int64_t, const float*, int64_t, float, float*,
                                   int64_t);
template void gemm_parallel<double>(int, bool, bool, int64_t, int64_t, int64_t, double,
                                    const double*, int64_t, const double*, int64_t, double,
                                    double*, int64_t);


const char* blas_config() { return scipy_openblas_get_config(); }

}  // namespace lstmcpp
