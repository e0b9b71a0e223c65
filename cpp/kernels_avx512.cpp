// The AVX-512 kernels: kernels_impl.h's elementwise work compiled with AVX-512 flags, and the
// small-batch products written with intrinsics (CMakeLists.txt gives this file its flags).
#include <immintrin.h>

#include <cstdint>
#include <type_traits>

#include "kernels.h"

namespace lstmcpp {
namespace avx512 {
#include "kernels_impl.h"

inline __mmask16 tail_mask(int64_t remaining) {
    return remaining >= 16 ? __mmask16(0xFFFF) : remaining <= 0 ? __mmask16(0) : __mmask16((1u << remaining) - 1);
}

// [sum(a), sum(b), sum(c), sum(d)]: four dot products finished together.
inline __m128 sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1));
    __m256 c8 = _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1));
    __m256 d8 = _mm256_add_ps(_mm512_castps512_ps256(d), _mm512_extractf32x8_ps(d, 1));
    __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a8, b8), _mm256_hadd_ps(c8, d8));
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// sum(a) by exactly sum4's tree (lane 0 of sum4(a, ...)): a row's dot product must not depend
// on whether a 4-row tile or the 1-row tail computes it, or results would change with the
// number of threads (which moves the tile boundaries).
inline float sum1(__m512 a) {
    __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    __m256 pairs = _mm256_hadd_ps(a8, a8);
    __m256 quads = _mm256_hadd_ps(pairs, pairs);
    return _mm_cvtss_f32(_mm_add_ps(_mm256_castps256_ps128(quads), _mm256_extractf128_ps(quads, 1)));
}

// C[b, 0..R) (+)= A[b, :] . W[r, :] for MB rows of A and R = 4 (or 1) rows of W.
template <int MB, int R>
inline void nt_tile(float* C, int64_t ldc, const float* A, int64_t lda, const float* W,
                    int64_t ldw, int64_t K, float beta) {
    __m512 acc[MB][R];
    for (int b = 0; b < MB; ++b)
        for (int r = 0; r < R; ++r) acc[b][r] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 w[R];
        for (int r = 0; r < R; ++r) w[r] = _mm512_loadu_ps(W + r * ldw + k);
        for (int b = 0; b < MB; ++b) {
            const __m512 a = _mm512_loadu_ps(A + b * lda + k);
            for (int r = 0; r < R; ++r) acc[b][r] = _mm512_fmadd_ps(w[r], a, acc[b][r]);
        }
    }
    if (k < K) {
        const __mmask16 mask = tail_mask(K - k);
        __m512 w[R];
        for (int r = 0; r < R; ++r) w[r] = _mm512_maskz_loadu_ps(mask, W + r * ldw + k);
        for (int b = 0; b < MB; ++b) {
            const __m512 a = _mm512_maskz_loadu_ps(mask, A + b * lda + k);
            for (int r = 0; r < R; ++r) acc[b][r] = _mm512_fmadd_ps(w[r], a, acc[b][r]);
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

// Calls rows(std::integral_constant<int, MB>, m) over the M rows of A in blocks of MB = 4, then
// one block of the 1 to 3 left.
template <class Rows>
void in_row_blocks(int64_t M, const Rows& rows) {
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) rows(std::integral_constant<int, 4>{}, m);
    switch (M - m) {
        case 3: rows(std::integral_constant<int, 3>{}, m); break;
        case 2: rows(std::integral_constant<int, 2>{}, m); break;
        case 1: rows(std::integral_constant<int, 1>{}, m); break;
        default: break;
    }
}

void gemm_nt(float* C, int64_t ldc, const float* A, int64_t lda, const float* W, int64_t ldw,
             int64_t M, int64_t N, int64_t K, float beta) {
    in_row_blocks(M, [&](auto block, int64_t m) {
        nt_rows<decltype(block)::value>(C + m * ldc, ldc, A + m * lda, lda, W, ldw, N, K, beta);
    });
}

// C[b, 0..width) (+)= sum_k A[b, k] W[k, 0..width) for MB rows of A, width <= 64.
template <int MB>
inline void nn_tile(float* C, int64_t ldc, const float* A, int64_t lda, const float* W,
                    int64_t ldw, int64_t K, int64_t width, float beta) {
    const __mmask16 mask[4] = {tail_mask(width), tail_mask(width - 16), tail_mask(width - 32),
                               tail_mask(width - 48)};
    __m512 acc[MB][4];
    for (int b = 0; b < MB; ++b)
        for (int v = 0; v < 4; ++v) acc[b][v] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
        const float* w_row = W + k * ldw;
        __m512 w[4];
        for (int v = 0; v < 4; ++v) w[v] = _mm512_maskz_loadu_ps(mask[v], w_row + 16 * v);
        for (int b = 0; b < MB; ++b) {
            const __m512 a = _mm512_set1_ps(A[b * lda + k]);
            for (int v = 0; v < 4; ++v) acc[b][v] = _mm512_fmadd_ps(a, w[v], acc[b][v]);
        }
    }
    for (int b = 0; b < MB; ++b)
        for (int v = 0; v < 4; ++v) {
            float* c = C + b * ldc + 16 * v;
            __m512 s = acc[b][v];
            if (beta != 0.0f) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(mask[v], c));
            _mm512_mask_storeu_ps(c, mask[v], s);
        }
}

