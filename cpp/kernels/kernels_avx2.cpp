// The AVX2+FMA kernels: simd_kernels.h over 8-float vectors (the gates' elementwise work and the
// small-batch products), and the int8 products (CMakeLists.txt gives this file its flags).
#include <immintrin.h>

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/kernels.h"

namespace lstmcpp {
namespace avx2 {
#include "kernels_impl.h"

// A lane mask, and whether every lane is on: vmaskmovps stores cost about 17 cycles on a Zen 3
// even with every lane on (measured: 7.1 against 1.6 ns a vector), and the loops' masks are
// nearly always full, so a full mask takes the plain load and store.
struct Mask8 {
    __m256i bits;
    bool full;
};

// 8 floats a vector (simd_kernels.h's vector traits).
struct Vec8 {
    using reg = __m256;
    using mask = Mask8;
    static constexpr int lanes = 8;
    static reg zero() { return _mm256_setzero_ps(); }
    static reg load(const float* p) { return _mm256_loadu_ps(p); }
    static reg load_masked(const float* p, mask m) { return m.full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m.bits); }
    static void store_masked(float* p, mask m, reg v) {
        if (m.full) _mm256_storeu_ps(p, v);
        else _mm256_maskstore_ps(p, m.bits, v);
    }
    static reg broadcast(const float* p) { return _mm256_broadcast_ss(p); }
    static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
    static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
    // 8 x 8: 4 x 4 squares within each 128-bit half (unpack, shuffle), then the halves: after the
    // first two rounds u[4g + c]'s half l holds column 4l + c of rows 4g .. 4g + 3.
    static void transpose(reg r[8]) {
        reg t[8], u[8];
        for (int i = 0; i < 8; i += 2) {
            t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int g = 0; g < 8; g += 4) {
            u[g] = _mm256_shuffle_ps(t[g], t[g + 2], 0x44);
            u[g + 1] = _mm256_shuffle_ps(t[g], t[g + 2], 0xEE);
            u[g + 2] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0x44);
            u[g + 3] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
        }
        for (int c = 0; c < 4; ++c) {
            r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
            r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
        }
    }
    static reg widen_bf16(const uint16_t* p) {
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
    }
    static reg widen_bf16_masked(const uint16_t* p, mask m) {  // lane by lane: a masked 16-bit load AVX2 lacks
        if (m.full) return widen_bf16(p);
        alignas(32) int32_t on[8];
        alignas(16) uint16_t values[8] = {0};
        _mm256_store_si256(reinterpret_cast<__m256i*>(on), m.bits);
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
        return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(table + 8 - on)), on == 8};
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
            const __m256 v = _mm256_andnot_ps(sign, Vec8::load_masked(row + k, Vec8::tail_mask(K - k)));
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
            __m256 v0 = _mm256_mul_ps(Vec8::load_masked(row + k, Vec8::tail_mask(K - k)), vinv);
            __m256 v1 = _mm256_mul_ps(Vec8::load_masked(row + k + 8, Vec8::tail_mask(K - k - 8)), vinv);
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

inline __m256i broadcast4(const uint8_t* p) {  // 4 bytes, in every lane
    int32_t four;
    std::memcpy(&four, p, 4);
    return _mm256_set1_epi32(four);
}

