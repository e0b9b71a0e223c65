// Packing a right-hand side for Kernels::gemm_packed. Plain C++, included only by files built
// with the baseline flags: an inline function compiled with an instruction set's flags could be
// the one the linker keeps for every caller (see kernels_impl.h).
#pragma once

#include <cstdint>

namespace lstmcpp {

// Packs columns [0, N) of B (K,N) for gemm_packed: block n of `width` columns holds K rows of
// `width` values, B(k, n*width + r) at [(n*K + k)*width + r], zero past column N. B(k, j) is
// src[j*ld + k] when columns_are_rows (B = W^T for a row-major W (N,K)), else src[k*ld + j].
// packed holds ceil(N / width) * width * K values.
template <class T>
inline void pack_panel(T* packed, const T* src, int64_t ld, bool columns_are_rows, int64_t K,
                       int64_t N, int64_t width) {
    for (int64_t n0 = 0; n0 < N; n0 += width) {
        T* block = packed + n0 * K;
        const int64_t w = N - n0 < width ? N - n0 : width;
        if (columns_are_rows) {
            for (int64_t r = 0; r < w; ++r) {
                const T* column = src + (n0 + r) * ld;
                for (int64_t k = 0; k < K; ++k) block[k * width + r] = column[k];
            }
        } else {
            for (int64_t k = 0; k < K; ++k)
                for (int64_t r = 0; r < w; ++r) block[k * width + r] = src[k * ld + n0 + r];
        }
        for (int64_t k = 0; k < K; ++k)
            for (int64_t r = w; r < width; ++r) block[k * width + r] = T(0);
    }
}

}  // namespace lstmcpp
