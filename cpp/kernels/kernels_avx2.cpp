// The AVX2+FMA kernels: kernels_impl.h's elementwise work compiled with AVX2 flags, and the
// small-batch products written with intrinsics (CMakeLists.txt gives this file its flags).
#include <immintrin.h>

#include <cstdint>

#include "kernels/kernels.h"

namespace lstmcpp {
namespace avx2 {
#include "kernels_impl.h"

// An 8-lane load/store mask with the first `remaining` lanes on.
inline __m256i tail_mask(int64_t remaining) {
    alignas(32) static const int32_t table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    const int64_t on = remaining >= 8 ? 8 : remaining <= 0 ? 0 : remaining;
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table + 8 - on));
}

// [sum(a), sum(b), sum(c), sum(d)]: four dot products finished together.
inline __m128 sum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// sum(a) by exactly sum4's tree (lane 0 of sum4(a, ...)): a row's dot product must not depend
// on whether a 4-row tile or the 1-row tail computes it (see kernels_avx512.cpp).
inline float sum1(__m256 a) {
    __m256 pairs = _mm256_hadd_ps(a, a);
    __m256 quads = _mm256_hadd_ps(pairs, pairs);
    return _mm_cvtss_f32(_mm_add_ps(_mm256_castps256_ps128(quads), _mm256_extractf128_ps(quads, 1)));
}

// C[b, 0..R) (+)= A[b, :] . W[r, :] for MB rows of A and R = 4 (or 1) rows of W.
template <int MB, int R>
inline void nt_tile(float* C, int64_t ldc, const float* A, int64_t lda, const float* W,
                    int64_t ldw, int64_t K, float beta) {
    __m256 acc[MB][R];
    for (int b = 0; b < MB; ++b)
        for (int r = 0; r < R; ++r) acc[b][r] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 w[R];
        for (int r = 0; r < R; ++r) w[r] = _mm256_loadu_ps(W + r * ldw + k);
        for (int b = 0; b < MB; ++b) {
            const __m256 a = _mm256_loadu_ps(A + b * lda + k);
            for (int r = 0; r < R; ++r) acc[b][r] = _mm256_fmadd_ps(w[r], a, acc[b][r]);
        }
    }
    if (k < K) {
        const __m256i mask = tail_mask(K - k);
        __m256 w[R];
        for (int r = 0; r < R; ++r) w[r] = _mm256_maskload_ps(W + r * ldw + k, mask);
        for (int b = 0; b < MB; ++b) {
            const __m256 a = _mm256_maskload_ps(A + b * lda + k, mask);
            for (int r = 0; r < R; ++r) acc[b][r] = _mm256_fmadd_ps(w[r], a, acc[b][r]);
        }
    }
    for (int b = 0; b < MB; ++b) {
        if constexpr (R == 4) {
            __m128 s = sum4(acc[b][0], acc[b][1], acc[b][2], acc[b][3]);
            if (beta != 0.0f) s = _mm_add_ps(s, _mm_loadu_ps(C + b * ldc));
            _mm_storeu_ps(C + b * ldc, s);
        } else {
            const float s = sum1(acc[b][0]);
            C[b * ldc] = beta != 0.0f ? C[b * ldc] + s : s;
        }
    }
}

template <int MB>
void nt_rows(float* C, int64_t ldc, const float* A, int64_t lda, const float* W, int64_t ldw,
             int64_t N, int64_t K, float beta) {
    int64_t n = 0;
    for (; n + 4 <= N; n += 4) nt_tile<MB, 4>(C + n, ldc, A, lda, W + n * ldw, ldw, K, beta);
    for (; n < N; ++n) nt_tile<MB, 1>(C + n, ldc, A, lda, W + n * ldw, ldw, K, beta);
}

void gemm_nt(float* C, int64_t ldc, const float* A, int64_t lda, const float* W, int64_t ldw,
             int64_t M, int64_t N, int64_t K, float beta) {
    // Two rows of A at a time: 8 accumulators, 4 rows of W and one of A fit 16 registers.
    in_row_blocks<2>(M, [&](auto block, int64_t m) {
        nt_rows<decltype(block)::value>(C + m * ldc, ldc, A + m * lda, lda, W, ldw, N, K, beta);
    });
}