// MB rows of A times one block of 16 rows of W, |w| times q with w's sign, stored for the rows in
// range: the rows and blocks the named-accumulator tiles below leave over.
template <int MB>
inline void s8_tile(float* C, int64_t ldc, const uint8_t* A, int64_t lda, const float* a_scale, const Int8View& W,
                    int64_t block, int64_t first_row, int64_t N, float beta) {
    const __m256i ones = _mm256_set1_epi16(1), zero_point = _mm256_set1_epi8(static_cast<char>(0x80));
    __m256i acc[MB][2];
    for (int b = 0; b < MB; ++b) acc[b][0] = acc[b][1] = _mm256_setzero_si256();
    const int8_t* w = W.block(block);
    for (int64_t g = 0; g < W.groups; ++g) {
        __m256i q[MB];
        for (int b = 0; b < MB; ++b) q[b] = _mm256_xor_si256(broadcast4(A + b * lda + 4 * g), zero_point);
        for (int h = 0; h < 2; ++h) {
            const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + g * Int8View::kGroupStride + h * 32));
            const __m256i magnitude = _mm256_abs_epi8(wv);  // -128 becomes 128 as u8
            for (int b = 0; b < MB; ++b) {
                const __m256i pairs = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(q[b], wv));
                acc[b][h] = _mm256_add_epi32(acc[b][h], _mm256_madd_epi16(pairs, ones));
            }
        }
    }
    for (int b = 0; b < MB; ++b)
        for (int h = 0; h < 2; ++h)
            s8_store8(C + b * ldc, acc[b][h], a_scale[b], W.scales, block * 16 + h * 8, first_row, N, beta);
}

// The two tiles nearly all the time goes to, with named accumulators: GCC 12 keeps s8_tile's
// arrays in registers only by copying them each group, or spills them to the stack. Unless a
// weight is -128 (Int8View::has_min; lstmcpp's own never are, PyTorch's often are), they multiply
// |q| (u8) by w with q's sign (s8, |w| <= 127): a weight vector costs a sign, a vpmaddubsw, a
// vpmaddwd and an add, one operation fewer than |w| times q with w's sign, which a matrix holding
// -128 (whose negation int8 lacks) takes instead (Min). A batch's rows of activations are turned
// into q and |q| once a call (SignedRows), not once a block of W.
struct SignedRows {
    const uint8_t* q;    // (M, ld) q as signed bytes
    const uint8_t* abs;  // (M, ld) |q|
    int64_t ld;
};

// A's rows (bytes q + 128, 4 * groups of them read) as q and |q|, in this thread's buffer (which
// grows to the largest call seen).
inline SignedRows signed_rows(const uint8_t* A, int64_t lda, int64_t M, int64_t groups) {
    thread_local std::vector<uint8_t> buffer;
    const int64_t width = 4 * groups, ld = (width + 15) / 16 * 16;
    if (static_cast<int64_t>(buffer.size()) < 2 * M * ld) buffer.resize(2 * M * ld);
    uint8_t* q = buffer.data();
    uint8_t* magnitude = q + M * ld;
    const __m128i zero_point = _mm_set1_epi8(static_cast<char>(0x80));
    for (int64_t m = 0; m < M; ++m) {
        int64_t k = 0;
        for (; k + 16 <= width; k += 16) {
            const __m128i v = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(A + m * lda + k)), zero_point);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(q + m * ld + k), v);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(magnitude + m * ld + k), _mm_abs_epi8(v));
        }
        for (; k < width; ++k) {
            const int8_t v = static_cast<int8_t>(A[m * lda + k] ^ 0x80);
            q[m * ld + k] = static_cast<uint8_t>(v);
            magnitude[m * ld + k] = static_cast<uint8_t>(v < 0 ? -v : v);
        }
    }
    return {q, magnitude, ld};
}

// The exact sums of the 4 products in each of the 8 lanes of q (broadcast; aq = |q|) times the
// 32 weights of wv (4 each of 8 rows; mw = |wv|, read only when Min).
template <bool Min>
inline __m256i s8_dot(__m256i q, __m256i aq, __m256i wv, __m256i mw, __m256i ones) {
    const __m256i pairs = Min ? _mm256_maddubs_epi16(mw, _mm256_sign_epi8(q, wv)) : _mm256_maddubs_epi16(aq, _mm256_sign_epi8(wv, q));
    return _mm256_madd_epi16(pairs, ones);
}
#define LSTMCPP_S8(acc, q, aq, wv, mw) acc = _mm256_add_epi32(acc, s8_dot<Min>(q, aq, wv, mw, ones))

