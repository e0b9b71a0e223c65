// The AVX-512 kernels: kernels_impl.h's elementwise work compiled with AVX-512 flags, and the
// small-batch products written with intrinsics (CMakeLists.txt gives this file its flags).
#include <immintrin.h>

#include <cstdint>

#include "kernels/kernels.h"

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

void gemm_nt(float* C, int64_t ldc, const float* A, int64_t lda, const float* W, int64_t ldw,
             int64_t M, int64_t N, int64_t K, float beta) {
    in_row_blocks<4>(M, [&](auto block, int64_t m) {
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
    in_row_blocks<4>(M, [&](auto block, int64_t m) {
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
        const float* panel = B_packed + n0 * K;
        const __mmask16 mask0 = tail_mask(N - n0), mask1 = tail_mask(N - n0 - 16);
        in_row_blocks<8>(M, [&](auto block, int64_t m) {
            packed_tile<decltype(block)::value>(C + m * ldc + n0, ldc, A + m * lda, lda, panel, K, mask0, mask1, beta);
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The gates' elementwise work, 16 lanes at a time: kernels_impl.h's exp (the same range reduction
// and polynomial, 2^n applied by vscalefps), and reciprocals by vrcp14ps and one Newton step
// (relative error about 2^-28) instead of divisions, which Zen 4 and Intel cores issue slowly.
// The clamps take x second, so a NaN passes through as it does in the scalar code.

inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(88.0f), _mm512_max_ps(_mm512_set1_ps(-87.0f), x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

inline __m512 reciprocal16(__m512 d) {
    const __m512 r = _mm512_rcp14_ps(d);
    return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(1.0f)), r);  // r + r(1 - dr)
}

inline __m512 sigmoid16(__m512 x) {
    return reciprocal16(_mm512_add_ps(_mm512_set1_ps(1.0f), exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

inline __m512 tanh16(__m512 x) {
    const __m512 sign = _mm512_and_ps(x, _mm512_set1_ps(-0.0f));
    const __m512 e = exp16(_mm512_mul_ps(_mm512_set1_ps(-2.0f), _mm512_andnot_ps(_mm512_set1_ps(-0.0f), x)));
    const __m512 t = _mm512_mul_ps(_mm512_sub_ps(_mm512_set1_ps(1.0f), e),
                                   reciprocal16(_mm512_add_ps(_mm512_set1_ps(1.0f), e)));
    return _mm512_or_ps(t, sign);
}

void gates_forward16(float* gates, float* c, float* m, const float* c_prev, const float* peephole,
                     int64_t H, int64_t j0, int64_t j1, float cell_clip) {
    const __m512 clip = _mm512_set1_ps(cell_clip), neg_clip = _mm512_set1_ps(-cell_clip);
    for (int64_t j = j0; j < j1; j += 16) {
        const __mmask16 k = tail_mask(j1 - j);
        const __m512 cp = _mm512_maskz_loadu_ps(k, c_prev + j);
        const __m512 i = sigmoid16(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, peephole + j), cp,
                                                   _mm512_maskz_loadu_ps(k, gates + j)));
        const __m512 f = sigmoid16(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, peephole + H + j), cp,
                                                   _mm512_maskz_loadu_ps(k, gates + H + j)));
        const __m512 g = tanh16(_mm512_maskz_loadu_ps(k, gates + 2 * H + j));
        __m512 cn = _mm512_fmadd_ps(f, cp, _mm512_mul_ps(i, g));
        cn = _mm512_max_ps(neg_clip, _mm512_min_ps(clip, cn));  // cn second: NaN passes
        // the output peephole sees the new cell
        const __m512 o = sigmoid16(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, peephole + 2 * H + j), cn,
                                                   _mm512_maskz_loadu_ps(k, gates + 3 * H + j)));
        _mm512_mask_storeu_ps(gates + j, k, i);
        _mm512_mask_storeu_ps(gates + H + j, k, f);
        _mm512_mask_storeu_ps(gates + 2 * H + j, k, g);
        _mm512_mask_storeu_ps(gates + 3 * H + j, k, o);
        _mm512_mask_storeu_ps(c + j, k, cn);
        _mm512_mask_storeu_ps(m + j, k, _mm512_mul_ps(o, tanh16(cn)));
    }
}

void gates_backward16(float* dz, float* dc_prev, const float* gates, const float* c_prev, const float* c,
                      const float* dm, const float* dc, const float* peephole, int64_t H, int64_t j0,
                      int64_t j1, float cell_clip) {
    const __m512 one = _mm512_set1_ps(1.0f), clip = _mm512_set1_ps(cell_clip);
    for (int64_t j = j0; j < j1; j += 16) {
        const __mmask16 k = tail_mask(j1 - j);
        const __m512 i = _mm512_maskz_loadu_ps(k, gates + j), f = _mm512_maskz_loadu_ps(k, gates + H + j);
        const __m512 g = _mm512_maskz_loadu_ps(k, gates + 2 * H + j), o = _mm512_maskz_loadu_ps(k, gates + 3 * H + j);
        const __m512 cp = _mm512_maskz_loadu_ps(k, c_prev + j), cn = _mm512_maskz_loadu_ps(k, c + j);
        const __m512 dmj = _mm512_maskz_loadu_ps(k, dm + j);
        const __m512 tc = tanh16(cn);
        // forward was: m = o*tanh(c)   so: do = dm*tanh(c); dc += dm*o*(1 - tanh(c)^2)
        const __m512 dzo = _mm512_mul_ps(_mm512_mul_ps(dmj, tc), _mm512_mul_ps(o, _mm512_sub_ps(one, o)));
        // forward was: o = sigmoid(zo + wco*c)   so: dc += dzo*wco
        __m512 dct = _mm512_fmadd_ps(_mm512_mul_ps(dmj, o), _mm512_fnmadd_ps(tc, tc, one), _mm512_maskz_loadu_ps(k, dc + j));
        dct = _mm512_fmadd_ps(dzo, _mm512_maskz_loadu_ps(k, peephole + 2 * H + j), dct);
        // forward was: c = clip(c_raw)   so: a clipped element passes no gradient
        const __mmask16 inside = _mm512_cmp_ps_mask(_mm512_abs_ps(cn), clip, _CMP_LT_OQ);
        dct = _mm512_maskz_mov_ps(inside, dct);
        // forward was: c_raw = f*c_prev + i*g
        const __m512 dzi = _mm512_mul_ps(_mm512_mul_ps(dct, g), _mm512_mul_ps(i, _mm512_sub_ps(one, i)));
        const __m512 dzf = _mm512_mul_ps(_mm512_mul_ps(dct, cp), _mm512_mul_ps(f, _mm512_sub_ps(one, f)));
        const __m512 dzg = _mm512_mul_ps(_mm512_mul_ps(dct, i), _mm512_fnmadd_ps(g, g, one));
        // forward was: i = sigmoid(zi + wci*c_prev), f = sigmoid(zf + wcf*c_prev)
        __m512 dcp = _mm512_mul_ps(dct, f);
        dcp = _mm512_fmadd_ps(dzi, _mm512_maskz_loadu_ps(k, peephole + j), dcp);
        dcp = _mm512_fmadd_ps(dzf, _mm512_maskz_loadu_ps(k, peephole + H + j), dcp);
        _mm512_mask_storeu_ps(dc_prev + j, k, dcp);
        _mm512_mask_storeu_ps(dz + j, k, dzi);
        _mm512_mask_storeu_ps(dz + H + j, k, dzf);
        _mm512_mask_storeu_ps(dz + 2 * H + j, k, dzg);
        _mm512_mask_storeu_ps(dz + 3 * H + j, k, dzo);
    }
}

template <__m512 (*F)(__m512)>
void elementwise16(float* y, const float* x, int64_t n) {
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 k = tail_mask(n - j);
        _mm512_mask_storeu_ps(y + j, k, F(_mm512_maskz_loadu_ps(k, x + j)));
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
        k.gates_forward = avx512::gates_forward16;
        k.gates_backward = avx512::gates_backward16;
        k.sigmoid = avx512::elementwise16<avx512::sigmoid16>;
        k.tanh = avx512::elementwise16<avx512::tanh16>;
        k.exp = avx512::elementwise16<avx512::exp16>;
        return k;
    }();
    return table;
}
}  // namespace lstmcpp