// C[b, 0..width) (+)= sum_k A[b, k] W[k, 0..width) for MB rows of A, width <= 32.
template <int MB>
inline void nn_tile(float* C, int64_t ldc, const float* A, int64_t lda, const float* W,
                    int64_t ldw, int64_t K, int64_t width, float beta) {
    const __m256i mask[4] = {tail_mask(width), tail_mask(width - 8), tail_mask(width - 16),
                             tail_mask(width - 24)};
    __m256 acc[MB][4];
    for (int b = 0; b < MB; ++b)
        for (int v = 0; v < 4; ++v) acc[b][v] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
        const float* w_row = W + k * ldw;
        __m256 w[4];
        for (int v = 0; v < 4; ++v) w[v] = _mm256_maskload_ps(w_row + 8 * v, mask[v]);
        for (int b = 0; b < MB; ++b) {
            const __m256 a = _mm256_broadcast_ss(A + b * lda + k);
            for (int v = 0; v < 4; ++v) acc[b][v] = _mm256_fmadd_ps(a, w[v], acc[b][v]);
        }
    }
    for (int b = 0; b < MB; ++b)
        for (int v = 0; v < 4; ++v) {
            float* c = C + b * ldc + 8 * v;
            __m256 s = acc[b][v];
            if (beta != 0.0f) s = _mm256_add_ps(s, _mm256_maskload_ps(c, mask[v]));
            _mm256_maskstore_ps(c, mask[v], s);
        }
}

void gemm_nn(float* C, int64_t ldc, const float* A, int64_t lda, const float* W, int64_t ldw,
             int64_t M, int64_t N, int64_t K, float beta) {
    in_row_blocks<2>(M, [&](auto block, int64_t m) {
        for (int64_t n = 0; n < N; n += 32)
            nn_tile<decltype(block)::value>(C + m * ldc + n, ldc, A + m * lda, lda, W + n, ldw, K,
                                            N - n < 32 ? N - n : 32, beta);
    });
}

// C[b, 0..16) (+)= A[b, :] B for MB rows of A and one packed block of B (K rows of 16), the
// columns past the block's width masked off: 2*MB accumulators, each a multiply-add chain over k.
template <int MB>
inline void packed_tile(float* C, int64_t ldc, const float* A, int64_t lda, const float* block,
                        int64_t K, __m256i mask0, __m256i mask1, float beta) {
    __m256 acc[MB][2];
    for (int b = 0; b < MB; ++b) acc[b][0] = acc[b][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
        const __m256 w0 = _mm256_loadu_ps(block + 16 * k);
        const __m256 w1 = _mm256_loadu_ps(block + 16 * k + 8);
        for (int b = 0; b < MB; ++b) {
            const __m256 a = _mm256_broadcast_ss(A + b * lda + k);
            acc[b][0] = _mm256_fmadd_ps(a, w0, acc[b][0]);
            acc[b][1] = _mm256_fmadd_ps(a, w1, acc[b][1]);
        }
    }
    for (int b = 0; b < MB; ++b) {
        float* c = C + b * ldc;
        __m256 s0 = acc[b][0], s1 = acc[b][1];
        if (beta != 0.0f) {
            s0 = _mm256_add_ps(_mm256_maskload_ps(c, mask0), s0);
            s1 = _mm256_add_ps(_mm256_maskload_ps(c + 8, mask1), s1);
        }
        _mm256_maskstore_ps(c, mask0, s0);
        _mm256_maskstore_ps(c + 8, mask1, s1);
    }
}

constexpr int64_t kPanel = 16;

// Each block of 16 columns is read from cache once per tile of 6 rows of A (12 accumulators of
// the 16 registers).
void gemm_packed(float* C, int64_t ldc, const float* A, int64_t lda, const float* B_packed,
                 int64_t M, int64_t N, int64_t K, float beta) {
    for (int64_t n0 = 0; n0 < N; n0 += kPanel) {
        const float* panel = B_packed + n0 * K;
        const __m256i mask0 = tail_mask(N - n0), mask1 = tail_mask(N - n0 - 8);
        in_row_blocks<6>(M, [&](auto block, int64_t m) {
            packed_tile<decltype(block)::value>(C + m * ldc + n0, ldc, A + m * lda, lda, panel, K, mask0, mask1, beta);
        });
    }
}

}  // namespace avx2

const Kernels<float>& kernels_f32_avx2() {
    static const Kernels<float> table = [] {
        Kernels<float> k = avx2::make_kernels<float>("avx2");
        k.gemm_nt = avx2::gemm_nt;
        k.gemm_nn = avx2::gemm_nn;
        k.panel_width = avx2::kPanel;
        k.gemm_packed = avx2::gemm_packed;
        return k;
    }();
    return table;
}
}  // namespace lstmcpp