template <int MB>
void nn_rows(float* C, int64_t ldc, const float* A, int64_t lda, const float* W, int64_t ldw,
             int64_t N, int64_t K, float beta) {
    for (int64_t n = 0; n < N; n += 64)
        nn_tile<MB>(C + n, ldc, A, lda, W + n, ldw, K, N - n < 64 ? N - n : 64, beta);
}

void gemm_nn(float* C, int64_t ldc, const float* A, int64_t lda, const float* W, int64_t ldw,
             int64_t M, int64_t N, int64_t K, float beta) {
    in_row_blocks(M, [&](auto block, int64_t m) {
        nn_rows<decltype(block)::value>(C + m * ldc, ldc, A + m * lda, lda, W, ldw, N, K, beta);
    });
}

// C[b, 0..32) (+)= A[b, :] B for MB rows of A and one packed block of B (K rows of 32), the
// columns past the block's width masked off: 2*MB accumulators, each a multiply-add chain over k.
template <int MB>
inline void packed_tile(float* C, int64_t ldc, const float* A, int64_t lda, const float* block,
                        int64_t K, __mmask16 mask0, __mmask16 mask1, float beta) {
    __m512 acc[MB][2];
    for (int b = 0; b < MB; ++b) acc[b][0] = acc[b][1] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
        const __m512 w0 = _mm512_loadu_ps(block + 32 * k);
        const __m512 w1 = _mm512_loadu_ps(block + 32 * k + 16);
        for (int b = 0; b < MB; ++b) {
            const __m512 a = _mm512_set1_ps(A[b * lda + k]);
            acc[b][0] = _mm512_fmadd_ps(a, w0, acc[b][0]);
            acc[b][1] = _mm512_fmadd_ps(a, w1, acc[b][1]);
        }
    }
    for (int b = 0; b < MB; ++b) {
        float* c = C + b * ldc;
        __m512 s0 = acc[b][0], s1 = acc[b][1];
        if (beta != 0.0f) {
            s0 = _mm512_add_ps(_mm512_maskz_loadu_ps(mask0, c), s0);
            s1 = _mm512_add_ps(_mm512_maskz_loadu_ps(mask1, c + 16), s1);
        }
        _mm512_mask_storeu_ps(c, mask0, s0);
        _mm512_mask_storeu_ps(c + 16, mask1, s1);
    }
}

constexpr int64_t kPanel = 32;

// Each block of 32 columns is read from cache once per tile of 8 rows of A.
void gemm_packed(float* C, int64_t ldc, const float* A, int64_t lda, const float* B_packed,
                 int64_t M, int64_t N, int64_t K, float beta) {
    for (int64_t n0 = 0; n0 < N; n0 += kPanel) {
        const float* block = B_packed + n0 * K;
        const __mmask16 mask0 = tail_mask(N - n0), mask1 = tail_mask(N - n0 - 16);
        int64_t m = 0;
        for (; m + 8 <= M; m += 8)
            packed_tile<8>(C + m * ldc + n0, ldc, A + m * lda, lda, block, K, mask0, mask1, beta);
        float* c = C + m * ldc + n0;
        const float* a = A + m * lda;
        switch (M - m) {
            case 7: packed_tile<7>(c, ldc, a, lda, block, K, mask0, mask1, beta); break;
            case 6: packed_tile<6>(c, ldc, a, lda, block, K, mask0, mask1, beta); break;
            case 5: packed_tile<5>(c, ldc, a, lda, block, K, mask0, mask1, beta); break;
            case 4: packed_tile<4>(c, ldc, a, lda, block, K, mask0, mask1, beta); break;
            case 3: packed_tile<3>(c, ldc, a, lda, block, K, mask0, mask1, beta); break;
            case 2: packed_tile<2>(c, ldc, a, lda, block, K, mask0, mask1, beta); break;
            case 1: packed_tile<1>(c, ldc, a, lda, block, K, mask0, mask1, beta); break;
            default: break;
        }
    }
}

}  // namespace avx512

const Kernels<float>& kernels_f32_avx512() {
    static const Kernels<float> table = [] {
        Kernels<float> k = avx512::make_kernels<float>("avx512");
        k.gemm_nt = avx512::gemm_nt;
        k.gemm_nn = avx512::gemm_nn;
        k.panel_width = avx512::kPanel;
        k.gemm_packed = avx512::gemm_packed;
        return k;
    }();
    return table;
}
}  // namespace lstmcpp