// 4 rows of A times one block of W: 8 sums.
template <bool Min>
inline void s8_tile4(float* C, int64_t ldc, const SignedRows& A, int64_t m, const float* a_scale, const Int8View& W,
                     int64_t block, int64_t first_row, int64_t N, float beta) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0;
    const int8_t* w = W.block(block);
    const uint8_t* q = A.q + m * A.ld;
    const uint8_t* aq = A.abs + m * A.ld;
    const int64_t ld = A.ld;
    for (int64_t g = 0; g < W.groups; ++g, w += Int8View::kGroupStride, q += 4, aq += 4) {
        const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
        const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32));
        const __m256i m0 = Min ? _mm256_abs_epi8(w0) : w0, m1 = Min ? _mm256_abs_epi8(w1) : w1;
        __m256i x = broadcast4(q), ax = Min ? x : broadcast4(aq);
        LSTMCPP_S8(a0, x, ax, w0, m0);
        LSTMCPP_S8(a1, x, ax, w1, m1);
        x = broadcast4(q + ld), ax = Min ? x : broadcast4(aq + ld);
        LSTMCPP_S8(b0, x, ax, w0, m0);
        LSTMCPP_S8(b1, x, ax, w1, m1);
        x = broadcast4(q + 2 * ld), ax = Min ? x : broadcast4(aq + 2 * ld);
        LSTMCPP_S8(c0, x, ax, w0, m0);
        LSTMCPP_S8(c1, x, ax, w1, m1);
        x = broadcast4(q + 3 * ld), ax = Min ? x : broadcast4(aq + 3 * ld);
        LSTMCPP_S8(d0, x, ax, w0, m0);
        LSTMCPP_S8(d1, x, ax, w1, m1);
    }
    const int64_t row0 = block * 16;
    const __m256i sums[4][2] = {{a0, a1}, {b0, b1}, {c0, c1}, {d0, d1}};
    for (int b = 0; b < 4; ++b)
        for (int h = 0; h < 2; ++h) s8_store8(C + b * ldc, sums[b][h], a_scale[b], W.scales, row0 + 8 * h, first_row, N, beta);
}

