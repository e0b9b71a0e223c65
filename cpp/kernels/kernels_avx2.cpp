// The AVX2+FMA kernels: simd_kernels.h over 8-float vectors (the gates' elementwise work and the
// small-batch products), and the int8 products (CMakeLists.txt gives this file its flags).
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/kernels.h"

namespace lstmcpp {
namespace avx2 {
#include "kernels_impl.h"

// 8 floats a vector (simd_kernels.h's vector traits).
struct Vec8 {
    using reg = __m256;
    using mask = __m256i;
    static constexpr int lanes = 8;
    static reg zero() { return _mm256_setzero_ps(); }
    static reg load(const float* p) { return _mm256_loadu_ps(p); }
    static reg load_masked(const float* p, mask m) { return _mm256_maskload_ps(p, m); }
    static void store_masked(float* p, mask m, reg v) { _mm256_maskstore_ps(p, m, v); }
    static reg broadcast(const float* p) { return _mm256_broadcast_ss(p); }
    static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
    static reg widen_bf16(const uint16_t* p) {
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
    }
    static reg widen_bf16_masked(const uint16_t* p, mask m) {  // lane by lane: a masked 16-bit load AVX2 lacks
        alignas(32) int32_t on[8];
        alignas(16) uint16_t values[8] = {0};
        _mm256_store_si256(reinterpret_cast<__m256i*>(on), m);
        for (int k = 0; k < 8; ++k) values[k] = on[k] ? p[k] : uint16_t(0);
        return widen_bf16(values);
    }
    static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
    static reg set1(float v) { return _mm256_set1_ps(v); }
    static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
    static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
    static reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
    static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
    static reg fnmadd(reg a, reg b, reg c) { return _mm256_fnmadd_ps(a, b, c); }
    static reg and_(reg a, reg b) { return _mm256_and_ps(a, b); }
    static reg andnot(reg a, reg b) { return _mm256_andnot_ps(a, b); }
    static reg or_(reg a, reg b) { return _mm256_or_ps(a, b); }
    static reg round(reg a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    // 2^n built in the exponent field (n in [-126, 127]: a normal float); a NaN p stays NaN
    static reg scale2n(reg p, reg n) {
        const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
        return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    }
    static reg reciprocal(reg d) { return _mm256_div_ps(_mm256_set1_ps(1.0f), d); }
    static reg keep_inside(reg v, reg x, reg limit) {
        return _mm256_and_ps(_mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), x), limit, _CMP_LT_OQ), v);
    }
    // the first `remaining` lanes on
    static mask tail_mask(int64_t remaining) {
        alignas(32) static const int32_t table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
        const int64_t on = remaining >= 8 ? 8 : remaining <= 0 ? 0 : remaining;
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table + 8 - on));
    }
    // [sum(a), sum(b), sum(c), sum(d)]: four dot products finished together.
    static __m128 sum4(reg a, reg b, reg c, reg d) {
        __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
        return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
    }
    // sum(a) by exactly sum4's tree (lane 0 of sum4(a, ...)): a row's dot product must not depend
    // on whether a 4-row tile or the 1-row tail computes it, or results would change with the
    // number of threads (which moves the tile boundaries).
    static float sum1(reg a) {
        __m256 pairs = _mm256_hadd_ps(a, a);
        __m256 quads = _mm256_hadd_ps(pairs, pairs);
        return _mm_cvtss_f32(_mm_add_ps(_mm256_castps256_ps128(quads), _mm256_extractf128_ps(quads, 1)));
    }
};

#include "simd_kernels.h"

// 16 registers: gemm_nt's 2-row tiles hold 8 accumulators, 4 rows of W and one of A; the packed
// kernel's 6-row tiles, 12 accumulators.
constexpr int64_t kPanel = 2 * Vec8::lanes;

// ---------------------------------------------------------------------------------------------
// int8 (weights/int8.h): activations as int16 in [-127, 127], weights as int8 widened to int16
// on load, multiplied in pairs by vpmaddwd into exact int32 sums (no saturation, so no reduced
// range: 2 * 127 * 127 fits int16 products' pair sums in int32 many times over).

