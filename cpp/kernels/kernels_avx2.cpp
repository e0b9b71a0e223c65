// The AVX2+FMA kernels: simd_kernels.h over 8-float vectors (the gates' elementwise work and the
// small-batch products), and the int8 products (CMakeLists.txt gives this file its flags).
#include <immintrin.h>

#include <cstdint>
#include <algorithm>
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
// int8 (weights/int8.h). Activations arrive as bytes q + 128; AVX2 has no u8 x s8 product that
// sums four without saturating, so each group of 4 is multiplied as |w| (u8, up to 128) times
// q with w's sign (s8, |q| <= 127) by vpmaddubsw, whose pair sums (at most 2 * 128 * 127) fit
// int16 exactly, and vpmaddwd by ones sums the pairs into int32: the exact sum of q * w.

void quantize_rows(uint8_t* q, int64_t ldq, float* scale, const float* a, int64_t lda, int64_t M, int64_t K) {
    const __m256 sign = _mm256_set1_ps(-0.0f), largest = _mm256_set1_ps(3.4028234663852886e38f);
    const __m256 hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
    const __m128i zero_point = _mm_set1_epi8(static_cast<char>(0x80));
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
        uint8_t* out = q + m * ldq;
        for (int64_t k = 0; k < Kp; k += 16) {
            __m256 v0 = _mm256_mul_ps(_mm256_maskload_ps(row + k, Vec8::tail_mask(K - k)), vinv);
            __m256 v1 = _mm256_mul_ps(_mm256_maskload_ps(row + k + 8, Vec8::tail_mask(K - k - 8)), vinv);
            v0 = _mm256_max_ps(lo, _mm256_min_ps(hi, v0));
            v1 = _mm256_max_ps(lo, _mm256_min_ps(hi, v1));
            // cvtps rounds half to even (MXCSR's default); packs interleaves the 128-bit lanes
            __m256i words = _mm256_packs_epi32(_mm256_cvtps_epi32(v0), _mm256_cvtps_epi32(v1));
            words = _mm256_permute4x64_epi64(words, 0xD8);
            __m128i bytes = _mm_packs_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1));
            if (!finite) bytes = _mm_setzero_si128();
            _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k), _mm_xor_si128(bytes, zero_point));
        }
    }
}

// Rows row0 .. row0 + 8 of the result for one row of A: sums * a_scale * w_scale (+ C), the lanes
// outside [first_row, first_row + N) left alone.
inline void s8_store8(float* C, const __m256i sums, float a_scale, const float* w_scale, int64_t row0,
                      int64_t first_row, int64_t N, float beta) {
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(_mm256_set1_ps(a_scale), _mm256_loadu_ps(w_scale + row0)));
    const int64_t begin = std::max<int64_t>(row0, first_row), end = std::min<int64_t>(row0 + 8, first_row + N);
    if (begin == row0 && end == row0 + 8) {
        float* c = C + (row0 - first_row);
        if (beta != 0.0f) v = _mm256_add_ps(_mm256_loadu_ps(c), v);
        _mm256_storeu_ps(c, v);
        return;
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, v);
    store_int8_rows(C, lanes, row0, begin, end, first_row, beta);
}

// MB rows of A times RB blocks of 16 rows of W (blocks block0 ..), stored for the rows in range.
template <int MB, int RB>
inline void s8_tile(float* C, int64_t ldc, const uint8_t* A, int64_t lda, const float* a_scale, const Int8View& W,
                    int64_t block0, int64_t first_row, int64_t N, float beta) {
    const __m256i ones = _mm256_set1_epi16(1), zero_point = _mm256_set1_epi8(static_cast<char>(0x80));
    __m256i acc[MB][RB][2];
    for (int b = 0; b < MB; ++b)
        for (int r = 0; r < RB; ++r) acc[b][r][0] = acc[b][r][1] = _mm256_setzero_si256();
    const int8_t* w[RB];
    for (int r = 0; r < RB; ++r) w[r] = W.block(block0 + r);
    for (int64_t g = 0; g < W.groups; ++g) {
        __m256i q[MB];
        for (int b = 0; b < MB; ++b) {
            int32_t four;
            std::memcpy(&four, A + b * lda + 4 * g, 4);
            q[b] = _mm256_xor_si256(_mm256_set1_epi32(four), zero_point);
        }
        for (int r = 0; r < RB; ++r)
            for (int h = 0; h < 2; ++h) {
                const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[r] + g * Int8View::kGroupStride + h * 32));
                const __m256i magnitude = _mm256_abs_epi8(wv);  // -128 becomes 128 as u8
                for (int b = 0; b < MB; ++b) {
                    const __m256i pairs = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(q[b], wv));
                    acc[b][r][h] = _mm256_add_epi32(acc[b][r][h], _mm256_madd_epi16(pairs, ones));
                }
            }
    }
    for (int b = 0; b < MB; ++b)
        for (int r = 0; r < RB; ++r)
            for (int h = 0; h < 2; ++h)
                s8_store8(C + b * ldc, acc[b][r][h], a_scale[b], W.scales, (block0 + r) * 16 + h * 8, first_row, N, beta);
}

void gemm_nt_s8(float* C, int64_t ldc, const uint8_t* A, int64_t lda, const float* a_scale, const Int8View& W,
                int64_t first_row, int64_t M, int64_t N, float beta) {
    if (N <= 0) return;
    const int64_t first = first_row / 16, last = (first_row + N - 1) / 16;  // blocks, inclusive
    // Two blocks of W at a time (their weights stay in registers across the rows of A), two rows
    // of A: 8 accumulators, of 16 registers.
    int64_t block = first;
    for (; block + 2 <= last + 1; block += 2)
        in_row_blocks<2>(M, [&](auto rows, int64_t m) {
            s8_tile<decltype(rows)::value, 2>(C + m * ldc, ldc, A + m * lda, lda, a_scale + m, W, block, first_row, N, beta);
        });
    if (block <= last)
        in_row_blocks<2>(M, [&](auto rows, int64_t m) {
            s8_tile<decltype(rows)::value, 1>(C + m * ldc, ldc, A + m * lda, lda, a_scale + m, W, block, first_row, N, beta);
        });
}

// ---------------------------------------------------------------------------------------------
// Codebooks (weights/codebook.h): the weights decoded in registers as they are read. A 16-value
// book is two registers (values 0-7 and 8-15), looked up by vpermps and chosen by the index's
// bit 3 (moved to the sign for vblendvps); a 256-value book is gathered.

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
        if constexpr (Bits == 4) {  // 8 bytes widened; the index in each lane's bits 0-3 (vpermps reads 0-2)
            __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(indices + (k >> 5) * 16 + (k & 15))));
            if (k & 16) v = _mm256_srli_epi32(v, 4);
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
        k.int8_products = "avx2: |w| u8 x signed q s8 by vpmaddubsw, pairs summed by vpmaddwd";
        k.bf16_products = "avx2: bf16 widened to float32, fma";
        k.gemm_nt_codebook = avx2::gemm_nt_codebook;
        k.codebook_products = "avx2: 16-value books in registers (vpermps), 256-value books gathered; fma";
        k.gemm_nt_s8 = avx2::gemm_nt_s8;
        return k;
    }();
    return table;
}
}  // namespace lstmcpp