// One row of A (a stream's step) times 4 blocks of a superblock (block0 a multiple of 4): one
// run of 256 bytes a group, 8 independent sums. q and |q| from the bytes q + 128 as it goes: for
// one row of A a pass of its own was not worth it (100 step calls of H = 128 took 1.06-1.19x the
// time in three interleaved runs).
template <bool Min>
inline void s8_stream4(float* C, const uint8_t* A, const float* a_scale, const Int8View& W, int64_t block0,
                       int64_t first_row, int64_t N, float beta) {
    const __m256i ones = _mm256_set1_epi16(1), zero_point = _mm256_set1_epi8(static_cast<char>(0x80));
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    const int8_t* w = W.block(block0);
    for (int64_t g = 0; g < W.groups; ++g, w += Int8View::kGroupStride) {
        const __m256i x = _mm256_xor_si256(broadcast4(A + 4 * g), zero_point), ax = Min ? x : _mm256_abs_epi8(x);
        const __m256i* v = reinterpret_cast<const __m256i*>(w);
        __m256i wv;
#define LSTMCPP_S8_NEXT(acc, i) wv = _mm256_loadu_si256(v + i); LSTMCPP_S8(acc, x, ax, wv, Min ? _mm256_abs_epi8(wv) : wv);
        LSTMCPP_S8_NEXT(a0, 0)
        LSTMCPP_S8_NEXT(a1, 1)
        LSTMCPP_S8_NEXT(a2, 2)
        LSTMCPP_S8_NEXT(a3, 3)
        LSTMCPP_S8_NEXT(a4, 4)
        LSTMCPP_S8_NEXT(a5, 5)
        LSTMCPP_S8_NEXT(a6, 6)
        LSTMCPP_S8_NEXT(a7, 7)
#undef LSTMCPP_S8_NEXT
    }
    const __m256i sums[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
    for (int v = 0; v < 8; ++v) s8_store8(C, sums[v], a_scale[0], W.scales, block0 * 16 + 8 * v, first_row, N, beta);
}
#undef LSTMCPP_S8

template <bool Min>
void gemm_nt_s8_tiles(float* C, int64_t ldc, const uint8_t* A, int64_t lda, const float* a_scale, const Int8View& W,
                      int64_t first_row, int64_t M, int64_t N, float beta) {
    const int64_t first = first_row / 16, last = (first_row + N - 1) / 16;  // blocks, inclusive
    const auto tail = [&](auto rows, int64_t m, int64_t block) {  // s8_tile: |w| times q with w's sign
        s8_tile<decltype(rows)::value>(C + m * ldc, ldc, A + m * lda, lda, a_scale + m, W, block, first_row, N, beta);
    };
    if (M == 1) {  // a stream: whole half-superblocks by s8_stream4, the blocks around them one by one
        int64_t block = first;
        for (; block % 4 != 0 && block <= last; ++block) tail(RowCount<1>{}, 0, block);
        for (; block + 4 <= last + 1; block += 4) s8_stream4<Min>(C, A, a_scale, W, block, first_row, N, beta);
        for (; block <= last; ++block) tail(RowCount<1>{}, 0, block);
        return;
    }
    const SignedRows signed_a = signed_rows(A, lda, M, W.groups);
    // Blocks outside, rows inside: a block (16 * K bytes, 8 KiB at K = 512) stays in L1 while
    // every row of A passes it, 4 rows at a time.
    for (int64_t block = first; block <= last; ++block) {
        int64_t m = 0;
        for (; m + 4 <= M; m += 4) s8_tile4<Min>(C + m * ldc, ldc, signed_a, m, a_scale + m, W, block, first_row, N, beta);
        last_rows<3>(M - m, m, [&](auto rows, int64_t m0) { tail(rows, m0, block); });
    }
}

void gemm_nt_s8(float* C, int64_t ldc, const uint8_t* A, int64_t lda, const float* a_scale, const Int8View& W,
                int64_t first_row, int64_t M, int64_t N, float beta) {
    if (N <= 0 || M <= 0) return;
    if (W.has_min) gemm_nt_s8_tiles<true>(C, ldc, A, lda, a_scale, W, first_row, M, N, beta);
    else gemm_nt_s8_tiles<false>(C, ldc, A, lda, a_scale, W, first_row, M, N, beta);
}

// ---------------------------------------------------------------------------------------------
// bf16 (weights/bf16.h), read in place. 16 weights load as one vector whose 32-bit lane j holds
// weights 2j (low half) and 2j + 1 (high half); shifting left by 16 makes the first a float32,
// masking off the low half the second, exactly. So the activations are split once a call into
// their even and odd values per 16 (split_even_odd), and each 16 weights cost a load, a shift, an
// and and two multiply-adds, against two widening loads, two shifts and two multiply-adds.

template <int A, int B>
struct Tile {  // a tile's height and width, as types
    static constexpr int first = A, second = B;
};

// A's rows, each whole 16 values as their 8 even ones then their 8 odd ones, in this thread's
// buffer (grown to the largest call seen).
inline const float* split_even_odd(const float* A, int64_t lda, int64_t M, int64_t K16) {
    thread_local std::vector<float> buffer;
    if (static_cast<int64_t>(buffer.size()) < M * K16) buffer.resize(M * K16);
    float* out = buffer.data();
    for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < K16; k += 16) {
            const __m256 lo = _mm256_loadu_ps(A + m * lda + k), hi = _mm256_loadu_ps(A + m * lda + k + 8);
            // (lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6), then the 64-bit pairs in order 0, 2, 1, 3
            const __m256 even = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
            const __m256 odd = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
            _mm256_storeu_ps(out + m * K16 + k, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), 0xD8)));
            _mm256_storeu_ps(out + m * K16 + k + 8, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(odd), 0xD8)));
        }
    return out;
}

