// The AVX-512 kernels: simd_kernels.h over 16-float vectors (the gates' elementwise work and the
// small-batch products), with AVX-512's own scaling and reciprocal instructions (CMakeLists.txt
// gives this file its flags).
#include <immintrin.h>

#include <cstdint>

#include "kernels/kernels.h"

namespace lstmcpp {

// The int8 products an AVX-512 CPU runs: VNNI's (kernels_avx512_vnni.cpp) where it has VNNI, AVX2's where not.
void gemm_nt_s8_avx512_vnni(float* C, int64_t ldc, const uint8_t* A, int64_t lda, const float* a_scale,
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
    static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
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

}  // namespace avx512

const Kernels<float>& kernels_f32_avx512(bool vnni) {
    static const auto make = [](bool with_vnni) {
        Kernels<float> k = avx512::make_kernels<float>("avx512");
        k.gemm_nt = avx512::gemm_nt_tiles<avx512::Vec16, 4>;
        k.gemm_nt_bf16 = avx512::gemm_nt_tiles<avx512::Vec16, 4, avx512::Bf16<avx512::Vec16>>;
        const Kernels<float>& avx2 = kernels_f32_avx2();
        k.quantize_rows = avx2.quantize_rows;
        k.gemm_nt_s8 = with_vnni ? gemm_nt_s8_avx512_vnni : avx2.gemm_nt_s8;
        k.int8_products = with_vnni ? "avx512_vnni: u8 x s8 by vpdpbusd, 4 sums a lane, zero point 128 subtracted"
                                    : avx2.int8_products;
        k.bf16_products = "avx512: bf16 widened to float32, fma";
        k.codebook_products = "portable body compiled for avx512 (no vector codebook kernel yet)";
        k.gemm_nn = avx512::gemm_nn_tiles<avx512::Vec16, 4>;
        k.panel_width = avx512::kPanel;
        k.gemm_packed = avx512::gemm_packed_tiles<avx512::Vec16, 8>;
        k.gates_forward = avx512::gates_forward_v<avx512::Vec16>;
        k.gates_backward = avx512::gates_backward_v<avx512::Vec16>;
        k.sigmoid = avx512::elementwise_v<avx512::Vec16, avx512::sigmoid_v<avx512::Vec16>>;
        k.tanh = avx512::elementwise_v<avx512::Vec16, avx512::tanh_v<avx512::Vec16>>;
        k.exp = avx512::elementwise_v<avx512::Vec16, avx512::exp_v<avx512::Vec16>>;
        return k;
    };
    static const Kernels<float> with_vnni = make(true), without = make(false);
    return vnni ? with_vnni : without;
}
}  // namespace lstmcpp
