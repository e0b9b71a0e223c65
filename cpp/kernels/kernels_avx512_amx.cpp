// The int8 product of a batch with AMX (weights/int8.h): TDPBUSD multiplies a tile of 16 rows of
// activation bytes q + 128 (u8, 64 a row) by a tile of 16 groups of 4 weights of 16 rows (s8) and
// adds the 16 x 16 sums, 64 products each, exactly into int32: 16384 multiply-adds an instruction,
// against vpdpbusd's 64. The weights' stored layout is already a tile's: a block's group g is one
// 64-byte row (4 weights of 16 rows), its groups kGroupStride apart, and the groups are padded
// with zeros to a multiple of 16 (weights/int8.cpp), so a tile of 16 groups never reads past
// them. The sums end as VNNI's do (int8_avx512.h), so every path gives the same bits. A stream's
// step (one row) gains nothing from a tile (it reads each weight once either way) and runs VNNI's
// kernel, as do rows too few to fill a tile. Its own file because its flags (CMakeLists.txt) let
// the compiler emit AMX anywhere in it; only a CPU (and OS) that grants AMX may run it (amx_usable).
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "kernels/int8_avx512.h"
#include "kernels/kernels.h"

namespace lstmcpp {

void gemm_nt_s8_avx512_vnni(float* C, int64_t ldc, const uint8_t* A, int64_t lda, const float* a_scale,
                            const Int8View& W, int64_t first_row, int64_t M, int64_t N, float beta);

#if !defined(LSTMCPP_NO_AMX)
namespace {

// The fewest rows of A the tiles take (fewer go to VNNI's kernel): a tile of 16 rows then holds
// at least half of them. Measured on an Intel Xeon (Emerald Rapids), 2 threads, against VNNI's
// kernel: B8 T50 H512 0.85x the time, B16 0.68x, B64 0.52x;
// fewer rows were not measured.
constexpr int64_t kMinRows = 8;

// The tiles' shapes, loaded by LDTILECFG (palette 1). Tiles 0-3: sums (rows x 16 int32); 4-5:
// activations (rows x 64 bytes); 6-7: weights (16 groups x 64 bytes).
struct alignas(64) TileConfig {
    uint8_t palette = 1;
    uint8_t start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t bytes_per_row[16] = {};
    uint8_t rows[16] = {};
};

void configure_tiles(int rows) {
    TileConfig config;
    for (int t = 0; t < 6; ++t) {
        config.rows[t] = static_cast<uint8_t>(rows);
        config.bytes_per_row[t] = 64;
    }
    for (int t = 6; t < 8; ++t) {
        config.rows[t] = 16;
        config.bytes_per_row[t] = 64;
    }
    _tile_loadconfig(&config);
}

// A tile's sums (rows x 16 int32, row by row) as results: `rows` rows of C from C, each the 16
// outputs of W's block `block`.
inline void finish(float* C, int64_t ldc, const int32_t* sums, int rows, const float* a_scale, const Int8View& W,
                   int64_t block, int64_t first_row, int64_t N, float beta) {
    for (int r = 0; r < rows; ++r)
        store16(C + r * ldc, _mm512_load_si512(sums + 16 * r), W, a_scale[r], block * 16, first_row, N, beta);
}

// MB (1 or 2) tiles of `rows` rows of A times NB (1 or 2) blocks of W from `block`: MB x NB sums,
// each weight tile used MB times and each activation tile NB times.
template <int MB, int NB>
void tiles(float* C, int64_t ldc, const uint8_t* A, int64_t lda, const float* a_scale, int rows, const Int8View& W,
           int64_t block, int64_t chunks, int64_t first_row, int64_t N, float beta) {
    constexpr int64_t kChunk = 16 * Int8View::kGroupStride;  // 16 groups of a block
    const int8_t* w0 = W.block(block);
    const int8_t* w1 = NB > 1 ? W.block(block + 1) : w0;
    const uint8_t* a1 = A + rows * lda;
    _tile_zero(0);
    if (NB > 1) _tile_zero(1);
    if (MB > 1) _tile_zero(2);
    if (MB > 1 && NB > 1) _tile_zero(3);
    for (int64_t c = 0; c < chunks; ++c) {
        _tile_loadd(4, A + 64 * c, lda);
        _tile_loadd(6, w0 + c * kChunk, Int8View::kGroupStride);
        _tile_dpbusd(0, 4, 6);
        if (NB > 1) {
            _tile_loadd(7, w1 + c * kChunk, Int8View::kGroupStride);
            _tile_dpbusd(1, 4, 7);
        }
        if (MB > 1) {
            _tile_loadd(5, a1 + 64 * c, lda);
            _tile_dpbusd(2, 5, 6);
            if (NB > 1) _tile_dpbusd(3, 5, 7);
        }
    }
    alignas(64) int32_t sums[16 * 16];
    _tile_stored(0, sums, 64);
    finish(C, ldc, sums, rows, a_scale, W, block, first_row, N, beta);
    if (NB > 1) {
        _tile_stored(1, sums, 64);
        finish(C, ldc, sums, rows, a_scale, W, block + 1, first_row, N, beta);
    }
    if (MB > 1) {
        _tile_stored(2, sums, 64);
        finish(C + rows * ldc, ldc, sums, rows, a_scale + rows, W, block, first_row, N, beta);
    }
    if (MB > 1 && NB > 1) {
        _tile_stored(3, sums, 64);
        finish(C + rows * ldc, ldc, sums, rows, a_scale + rows, W, block + 1, first_row, N, beta);
    }
}

// M rows of A (M a multiple of rows, or fewer than 2 * rows) against blocks [first, last] of W,
// the tiles configured for `rows`. Blocks outside, rows inside: a pair of blocks (32 * K bytes)
// stays in L1 while every row of A passes it.
void rows_of(float* C, int64_t ldc, const uint8_t* A, int64_t lda, const float* a_scale, int64_t M, int rows,
             const Int8View& W, int64_t first, int64_t last, int64_t chunks, int64_t first_row, int64_t N,
             float beta) {
    for (int64_t block = first; block <= last; block += 2) {
        const bool pair = block < last;
        int64_t m = 0;
        for (; m + 2 * rows <= M; m += 2 * rows) {
            if (pair) tiles<2, 2>(C + m * ldc, ldc, A + m * lda, lda, a_scale + m, rows, W, block, chunks, first_row, N, beta);
            else tiles<2, 1>(C + m * ldc, ldc, A + m * lda, lda, a_scale + m, rows, W, block, chunks, first_row, N, beta);
        }
        if (m < M) {
            if (pair) tiles<1, 2>(C + m * ldc, ldc, A + m * lda, lda, a_scale + m, rows, W, block, chunks, first_row, N, beta);
            else tiles<1, 1>(C + m * ldc, ldc, A + m * lda, lda, a_scale + m, rows, W, block, chunks, first_row, N, beta);
        }
    }
}

}  // namespace
#endif  // !LSTMCPP_NO_AMX

bool amx_usable() {
#if defined(__linux__) && defined(SYS_arch_prctl) && !defined(LSTMCPP_NO_AMX)
    // Linux hands out AMX's 8 KiB of tile state only to a process that asks (arch_prctl,
    // ARCH_REQ_XCOMP_PERM for XTILEDATA); the request covers every thread of the process.
    constexpr int kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    static const bool granted = syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
    return granted;
#else
    return false;
#endif
}

void gemm_nt_s8_avx512_amx(float* C, int64_t ldc, const uint8_t* A, int64_t lda, const float* a_scale,
                           const Int8View& W, int64_t first_row, int64_t M, int64_t N, float beta) {
#if defined(LSTMCPP_NO_AMX)  // (never chosen: amx_usable is false)
    gemm_nt_s8_avx512_vnni(C, ldc, A, lda, a_scale, W, first_row, M, N, beta);
#else
    if (N <= 0 || M <= 0) return;
    const int64_t chunks = (W.groups + 15) / 16;
    // Too few rows, or activations or weights not padded for whole tiles of 64 bytes: VNNI's kernel.
    if (M < kMinRows || lda < 64 * chunks || W.ld < 64 * 16 * chunks) {
        gemm_nt_s8_avx512_vnni(C, ldc, A, lda, a_scale, W, first_row, M, N, beta);
        return;
    }
    const int64_t first = first_row / 16, last = (first_row + N - 1) / 16;
    const int64_t whole = M / 16 * 16, rest = M - whole;
    if (whole > 0) {
        configure_tiles(16);
        rows_of(C, ldc, A, lda, a_scale, whole, 16, W, first, last, chunks, first_row, N, beta);
    }
    if (rest >= kMinRows) {
        configure_tiles(static_cast<int>(rest));
        rows_of(C + whole * ldc, ldc, A + whole * lda, lda, a_scale + whole, rest, static_cast<int>(rest), W, first,
                last, chunks, first_row, N, beta);
    }
    _tile_release();
    if (rest > 0 && rest < kMinRows)
        gemm_nt_s8_avx512_vnni(C + whole * ldc, ldc, A + whole * lda, lda, a_scale + whole, W, first_row, rest, N, beta);
#endif
}

}  // namespace lstmcpp