// C[b, 0..R) (+)= A[b, :] . W[r, :] for MB rows of A and R rows of W. Each sum takes a chunk's
// even weights, then its odd ones, whatever the tile, so a row's result does not depend on the
// tiles (nor on the number of threads, which moves them).
template <int MB, int R>
inline void bf16_tile(float* C, int64_t ldc, const float* A, int64_t lda, const float* split, int64_t K16,
                      const uint16_t* W, int64_t ldw, int64_t K, float beta) {
    const __m256i high = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
    __m256 acc[MB][R];
    for (int b = 0; b < MB; ++b)
        for (int r = 0; r < R; ++r) acc[b][r] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K16; k += 16) {
        __m256 ae[MB], ao[MB];
        for (int b = 0; b < MB; ++b) {
            ae[b] = _mm256_loadu_ps(split + b * K16 + k);
            ao[b] = _mm256_loadu_ps(split + b * K16 + k + 8);
        }
        for (int r = 0; r < R; ++r) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(W + r * ldw + k));
            const __m256 we = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
            const __m256 wo = _mm256_castsi256_ps(_mm256_and_si256(v, high));
            for (int b = 0; b < MB; ++b) acc[b][r] = _mm256_fmadd_ps(wo, ao[b], _mm256_fmadd_ps(we, ae[b], acc[b][r]));
        }
    }
    for (int64_t k = K16; k < K; k += 8) {  // the last K % 16 values, widened
        const Mask8 mask = Vec8::tail_mask(K - k);
        for (int r = 0; r < R; ++r) {
            const __m256 w = Vec8::widen_bf16_masked(W + r * ldw + k, mask);
            for (int b = 0; b < MB; ++b) acc[b][r] = _mm256_fmadd_ps(w, Vec8::load_masked(A + b * lda + k, mask), acc[b][r]);
        }
    }
    for (int b = 0; b < MB; ++b) {
        float* c = C + b * ldc;
        int r = 0;
        for (; r + 4 <= R; r += 4) {
            __m128 s = Vec8::sum4(acc[b][r], acc[b][r + 1], acc[b][r + 2], acc[b][r + 3]);
            if (beta != 0.0f) s = _mm_add_ps(s, _mm_loadu_ps(c + r));
            _mm_storeu_ps(c + r, s);
        }
        for (; r < R; ++r) {
            const float s = Vec8::sum1(acc[b][r]);
            c[r] = beta != 0.0f ? c[r] + s : s;
        }
    }
}

// C (M,N) = beta*C + A (M,K) W (N,K)^T, W bfloat16. A stream (one row): 8 rows of W at a time
// (8 independent sums). A batch: rows of W outside, 4 at a time (8 KiB at K = 1024, kept in L1),
// rows of A inside, 2 at a time (each weight vector split once for both), so W is read once a
// call rather than once for every tile of A.
void gemm_nt_bf16(float* C, int64_t ldc, const float* A, int64_t lda, const uint16_t* W, int64_t ldw, int64_t M,
                  int64_t N, int64_t K, float beta) {
    if (M <= 0 || N <= 0) return;
    const int64_t K16 = K / 16 * 16;
    const float* split = split_even_odd(A, lda, M, K16);
    const auto rows = [&](auto tile, int64_t m, int64_t n) {
        constexpr int MB = decltype(tile)::first, R = decltype(tile)::second;
        bf16_tile<MB, R>(C + m * ldc + n, ldc, A + m * lda, lda, split + m * K16, K16, W + n * ldw, ldw, K, beta);
    };
    int64_t n = 0;
    if (M == 1)
        for (; n + 8 <= N; n += 8) rows(Tile<1, 8>{}, 0, n);
    for (; n + 4 <= N; n += 4) {
        int64_t m = 0;
        for (; m + 2 <= M; m += 2) rows(Tile<2, 4>{}, m, n);
        if (m < M) rows(Tile<1, 4>{}, m, n);
    }
    for (; n < N; ++n)
        for (int64_t m = 0; m < M; ++m) rows(Tile<1, 1>{}, m, n);
}

