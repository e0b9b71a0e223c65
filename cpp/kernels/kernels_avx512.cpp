// The AVX-512 kernels: simd_kernels.h over 16-float vectors (the gates' elementwise work and the
// small-batch products), with AVX-512's own scaling and reciprocal instructions (CMakeLists.txt
// gives this file its flags).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/kernels.h"

namespace lstmcpp {

// The int8 products an AVX-512 CPU runs: AMX's (kernels_avx512_amx.cpp) where it has AMX, VNNI's
// (kernels_avx512_vnni.cpp) where it has VNNI, AVX2's where neither.
void gemm_nt_s8_avx512_vnni(float* C, int64_t ldc, const uint8_t* A, int64_t lda, const float* a_scale,
                            const Int8View& W, int64_t first_row, int64_t M, int64_t N, float beta);
void gemm_nt_s8_avx512_amx(float* C, int64_t ldc, const uint8_t* A, int64_t lda, const float* a_scale,
                           const Int8View& W, int64_t first_row, int64_t M, int64_t N, float beta);
const Kernels<float>& kernels_f32_avx2();

namespace avx512 {
#include "kernels_impl.h"

// 16 floats a vector (simd_kernels.h's vector traits).
struct Vec16 {
    using reg = __m512;
    using mask = __mmask16;
    static constexpr int lanes = 16;
    static reg zero() { return _mm512_setzero_ps(); }
    static reg load(const float* p) { return _mm512_loadu_ps(p); }
    static reg load_masked(const float* p, mask m) { return _mm512_maskz_loadu_ps(m, p); }
    static void store_masked(float* p, mask m, reg v) { _mm512_mask_storeu_ps(p, m, v); }
    static reg broadcast(const float* p) { return _mm512_set1_ps(*p); }
    static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
    static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
    // 16 x 16: within each 128-bit lane 4 x 4 squares (unpack, shuffle), then the lanes (two rounds
    // of shuffle_f32x4). After the first two rounds u[4g + c]'s lane l holds column 4l + c of rows
    // 4g .. 4g + 3, and column j = 4l + c gathers lane l of u[c], u[4 + c], u[8 + c], u[12 + c].
    static void transpose(reg r[16]) {
        reg t[16], u[16];
        for (int i = 0; i < 16; i += 2) {
            t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int g = 0; g < 16; g += 4) {
            u[g] = _mm512_shuffle_ps(t[g], t[g + 2], 0x44);
            u[g + 1] = _mm512_shuffle_ps(t[g], t[g + 2], 0xEE);
            u[g + 2] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0x44);
            u[g + 3] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
        }
        for (int c = 0; c < 4; ++c) {
            const reg low01 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), high01 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
            const reg low23 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44), high23 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
            r[c] = _mm512_shuffle_f32x4(low01, low23, 0x88);
            r[4 + c] = _mm512_shuffle_f32x4(low01, low23, 0xDD);
            r[8 + c] = _mm512_shuffle_f32x4(high01, high23, 0x88);
            r[12 + c] = _mm512_shuffle_f32x4(high01, high23, 0xDD);
        }
    }
    static reg widen_bf16(const uint16_t* p) {
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
    }
    static reg widen_bf16_masked(const uint16_t* p, mask m) {
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
    }
    static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
    static reg set1(float v) { return _mm512_set1_ps(v); }
    static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
    static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
    static reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
    static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
    static reg fnmadd(reg a, reg b, reg c) { return _mm512_fnmadd_ps(a, b, c); }
    static reg and_(reg a, reg b) { return _mm512_and_ps(a, b); }
    static reg andnot(reg a, reg b) { return _mm512_andnot_ps(a, b); }
    static reg or_(reg a, reg b) { return _mm512_or_ps(a, b); }
    static reg round(reg a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static reg scale2n(reg p, reg n) { return _mm512_scalef_ps(p, n); }
    // vrcp14ps and one Newton step (relative error about 2^-28): divisions issue slowly on Zen 4 and Intel
    static reg reciprocal(reg d) {
        const reg r = _mm512_rcp14_ps(d);
        return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(1.0f)), r);  // r + r(1 - dr)
    }
    static reg keep_inside(reg v, reg x, reg limit) {
        return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_abs_ps(x), limit, _CMP_LT_OQ), v);
    }
    // the first `remaining` lanes on
    static mask tail_mask(int64_t remaining) {
        return remaining >= 16 ? __mmask16(0xFFFF) : remaining <= 0 ? __mmask16(0) : __mmask16((1u << remaining) - 1);
    }
    // [sum(a), sum(b), sum(c), sum(d)]: four dot products finished together.
    static __m128 sum4(reg a, reg b, reg c, reg d) {
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
    static float sum1(reg a) {
        __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
        __m256 pairs = _mm256_hadd_ps(a8, a8);
        __m256 quads = _mm256_hadd_ps(pairs, pairs);
        return _mm_cvtss_f32(_mm_add_ps(_mm256_castps256_ps128(quads), _mm256_extractf128_ps(quads, 1)));
    }
};

