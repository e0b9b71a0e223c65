// Work splitting and per-thread floating-point state for the OpenMP team.
#pragma once

#include <cstdint>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define LSTMCPP_HAS_MXCSR 1
#endif

namespace lstmcpp {

struct Range {
    int64_t begin, end;
    int64_t size() const { return end - begin; }
};

// Part k of `parts` near-equal parts of [0, n), each boundary a multiple of `align`
// (except n itself), so SIMD loops over a part start aligned.
inline Range split(int64_t n, int parts, int k, int64_t align) {
    int64_t blocks = (n + align - 1) / align;
    int64_t b0 = blocks * k / parts, b1 = blocks * (k + 1) / parts;
    int64_t begin = b0 * align, end = b1 * align;
    if (begin > n) begin = n;
    if (end > n) end = n;
    return {begin, end};
}

// Flushes denormals to zero (FTZ and DAZ) on this thread while alive; restores after.
// Denormal arithmetic is 100x slower and never matters to an LSTM's result.
class DenormalsAreZero {
public:
#ifdef LSTMCPP_HAS_MXCSR
    DenormalsAreZero() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }
    ~DenormalsAreZero() { _mm_setcsr(saved_); }
private:
    unsigned saved_;
#endif
};

}  // namespace lstmcpp