// ---------------------------------------------------------------------------------------------
// Codebooks (weights/codebook.h): the weights decoded in registers as they are read. A 16-value
// book is two registers (values 0-7 and 8-15) looked up by vpermps, which reads each lane's bits
// 0-2, and chosen by the index's bit 3 through vblendvps, which reads each lane's sign. A byte
// holds weight k's index in its low half and weight k + 16's in its high half (kernels.h), so
// the bytes widened with their sign give weight k + 16's choice as they are, and weight k's
// after a shift left by 28. A 256-value book is gathered.

template <int Bits>
struct CodebookRow {
    __m256 lo, hi;        // Bits 4: the book in registers
    const float* book;    // Bits 8: gathered from
    const uint8_t* indices;

    CodebookRow() = default;
    CodebookRow(const CodebookView& W, int64_t n) : indices(W.indices + n * W.ld) {
        book = W.books + (n / W.rows_per_book) * W.book_size;
        if constexpr (Bits == 4) {
            lo = _mm256_loadu_ps(book);
            hi = _mm256_loadu_ps(book + 8);
        }
    }
    // weights k .. k+7, k a multiple of 8, High whether k % 32 >= 16 (past K the padding decodes
    // to a value the masked activations multiply by 0)
    template <bool High>
    __m256 decode(int64_t k) const {
        if constexpr (Bits == 4) {
            const __m256i bytes = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(indices + (k >> 5) * 16 + (k & 15))));
            if constexpr (High) {  // bits 4-6 select, the byte's sign chooses
                const __m256i v = _mm256_srli_epi32(bytes, 4);
                return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, v), _mm256_permutevar8x32_ps(hi, v), _mm256_castsi256_ps(bytes));
            }
            return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, bytes), _mm256_permutevar8x32_ps(hi, bytes),
                                    _mm256_castsi256_ps(_mm256_slli_epi32(bytes, 28)));
        } else {
            const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(indices + k)));
            return _mm256_i32gather_ps(book, v, 4);
        }
    }
};

// C[b, n .. n+R) (+)= A[b, :] . W[first_row + n + r, :] for MB rows of A and R rows of W. Each
// (b, r) has one accumulator, one fma chain over k in order, whichever tile computes it, so
// results do not move with the tiles or the thread split; R rows at once give a stream (MB = 1)
// R chains to overlap (one alone waits on each fma's latency). Whole blocks of 32 weights run
// without branches (a branch in the loop made GCC 12 keep the accumulators in memory).
template <int Bits, int MB, int R>
inline void codebook_tile(float* C, int64_t ldc, const float* A, int64_t lda, const CodebookView& W, int64_t first,
                          int64_t K, float beta) {
    CodebookRow<Bits> rows[R];
    for (int r = 0; r < R; ++r) rows[r] = CodebookRow<Bits>(W, first + r);
    __m256 acc[MB * R];  // (b, r) at b * R + r
    for (int i = 0; i < MB * R; ++i) acc[i] = _mm256_setzero_ps();
    auto eight = [&](auto high, int64_t k, const Mask8* tail) {  // tail null: all 8 of A
        __m256 w[R];
        for (int r = 0; r < R; ++r) w[r] = rows[r].template decode<decltype(high)::value>(k);
        for (int b = 0; b < MB; ++b) {
            const __m256 x = tail ? Vec8::load_masked(A + b * lda + k, *tail) : _mm256_loadu_ps(A + b * lda + k);
            for (int r = 0; r < R; ++r) acc[b * R + r] = _mm256_fmadd_ps(w[r], x, acc[b * R + r]);
        }
    };
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
        eight(std::false_type{}, k, nullptr);
        eight(std::false_type{}, k + 8, nullptr);
        eight(std::true_type{}, k + 16, nullptr);
        eight(std::true_type{}, k + 24, nullptr);
    }
    for (; k < K; k += 8) {
        const Mask8 tail = Vec8::tail_mask(K - k);
        if (k & 16) eight(std::true_type{}, k, &tail);
        else eight(std::false_type{}, k, &tail);
    }
    for (int b = 0; b < MB; ++b)
        for (int r = 0; r < R; ++r) {
            const float s = Vec8::sum1(acc[b * R + r]);
            C[b * ldc + r] = beta != 0.0f ? C[b * ldc + r] + s : s;
        }
}