#include "simd_kernels.h"

// 32 registers: 4-row tiles for the row-dot products, 8-row tiles for the packed kernel.
constexpr int64_t kPanel = 2 * Vec16::lanes;

// ---------------------------------------------------------------------------------------------
// Codebooks (weights/codebook.h), decoded in registers 32 weights at a time. A 16-value book is
// one register: 16 index bytes widened to 16 lanes (vpmovzxbd) select the first 16 weights by
// vpermps, which reads each lane's low 4 bits, and shifted right by 4 the next 16 (the layout of
// kernels.h). A 256-value book is gathered.
template <int Bits>
struct CodebookRow16 {
    __m512 book16;
    const float* book;
    const uint8_t* indices;

    void start(const CodebookView& W, int64_t n) {
        indices = W.indices + n * W.ld;
        book = W.books + (n / W.rows_per_book) * W.book_size;
        if constexpr (Bits == 4) book16 = _mm512_loadu_ps(book);
    }
    // weights k .. k+15 into w0 and k+16 .. k+31 into w1 (k a multiple of 32; past K the
    // padding's index 0 meets activations loaded as 0)
    void decode(int64_t k, __m512& w0, __m512& w1) const {
        if constexpr (Bits == 4) {
            const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(indices + k / 2)));
            w0 = _mm512_permutexvar_ps(v, book16);
            w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), book16);
        } else {
            const __m512i v0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(indices + k)));
            const __m512i v1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(indices + k + 16)));
            w0 = _mm512_i32gather_ps(v0, book, 4);
            w1 = _mm512_i32gather_ps(v1, book, 4);
        }
    }
};

// C[b, 0..R) (+)= A[b, :] . W[first + r, :] for MB rows of A and R (4 or 1) rows of W. Each row's
// sum is the same sequence of fma into one vector and the same final tree (Vec16::sum4's lane r
// equals sum1), whichever tile computes it: results do not move with the thread split.
template <int Bits, int MB, int R>
inline void codebook_tile(float* C, int64_t ldc, const float* A, int64_t lda, const CodebookView& W, int64_t first,
                          int64_t K, float beta) {
    CodebookRow16<Bits> rows[R];
    for (int r = 0; r < R; ++r) rows[r].start(W, first + r);
    __m512 acc[MB][R];
    for (int b = 0; b < MB; ++b)
        for (int r = 0; r < R; ++r) acc[b][r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 32) {
        const __mmask16 m0 = Vec16::tail_mask(K - k), m1 = Vec16::tail_mask(K - k - 16);
        __m512 w0[R], w1[R];
        for (int r = 0; r < R; ++r) rows[r].decode(k, w0[r], w1[r]);
        for (int b = 0; b < MB; ++b) {
            const __m512 x0 = _mm512_maskz_loadu_ps(m0, A + b * lda + k), x1 = _mm512_maskz_loadu_ps(m1, A + b * lda + k + 16);
            for (int r = 0; r < R; ++r) acc[b][r] = _mm512_fmadd_ps(w1[r], x1, _mm512_fmadd_ps(w0[r], x0, acc[b][r]));
        }
    }
    for (int b = 0; b < MB; ++b) {
        if constexpr (R == 4) {
            __m128 v = Vec16::sum4(acc[b][0], acc[b][1], acc[b][2], acc[b][3]);
            if (beta != 0.0f) v = _mm_add_ps(_mm_loadu_ps(C + b * ldc), v);
            _mm_storeu_ps(C + b * ldc, v);
        } else {
            const float v = Vec16::sum1(acc[b][0]);
            C[b * ldc] = beta != 0.0f ? C[b * ldc] + v : v;
        }
    }
}