void quantize_rows(int16_t* q, int64_t ldq, float* scale, const float* a, int64_t lda, int64_t M, int64_t K) {
    const __m256 sign = _mm256_set1_ps(-0.0f), largest = _mm256_set1_ps(3.4028234663852886e38f);
    const __m256 hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
    const int64_t Kp = padded16(K);
    for (int64_t m = 0; m < M; ++m) {
        const float* row = a + m * lda;
        __m256 vmax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
        for (int64_t k = 0; k < K; k += 8) {
            const __m256 v = _mm256_andnot_ps(sign, _mm256_maskload_ps(row + k, Vec8::tail_mask(K - k)));
            bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, largest, _CMP_NLE_UQ));  // NaN or Inf
            vmax = _mm256_max_ps(vmax, v);
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
        const bool finite = _mm256_movemask_ps(bad) == 0;
        float inv;
        row_scale(finite ? _mm_cvtss_f32(m4) : __builtin_nanf(""), scale + m, &inv);
        const __m256 vinv = _mm256_set1_ps(inv);
        int16_t* out = q + m * ldq;
        for (int64_t k = 0; k < Kp; k += 16) {
            __m256 v0 = _mm256_mul_ps(_mm256_maskload_ps(row + k, Vec8::tail_mask(K - k)), vinv);
            __m256 v1 = _mm256_mul_ps(_mm256_maskload_ps(row + k + 8, Vec8::tail_mask(K - k - 8)), vinv);
            v0 = _mm256_max_ps(lo, _mm256_min_ps(hi, v0));
            v1 = _mm256_max_ps(lo, _mm256_min_ps(hi, v1));
            // cvtps rounds half to even (MXCSR's default); packs interleaves the 128-bit lanes
            __m256i packed = _mm256_packs_epi32(_mm256_cvtps_epi32(v0), _mm256_cvtps_epi32(v1));
            packed = _mm256_permute4x64_epi64(packed, 0xD8);
            if (!finite) packed = _mm256_setzero_si256();
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), packed);
        }
    }
}

// C[b, 0..R) (+)= (A[b, :] . W[r, :]) * a_scale[b] * w_scale[r] for MB rows of A, R = 4 (or 1) of W.
template <int MB, int R>
inline void s8_tile(float* C, int64_t ldc, const int16_t* A, int64_t lda, const float* a_scale,
                    const int8_t* W, int64_t ldw, const float* w_scale, int64_t Kp, float beta) {
    __m256i acc[MB][R];
    for (int b = 0; b < MB; ++b)
        for (int r = 0; r < R; ++r) acc[b][r] = _mm256_setzero_si256();
    for (int64_t k = 0; k < Kp; k += 16) {
        __m256i w[R];
        for (int r = 0; r < R; ++r)
            w[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(W + r * ldw + k)));
        for (int b = 0; b < MB; ++b) {
            const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(A + b * lda + k));
            for (int r = 0; r < R; ++r) acc[b][r] = _mm256_add_epi32(acc[b][r], _mm256_madd_epi16(x, w[r]));
        }
    }
    for (int b = 0; b < MB; ++b) {
        if constexpr (R == 4) {
            const __m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(acc[b][0], acc[b][1]),
                                                _mm256_hadd_epi32(acc[b][2], acc[b][3]));
            const __m128i sums = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            __m128 v = _mm_mul_ps(_mm_cvtepi32_ps(sums), _mm_mul_ps(_mm_set1_ps(a_scale[b]), _mm_loadu_ps(w_scale)));
            if (beta != 0.0f) v = _mm_add_ps(_mm_loadu_ps(C + b * ldc), v);
            _mm_storeu_ps(C + b * ldc, v);
        } else {
            const __m128i s2 = _mm_add_epi32(_mm256_castsi256_si128(acc[b][0]), _mm256_extracti128_si256(acc[b][0], 1));
            const __m128i s1 = _mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0x4E));
            const int32_t sum = _mm_cvtsi128_si32(_mm_add_epi32(s1, _mm_shuffle_epi32(s1, 0xB1)));
            const float v = static_cast<float>(sum) * (a_scale[b] * w_scale[0]);
            C[b * ldc] = beta != 0.0f ? C[b * ldc] + v : v;
        }
    }
}

void gemm_nt_s8(float* C, int64_t ldc, const int16_t* A, int64_t lda, const float* a_scale, const int8_t* W,
                int64_t ldw, const float* w_scale, int64_t M, int64_t N, int64_t K, float beta) {
    const int64_t Kp = padded16(K);
    // Two rows of A at a time: 8 accumulators, 4 rows of W and one of A fit 16 registers.
    in_row_blocks<2>(M, [&](auto block, int64_t m) {
        constexpr int MB = decltype(block)::value;
        int64_t n = 0;
        for (; n + 4 <= N; n += 4)
            s8_tile<MB, 4>(C + m * ldc + n, ldc, A + m * lda, lda, a_scale + m, W + n * ldw, ldw, w_scale + n, Kp, beta);
        for (; n < N; ++n)
            s8_tile<MB, 1>(C + m * ldc + n, ldc, A + m * lda, lda, a_scale + m, W + n * ldw, ldw, w_scale + n, Kp, beta);
    });
}

// ---------------------------------------------------------------------------------------------
// Codebooks (weights/codebook.h): the weights decoded in registers as they are read. A 16-value
// book is two registers (values 0-7 and 8-15), looked up by vpermps and chosen by the index's
// bit 3; a 256-value book is gathered.

