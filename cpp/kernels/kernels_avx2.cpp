// The AVX2+FMA kernels: kernels_impl.h's elementwise work compiled with AVX2 flags, and
// simd_tiles.h's small-batch products over 8-float vectors (CMakeLists.txt gives this file its flags).
#include <immintrin.h>

#include <cstdint>

#include "kernels/kernels.h"

namespace lstmcpp {
namespace avx2 {
#include "kernels_impl.h"

// 8 floats a vector (simd_tiles.h's vector traits).
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
    static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
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

#include "simd_tiles.h"

// 16 registers: gemm_nt's 2-row tiles hold 8 accumulators, 4 rows of W and one of A; the packed
// kernel's 6-row tiles, 12 accumulators.
constexpr int64_t kPanel = 2 * Vec8::lanes;

}  // namespace avx2

const Kernels<float>& kernels_f32_avx2() {
    static const Kernels<float> table = [] {
        Kernels<float> k = avx2::make_kernels<float>("avx2");
        k.gemm_nt = avx2::gemm_nt_tiles<avx2::Vec8, 2>;
        k.gemm_nn = avx2::gemm_nn_tiles<avx2::Vec8, 2>;
        k.panel_width = avx2::kPanel;
        k.gemm_packed = avx2::gemm_packed_tiles<avx2::Vec8, 6>;
        return k;
    }();
    return table;
}
}  // namespace lstmcpp