template <int Bits, int MB>
inline void codebook_rows(float* C, int64_t ldc, const float* A, int64_t lda, const CodebookView& W, int64_t first_row,
                          int64_t N, int64_t K, float beta) {
    int64_t n = 0;
    for (; n + 4 <= N; n += 4) codebook_tile<Bits, MB, 4>(C + n, ldc, A, lda, W, first_row + n, K, beta);
    for (; n < N; ++n) codebook_tile<Bits, MB, 1>(C + n, ldc, A, lda, W, first_row + n, K, beta);
}

void gemm_nt_codebook(float* C, int64_t ldc, const float* A, int64_t lda, const CodebookView& W, int64_t first_row,
                      int64_t M, int64_t N, int64_t K, float beta) {
    // Up to 4 rows of A share each decoded vector (4 x 4 accumulators, 8 decoded vectors, 2 of A).
    in_row_blocks<4>(M, [&](auto block, int64_t m) {
        constexpr int MB = decltype(block)::value;
        if (W.bits == 4) codebook_rows<4, MB>(C + m * ldc, ldc, A + m * lda, lda, W, first_row, N, K, beta);
        else codebook_rows<8, MB>(C + m * ldc, ldc, A + m * lda, lda, W, first_row, N, K, beta);
    });
}

// Rows of a codebook matrix as float32 (kernels.h, decode_codebook): 32 weights a block, as the
// products decode them, stored under a mask past K.
void decode_codebook(float* out, int64_t ldo, const CodebookView& W, int64_t first_row, int64_t N, int64_t K) {
    const auto rows = [&](auto bits) {
        for (int64_t n = 0; n < N; ++n) {
            CodebookRow16<decltype(bits)::value> row;
            row.start(W, first_row + n);
            float* o = out + n * ldo;
            for (int64_t k = 0; k < K; k += 32) {
                __m512 w0, w1;
                row.decode(k, w0, w1);
                _mm512_mask_storeu_ps(o + k, Vec16::tail_mask(K - k), w0);
                _mm512_mask_storeu_ps(o + k + 16, Vec16::tail_mask(K - k - 16), w1);
            }
        }
    };
    if (W.bits == 4) rows(std::integral_constant<int, 4>{});
    else rows(std::integral_constant<int, 8>{});
}

