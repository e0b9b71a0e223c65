// The int8 product with AVX512_VNNI (weights/int8.h): vpdpbusd multiplies the activations' bytes
// q + 128 (u8) by 4 consecutive weights of 16 rows (s8) and adds the four products of each row
// into its int32 lane, exactly; the zero point comes off at the end as 128 * row_sum. Its own file
// because its flags (CMakeLists.txt) let the compiler emit VNNI anywhere in it, and only a CPU
// with VNNI may run it (dispatch.cpp checks).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/int8_avx512.h"
#include "kernels/kernels.h"

namespace lstmcpp {
namespace {

// MB rows of A times RB blocks of 16 rows of W, from block block0 (the tails of the tiles below).
template <int MB, int RB>
inline void tile(float* C, int64_t ldc, const uint8_t* A, int64_t lda, const float* a_scale, const Int8View& W,
                 int64_t block0, int64_t first_row, int64_t N, float beta) {
    __m512i acc[MB][RB];
    for (int b = 0; b < MB; ++b)
        for (int r = 0; r < RB; ++r) acc[b][r] = _mm512_setzero_si512();
    const int8_t* w[RB];
    for (int r = 0; r < RB; ++r) w[r] = W.block(block0 + r);
    for (int64_t g = 0; g < W.groups; ++g) {
        __m512i x[MB];
        for (int b = 0; b < MB; ++b) {
            int32_t four;
            std::memcpy(&four, A + b * lda + 4 * g, 4);
            x[b] = _mm512_set1_epi32(four);
        }
        for (int r = 0; r < RB; ++r) {
            const __m512i wv = _mm512_loadu_si512(w[r] + g * Int8View::kGroupStride);
            for (int b = 0; b < MB; ++b) acc[b][r] = _mm512_dpbusd_epi32(acc[b][r], x[b], wv);
        }
    }
    for (int b = 0; b < MB; ++b)
        for (int r = 0; r < RB; ++r)
            store16(C + b * ldc, acc[b][r], W, a_scale[b], (block0 + r) * 16, first_row, N, beta);
}

// The two tiles nearly all the time goes to, with named accumulators: GCC 12 keeps an array of
// them (tile above) in registers only by copying each one twice per group, or spills them.
inline __m512i broadcast4(const uint8_t* p) {
    int32_t four;
    std::memcpy(&four, p, 4);
    return _mm512_set1_epi32(four);
}
#define LSTMCPP_DP(acc, x, w) acc = _mm512_dpbusd_epi32(acc, x, w)

// One row of A (a stream's step) times the 8 blocks of a superblock (block0 a multiple of 8): one
// run of memory, and 8 independent sums hide vpdpbusd's latency.
template <>
inline void tile<1, 8>(float* C, int64_t, const uint8_t* A, int64_t, const float* a_scale, const Int8View& W,
                       int64_t block0, int64_t first_row, int64_t N, float beta) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    const int8_t* w = W.block(block0);
    for (int64_t g = 0; g < W.groups; ++g, w += Int8View::kGroupStride) {
        const __m512i x = broadcast4(A + 4 * g);
        LSTMCPP_DP(a0, x, _mm512_loadu_si512(w));
        LSTMCPP_DP(a1, x, _mm512_loadu_si512(w + 64));
        LSTMCPP_DP(a2, x, _mm512_loadu_si512(w + 128));
        LSTMCPP_DP(a3, x, _mm512_loadu_si512(w + 192));
        LSTMCPP_DP(a4, x, _mm512_loadu_si512(w + 256));
        LSTMCPP_DP(a5, x, _mm512_loadu_si512(w + 320));
        LSTMCPP_DP(a6, x, _mm512_loadu_si512(w + 384));
        LSTMCPP_DP(a7, x, _mm512_loadu_si512(w + 448));
    }
    const __m512i sums[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
    for (int r = 0; r < 8; ++r) store16(C, sums[r], W, a_scale[0], (block0 + r) * 16, first_row, N, beta);
}

// 8 rows of A times 2 blocks of W: 16 sums, 8 broadcasts, a weight vector (of 32 registers).
template <>
inline void tile<8, 2>(float* C, int64_t ldc, const uint8_t* A, int64_t lda, const float* a_scale, const Int8View& W,
                       int64_t block0, int64_t first_row, int64_t N, float beta) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    __m512i b0 = a0, b1 = a0, b2 = a0, b3 = a0, b4 = a0, b5 = a0, b6 = a0, b7 = a0;
    const int8_t* w = W.block(block0);
    const int64_t next = W.block(block0 + 1) - w;  // the second block's offset (64 within a superblock)
    for (int64_t g = 0; g < W.groups; ++g, w += Int8View::kGroupStride) {
        const uint8_t* p = A + 4 * g;
        const __m512i x0 = broadcast4(p), x1 = broadcast4(p + lda), x2 = broadcast4(p + 2 * lda),
                      x3 = broadcast4(p + 3 * lda), x4 = broadcast4(p + 4 * lda), x5 = broadcast4(p + 5 * lda),
                      x6 = broadcast4(p + 6 * lda), x7 = broadcast4(p + 7 * lda);
        const __m512i w0 = _mm512_loadu_si512(w);
        LSTMCPP_DP(a0, x0, w0); LSTMCPP_DP(a1, x1, w0); LSTMCPP_DP(a2, x2, w0); LSTMCPP_DP(a3, x3, w0);
        LSTMCPP_DP(a4, x4, w0); LSTMCPP_DP(a5, x5, w0); LSTMCPP_DP(a6, x6, w0); LSTMCPP_DP(a7, x7, w0);
        const __m512i w1 = _mm512_loadu_si512(w + next);
        LSTMCPP_DP(b0, x0, w1); LSTMCPP_DP(b1, x1, w1); LSTMCPP_DP(b2, x2, w1); LSTMCPP_DP(b3, x3, w1);
        LSTMCPP_DP(b4, x4, w1); LSTMCPP_DP(b5, x5, w1); LSTMCPP_DP(b6, x6, w1); LSTMCPP_DP(b7, x7, w1);
    }
    const __m512i first[8] = {a0, a1, a2, a3, a4, a5, a6, a7}, second[8] = {b0, b1, b2, b3, b4, b5, b6, b7};
    for (int b = 0; b < 8; ++b) {
        store16(C + b * ldc, first[b], W, a_scale[b], block0 * 16, first_row, N, beta);
        store16(C + b * ldc, second[b], W, a_scale[b], (block0 + 1) * 16, first_row, N, beta);
    }
}
#undef LSTMCPP_DP

// Blocks [first, last] of W against MB rows of A, RB blocks at a time.
template <int MB, int RB>
inline void blocks(float* C, int64_t ldc, const uint8_t* A, int64_t lda, const float* a_scale, const Int8View& W,
                   int64_t block, int64_t last, int64_t first_row, int64_t N, float beta) {
    for (; block + RB <= last + 1; block += RB) tile<MB, RB>(C, ldc, A, lda, a_scale, W, block, first_row, N, beta);
    for (; block <= last; ++block) tile<MB, 1>(C, ldc, A, lda, a_scale, W, block, first_row, N, beta);
}

// A stream's step: whole superblocks by tile<1, 8>, the blocks before the first and after the last one by themselves.
inline void stream_blocks(float* C, const uint8_t* A, const float* a_scale, const Int8View& W, int64_t block,
                          int64_t last, int64_t first_row, int64_t N, float beta) {
    constexpr int64_t S = Int8View::kBlocksPerSuper;
    for (; block % S != 0 && block <= last; ++block) tile<1, 1>(C, 0, A, 0, a_scale, W, block, first_row, N, beta);
    blocks<1, 8>(C, 0, A, 0, a_scale, W, block, last, first_row, N, beta);
}

}  // namespace