template <int Bits, int MB>
inline void codebook_rows(float* C, int64_t ldc, const float* A, int64_t lda, const CodebookView& W, int64_t first_row,
                          int64_t N, int64_t K, float beta) {
    constexpr int R = MB == 1 ? 4 : MB == 2 ? 2 : 1;  // at most 8 accumulators
    int64_t n = 0;
    for (; n + R <= N; n += R) codebook_tile<Bits, MB, R>(C + n, ldc, A, lda, W, first_row + n, K, beta);
    for (; n < N; ++n) codebook_tile<Bits, MB, 1>(C + n, ldc, A, lda, W, first_row + n, K, beta);
}

// Rows of a codebook matrix as float32 (kernels.h, decode_codebook): 8 weights at a time, as the
// products decode them; a last part of fewer than 8 through a buffer.
void decode_codebook(float* out, int64_t ldo, const CodebookView& W, int64_t first_row, int64_t N, int64_t K) {
    const auto rows = [&](auto bits) {
        constexpr int Bits = decltype(bits)::value;
        for (int64_t n = 0; n < N; ++n) {
            const CodebookRow<Bits> row(W, first_row + n);
            float* o = out + n * ldo;
            for (int64_t k = 0; k < K; k += 8) {
                const __m256 w = (k & 16) ? row.template decode<true>(k) : row.template decode<false>(k);
                if (k + 8 <= K) {
                    _mm256_storeu_ps(o + k, w);
                } else {
                    alignas(32) float last[8];
                    _mm256_store_ps(last, w);
                    for (int64_t j = k; j < K; ++j) o[j] = last[j - k];
                }
            }
        }
    };
    if (W.bits == 4) rows(std::integral_constant<int, 4>{});
    else rows(std::integral_constant<int, 8>{});
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
        k.gemm_nt_bf16 = avx2::gemm_nt_bf16;
        k.gemm_nn = avx2::gemm_nn_tiles<avx2::Vec8, 2>;
        k.panel_width = avx2::kPanel;
        k.gemm_packed = avx2::gemm_packed_tiles<avx2::Vec8, 6>;
        k.pack_rows = avx2::pack_rows_v<avx2::Vec8>;
        k.gates_forward = avx2::gates_forward_v<avx2::Vec8>;
        k.gates_backward = avx2::gates_backward_v<avx2::Vec8>;
        k.sigmoid = avx2::elementwise_v<avx2::Vec8, avx2::sigmoid_v<avx2::Vec8>>;
        k.tanh = avx2::elementwise_v<avx2::Vec8, avx2::tanh_v<avx2::Vec8>>;
        k.exp = avx2::elementwise_v<avx2::Vec8, avx2::exp_v<avx2::Vec8>>;
        k.quantize_rows = avx2::quantize_rows;
        k.int8_products = "avx2: |q| u8 x w with q's sign s8 by vpmaddubsw (|w| x q with w's sign where a weight is -128), pairs summed by vpmaddwd";
        k.bf16_products = "avx2: bf16 pairs split by shift and mask, fma";
        k.gemm_nt_codebook = avx2::gemm_nt_codebook;
        k.decode_codebook = avx2::decode_codebook;
        k.codebook_products = "avx2: 16-value books in registers (vpermps), 256-value books gathered; fma";
        k.gemm_nt_s8 = avx2::gemm_nt_s8;
        return k;
    }();
    return table;
}
}  // namespace lstmcpp