// The activations of the int8 products (kernels.h, quantize_rows), 16 at a time: the scale from
// each row's largest magnitude, then q = round(a / scale) (half to even, MXCSR's default) clamped
// to [-127, 127], narrowed to bytes by vpmovsdb and offset by the zero point 128.
void quantize_rows(uint8_t* q, int64_t ldq, float* scale, const float* a, int64_t lda, int64_t M, int64_t K) {
    const __m512 largest = _mm512_set1_ps(3.4028234663852886e38f), hi = _mm512_set1_ps(127.0f), lo = _mm512_set1_ps(-127.0f);
    const __m128i zero_point = _mm_set1_epi8(static_cast<char>(0x80));
    const int64_t Kp = padded16(K);
    for (int64_t m = 0; m < M; ++m) {
        const float* row = a + m * lda;
        __m512 vmax = _mm512_setzero_ps();
        __mmask16 bad = 0;
        for (int64_t k = 0; k < K; k += 16) {
            const __m512 v = _mm512_abs_ps(_mm512_maskz_loadu_ps(Vec16::tail_mask(K - k), row + k));
            bad |= _mm512_cmp_ps_mask(v, largest, _CMP_NLE_UQ);  // NaN or Inf
            vmax = _mm512_max_ps(vmax, v);
        }
        const bool finite = bad == 0;
        float inv;
        row_scale(finite ? _mm512_reduce_max_ps(vmax) : __builtin_nanf(""), scale + m, &inv);
        const __m512 vinv = _mm512_set1_ps(inv);
        uint8_t* out = q + m * ldq;
        for (int64_t k = 0; k < Kp; k += 16) {
            __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(Vec16::tail_mask(K - k), row + k), vinv);
            v = _mm512_max_ps(lo, _mm512_min_ps(hi, v));
            __m128i bytes = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v));
            if (!finite) bytes = _mm_setzero_si128();
            _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k), _mm_xor_si128(bytes, zero_point));
        }
    }
}

}  // namespace avx512

const Kernels<float>& kernels_f32_avx512(bool vnni, bool amx) {
    static const auto make = [](bool with_vnni, bool with_amx) {
        Kernels<float> k = avx512::make_kernels<float>(with_amx ? "avx512_amx" : "avx512");
        k.gemm_nt = avx512::gemm_nt_tiles<avx512::Vec16, 4>;
        k.gemm_nt_bf16 = avx512::gemm_nt_tiles<avx512::Vec16, 4, avx512::Bf16<avx512::Vec16>>;
        const Kernels<float>& avx2 = kernels_f32_avx2();
        k.quantize_rows = avx512::quantize_rows;
        k.gemm_nt_s8 = with_vnni ? gemm_nt_s8_avx512_vnni : avx2.gemm_nt_s8;
        k.int8_products = with_vnni ? "avx512_vnni: u8 x s8 by vpdpbusd, 4 sums a lane, zero point 128 subtracted"
                                    : avx2.int8_products;
        if (with_amx) {
            k.gemm_nt_s8 = gemm_nt_s8_avx512_amx;
            k.int8_products = "avx512_amx: 8 rows and more by AMX tiles (tdpbusd, 16x16 sums of 64 u8 x s8), "
                              "a stream's one row by vpdpbusd; zero point 128 subtracted";
        }
        k.bf16_products = "avx512: bf16 widened to float32, fma";
        k.gemm_nt_codebook = avx512::gemm_nt_codebook;
        k.decode_codebook = avx512::decode_codebook;
        k.codebook_products = "avx512: 16-value books in a register (vpermps), 256-value books gathered; fma";
        k.gemm_nn = avx512::gemm_nn_tiles<avx512::Vec16, 4>;
        k.panel_width = avx512::kPanel;
        k.gemm_packed = avx512::gemm_packed_tiles<avx512::Vec16, 8>;
        k.pack_rows = avx512::pack_rows_v<avx512::Vec16>;
        k.gates_forward = avx512::gates_forward_v<avx512::Vec16>;
        k.gates_backward = avx512::gates_backward_v<avx512::Vec16>;
        k.sigmoid = avx512::elementwise_v<avx512::Vec16, avx512::sigmoid_v<avx512::Vec16>>;
        k.tanh = avx512::elementwise_v<avx512::Vec16, avx512::tanh_v<avx512::Vec16>>;
        k.exp = avx512::elementwise_v<avx512::Vec16, avx512::exp_v<avx512::Vec16>>;
        return k;
    };
    static const Kernels<float> with_amx = make(true, true), with_vnni = make(true, false), without = make(false, false);
    return amx ? with_amx : vnni ? with_vnni : without;
}
}  // namespace lstmcpp