void gemm_nt_s8_avx512_vnni(float* C, int64_t ldc, const uint8_t* A, int64_t lda, const float* a_scale,
                            const Int8View& W, int64_t first_row, int64_t M, int64_t N, float beta) {
    if (N <= 0 || M <= 0) return;
    const int64_t first = first_row / 16, last = (first_row + N - 1) / 16;
    if (M == 1) {  // a stream: 8 independent accumulators hide vpdpbusd's latency
        stream_blocks(C, A, a_scale, W, first, last, first_row, N, beta);
        return;
    }
    // 2 blocks of W, 8 rows of A at a time: 16 accumulators, 8 broadcasts and a weight vector,
    // of 32 registers. Blocks outside, rows inside: a pair of blocks (32 * K bytes, 16 KiB at
    // K = 512) stays in L1 while every row of A passes it.
    for (int64_t block = first; block <= last; block += 2) {
        const int64_t end = std::min(block + 1, last);
        int64_t m = 0;
        for (; m + 8 <= M; m += 8)
            blocks<8, 2>(C + m * ldc, ldc, A + m * lda, lda, a_scale + m, W, block, end, first_row, N, beta);
        float* c = C + m * ldc;
        const uint8_t* a = A + m * lda;
        switch (M - m) {
            case 7: blocks<7, 2>(c, ldc, a, lda, a_scale + m, W, block, end, first_row, N, beta); break;
            case 6: blocks<6, 2>(c, ldc, a, lda, a_scale + m, W, block, end, first_row, N, beta); break;
            case 5: blocks<5, 2>(c, ldc, a, lda, a_scale + m, W, block, end, first_row, N, beta); break;
            case 4: blocks<4, 2>(c, ldc, a, lda, a_scale + m, W, block, end, first_row, N, beta); break;
            case 3: blocks<3, 2>(c, ldc, a, lda, a_scale + m, W, block, end, first_row, N, beta); break;
            case 2: blocks<2, 2>(c, ldc, a, lda, a_scale + m, W, block, end, first_row, N, beta); break;
            case 1: blocks<1, 2>(c, ldc, a, lda, a_scale + m, W, block, end, first_row, N, beta); break;
            default: break;
        }
    }
}

}  // namespace lstmcpp
