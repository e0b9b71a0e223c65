// The end of every AVX-512 int8 product (kernels_avx512_vnni.cpp, kernels_avx512_amx.cpp): 16
// exact int32 sums turned into float32 results, the same instructions in the same order on every
// path, so the paths agree to the bit. Included only by files compiled with AVX-512's flags.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/kernels.h"

namespace lstmcpp {
namespace {

// Rows row0 .. row0 + 16 of one row of the result, the lanes outside [first_row, first_row + N) left alone.
inline void store16(float* C, __m512i products, const Int8View& W, float a_scale, int64_t row0, int64_t first_row,
                    int64_t N, float beta) {
    const __m512i row_sums = _mm512_loadu_si512(W.row_sums + row0);
    const __m512i sums = _mm512_sub_epi32(products, _mm512_slli_epi32(row_sums, 7));
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(_mm512_set1_ps(a_scale), _mm512_loadu_ps(W.scales + row0)));
    const int64_t begin = std::max<int64_t>(row0, first_row), end = std::min<int64_t>(row0 + 16, first_row + N);
    if (begin == row0 && end == row0 + 16) {
        float* c = C + (row0 - first_row);
        if (beta != 0.0f) v = _mm512_add_ps(_mm512_loadu_ps(c), v);
        _mm512_storeu_ps(c, v);
        return;
    }
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, v);
    store_int8_rows(C, lanes, row0, begin, end, first_row, beta);
}

}  // namespace
}  // namespace lstmcpp