template <int Bits>
struct CodebookRow {
    __m256 lo, hi;        // Bits 4: the book in registers
    const float* book;    // Bits 8: gathered from
    const uint8_t* indices;

    CodebookRow(const CodebookView& W, int64_t n) : indices(W.indices + n * W.ld) {
        book = W.books + (n / W.rows_per_book) * W.book_size;
        if constexpr (Bits == 4) {
            lo = _mm256_loadu_ps(book);
            hi = _mm256_loadu_ps(book + 8);
        }
    }
    // weights k .. k+7 (k a multiple of 8; past K the padding decodes to a value the masked
    // activations multiply by 0)
    __m256 decode(int64_t k) const {
        if constexpr (Bits == 4) {
            uint32_t packed;
            std::memcpy(&packed, indices + k / 2, sizeof packed);
            __m256i v = _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(packed)), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
            v = _mm256_and_si256(v, _mm256_set1_epi32(15));
            return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, v), _mm256_permutevar8x32_ps(hi, v),
                                    _mm256_castsi256_ps(_mm256_slli_epi32(v, 28)));
        } else {
            const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(indices + k)));
            return _mm256_i32gather_ps(book, v, 4);
        }
    }
};

template <int Bits, int MB>
inline void codebook_rows(float* C, int64_t ldc, const float* A, int64_t lda, const CodebookView& W, int64_t first_row,
                          int64_t N, int64_t K, float beta) {
    for (int64_t n = 0; n < N; ++n) {
        const CodebookRow<Bits> row(W, first_row + n);
        __m256 acc[MB];
        for (int b = 0; b < MB; ++b) acc[b] = _mm256_setzero_ps();
        for (int64_t k = 0; k < K; k += 8) {
            const __m256 w = row.decode(k);
            const __m256i mask = Vec8::tail_mask(K - k);
            for (int b = 0; b < MB; ++b) acc[b] = _mm256_fmadd_ps(w, _mm256_maskload_ps(A + b * lda + k, mask), acc[b]);
        }
        for (int b = 0; b < MB; ++b) {
            const float s = Vec8::sum1(acc[b]);
            C[b * ldc + n] = beta != 0.0f ? C[b * ldc + n] + s : s;
        }
    }
}

void gemm_nt_codebook(float* C, int64_t ldc, const float* A, int64_t lda, const CodebookView& W, int64_t first_row,
                      int64_t M, int64_t N, int64_t K, float beta) {
    // Up to eight rows of A share each decoded vector of weights (8 accumulators, the book, the
    // decoded weights and a row of A fit the 16 registers).
    in_row_blocks<8>(M, [&](auto block, int64_t m) {
        constexpr int MB = decltype(block)::value;
        if (W.bits == 4) codebook_rows<4, MB>(C + m * ldc, ldc, A + m * lda, lda, W, first_row, N, K, beta);
        else codebook_rows<8, MB>(C + m * ldc, ldc, A + m * lda, lda, W, first_row, N, K, beta);
    });
}

}  // namespace avx2

const Kernels<float>& kernels_f32_avx2() {
    static const Kernels<float> table = [] {
        Kernels<float> k = avx2::make_kernels<float>("avx2");
        k.gemm_nt = avx2::gemm_nt_tiles<avx2::Vec8, 2>;
        k.gemm_nt_bf16 = avx2::gemm_nt_tiles<avx2::Vec8, 2, avx2::Bf16<avx2::Vec8>>;
        k.gemm_nn = avx2::gemm_nn_tiles<avx2::Vec8, 2>;
        k.panel_width = avx2::kPanel;
        k.gemm_packed = avx2::gemm_packed_tiles<avx2::Vec8, 6>;
        k.gates_forward = avx2::gates_forward_v<avx2::Vec8>;
        k.gates_backward = avx2::gates_backward_v<avx2::Vec8>;
        k.sigmoid = avx2::elementwise_v<avx2::Vec8, avx2::sigmoid_v<avx2::Vec8>>;
        k.tanh = avx2::elementwise_v<avx2::Vec8, avx2::tanh_v<avx2::Vec8>>;
        k.exp = avx2::elementwise_v<avx2::Vec8, avx2::exp_v<avx2::Vec8>>;
        k.quantize_rows = avx2::quantize_rows;
        k.int8_products = "avx2: int8 widened to int16, pairs summed by vpmaddwd";
        k.bf16_products = "avx2: bf16 widened to float32, fma";
        k.gemm_nt_codebook = avx2::gemm_nt_codebook;
        k.codebook_products = "avx2: 16-value books in registers (vpermps), 256-value books gathered; fma";
        k.gemm_nt_s8 = avx2::gemm_nt_s8;
        return k;
    }();
    return table;
}
}  // namespace lstmcpp
