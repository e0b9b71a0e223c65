#include "blas.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "aligned.h"
#include "kernels.h"
#include "pack.h"
#include "parallel.h"

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

namespace {

// Blocks of the float32 product: kc steps of depth, Mc rows of A, Nc columns of B. A's block
// (Mc x kc, 64 KiB) and a kc x 32 panel of B's block (32 KiB) stay in L2 while the kernel
// sweeps them; B's block (kc x Nc, 256 KiB) too.
constexpr int64_t kDepthBlock = 256, kRowBlock = 64, kColumnBlock = 256;

// C (M,N) = beta*C + op(A) op(B), this thread's rows [rows) of C, with the kernels' packed
// product: B packed per (kc x Nc) block; A read in place when it is row-major, else copied per
// (kc x Mc) block so the kernel reads it k-major.
void packed_gemm_rows(const Kernels<float>& K, Range rows, bool ta, bool tb, int64_t N, int64_t depth,
                      const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                      int64_t ldc) {
    const int64_t width = K.panel_width;
    const int64_t nc_max = std::min(kColumnBlock, N), kc_max = std::min(kDepthBlock, depth);
    AlignedVector<float> b_block((nc_max + width - 1) / width * width * kc_max);
    AlignedVector<float> a_block(ta ? kRowBlock * kc_max : 0);
    for (int64_t n0 = 0; n0 < N; n0 += kColumnBlock) {
        const int64_t nc = std::min(kColumnBlock, N - n0);
        for (int64_t k0 = 0; k0 < depth; k0 += kDepthBlock) {
            const int64_t kc = std::min(kDepthBlock, depth - k0);
            // B(k, n) is B[n*ldb + k] when tb, else B[k*ldb + n]
            pack_panel(b_block.data(), tb ? B + n0 * ldb + k0 : B + k0 * ldb + n0, ldb, tb, kc, nc, width);
            const float block_beta = k0 == 0 ? beta : 1.0f;
            for (int64_t m0 = rows.begin; m0 < rows.end; m0 += kRowBlock) {
                const int64_t mc = std::min(kRowBlock, rows.end - m0);
                if (ta) {  // A(m, k) = A[k*lda + m]: copy the block's rows of k together
                    for (int64_t k = 0; k < kc; ++k)
                        std::copy(A + (k0 + k) * lda + m0, A + (k0 + k) * lda + m0 + mc, a_block.data() + k * mc);
                    K.gemm_packed(C + m0 * ldc + n0, ldc, a_block.data(), 1, mc, b_block.data(), mc, nc, kc, block_beta);
                } else {
                    K.gemm_packed(C + m0 * ldc + n0, ldc, A + m0 * lda + k0, lda, 1, b_block.data(), mc, nc, kc,
                                  block_beta);
                }
            }
        }
    }
}

// Whether a float32 product runs on the kernels' packed product (measured faster than OpenBLAS's
// on Zen 4) rather than the BLAS: with vector kernels, alpha 1 and beta 0 or 1 (all lstmcpp uses).
bool own_product(const Kernels<float>& K, float alpha, float beta) {
    return alpha == 1.0f && (beta == 0.0f || beta == 1.0f) && std::strcmp(K.name, "portable") != 0;
}

}  // namespace

template <class T>
void gemm_parallel(int threads, bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha,
                   const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
    if constexpr (std::is_same_v<T, float>) {
        const Kernels<float>& kernels = kernels_f32();
        if (own_product(kernels, alpha, beta) && M > 0 && N > 0) {
            if (K == 0) {
                for (int64_t m = 0; m < M; ++m)
                    for (int64_t n = 0; n < N; ++n) if (beta == 0.0f) C[m * ldc + n] = 0.0f;
                return;
            }
            // Rows of C split over the team (in blocks of 8, the kernels' row tile); each element is
            // made by one thread in one order, so the result does not depend on the thread count.
            const int team = double(M) * double(N) * double(K) < 1e6 ? 1 : std::max(1, threads);
            auto run = [&](int parts, int me) {
                DenormalsAreZero daz;
                const Range rows = split(M, parts, me, 8);
                if (rows.size() > 0) packed_gemm_rows(kernels, rows, ta, tb, N, K, A, lda, B, ldb, beta, C, ldc);
            };
            if (team == 1) {
                run(1, 0);
            } else {
#pragma omp parallel num_threads(team)
                run(omp_get_num_threads(), omp_get_thread_num());
            }
            return;
        }
    }
    blas_single_threaded();
    // Below about a million multiply-adds a second thread costs more than it saves.
    if (threads <= 1 || double(M) * double(N) * double(K) < 1e6) {
        gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    bool split_rows = M >= N;
#pragma omp parallel num_threads(threads)
    {
        DenormalsAreZero daz;
        Range r = split(split_rows ? M : N, omp_get_num_threads(), omp_get_thread_num(), 16);
        if (r.size() > 0) {
            if (split_rows) {
                const T* A_part = ta ? A + r.begin : A + r.begin * lda;
                gemm(ta, tb, r.size(), N, K, alpha, A_part, lda, B, ldb, beta, C + r.begin * ldc, ldc);
            } else {
                const T* B_part = tb ? B + r.begin * ldb : B + r.begin;
                gemm(ta, tb, M, r.size(), K, alpha, A, lda, B_part, ldb, beta, C + r.begin, ldc);
            }
        }
    }
}

template void gemm_parallel<float>(int, bool, bool, int64_t, int64_t, int64_t, float,
                                   const float*, int64_t, const float*, int64_t, float, float*,
                                   int64_t);
template void gemm_parallel<double>(int, bool, bool, int64_t, int64_t, int64_t, double,
                                    const double*, int64_t, const double*, int64_t, double,
                                    double*, int64_t);


const char* blas_config() { return scipy_openblas_get_config(); }

}  // namespace lstmcpp
