// The AVX-512 kernels: simd_tiles.h's small-batch products over 16-float vectors, and the gates'
// elementwise work written with intrinsics (CMakeLists.txt gives this file its flags).
#include <immintrin.h>

#include <cstdint>

#include "kernels/kernels.h"

namespace lstmcpp {
namespace avx512 {
#include "kernels_impl.h"

// 16 floats a vector (simd_tiles.h's vector traits).
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
    static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
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

#include "simd_tiles.h"

// 32 registers: 4-row tiles for the row-dot products, 8-row tiles for the packed kernel.
constexpr int64_t kPanel = 2 * Vec16::lanes;

// ---------------------------------------------------------------------------------------------
// The gates' elementwise work, 16 lanes at a time: kernels_impl.h's exp (the same range reduction
// and polynomial, 2^n applied by vscalefps), and reciprocals by vrcp14ps and one Newton step
// (relative error about 2^-28) instead of divisions, which Zen 4 and Intel cores issue slowly.
// The clamps take x second, so a NaN passes through as it does in the scalar code.

inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(kExpMax), _mm512_max_ps(_mm512_set1_ps(kExpMin), x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2High), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Low), r);
    __m512 p = _mm512_set1_ps(kExpPoly[0]);
    for (int k = 1; k < 6; ++k) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpPoly[k]));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

inline __m512 reciprocal16(__m512 d) {
    const __m512 r = _mm512_rcp14_ps(d);
    return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(1.0f)), r);  // r + r(1 - dr)
}

inline __m512 sigmoid16(__m512 x) {
    return reciprocal16(_mm512_add_ps(_mm512_set1_ps(1.0f), exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

inline __m512 tanh16(__m512 x) {
    const __m512 sign = _mm512_and_ps(x, _mm512_set1_ps(-0.0f));
    const __m512 e = exp16(_mm512_mul_ps(_mm512_set1_ps(-2.0f), _mm512_andnot_ps(_mm512_set1_ps(-0.0f), x)));
    const __m512 t = _mm512_mul_ps(_mm512_sub_ps(_mm512_set1_ps(1.0f), e),
                                   reciprocal16(_mm512_add_ps(_mm512_set1_ps(1.0f), e)));
    return _mm512_or_ps(t, sign);
}

void gates_forward16(float* gates, float* c, float* m, const float* c_prev, const float* peephole,
                     int64_t H, int64_t j0, int64_t j1, float cell_clip) {
    const __m512 clip = _mm512_set1_ps(cell_clip), neg_clip = _mm512_set1_ps(-cell_clip);
    for (int64_t j = j0; j < j1; j += 16) {
        const __mmask16 k = Vec16::tail_mask(j1 - j);
        const __m512 cp = _mm512_maskz_loadu_ps(k, c_prev + j);
        const __m512 i = sigmoid16(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, peephole + j), cp,
                                                   _mm512_maskz_loadu_ps(k, gates + j)));
        const __m512 f = sigmoid16(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, peephole + H + j), cp,
                                                   _mm512_maskz_loadu_ps(k, gates + H + j)));
        const __m512 g = tanh16(_mm512_maskz_loadu_ps(k, gates + 2 * H + j));
        __m512 cn = _mm512_fmadd_ps(f, cp, _mm512_mul_ps(i, g));
        cn = _mm512_max_ps(neg_clip, _mm512_min_ps(clip, cn));  // cn second: NaN passes
        // the output peephole sees the new cell
        const __m512 o = sigmoid16(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, peephole + 2 * H + j), cn,
                                                   _mm512_maskz_loadu_ps(k, gates + 3 * H + j)));
        _mm512_mask_storeu_ps(gates + j, k, i);
        _mm512_mask_storeu_ps(gates + H + j, k, f);
        _mm512_mask_storeu_ps(gates + 2 * H + j, k, g);
        _mm512_mask_storeu_ps(gates + 3 * H + j, k, o);
        _mm512_mask_storeu_ps(c + j, k, cn);
        _mm512_mask_storeu_ps(m + j, k, _mm512_mul_ps(o, tanh16(cn)));
    }
}

void gates_backward16(float* dz, float* dc_prev, const float* gates, const float* c_prev, const float* c,
                      const float* dm, const float* dc, const float* peephole, int64_t H, int64_t j0,
                      int64_t j1, float cell_clip) {
    const __m512 one = _mm512_set1_ps(1.0f), clip = _mm512_set1_ps(cell_clip);
    for (int64_t j = j0; j < j1; j += 16) {
        const __mmask16 k = Vec16::tail_mask(j1 - j);
        const __m512 i = _mm512_maskz_loadu_ps(k, gates + j), f = _mm512_maskz_loadu_ps(k, gates + H + j);
        const __m512 g = _mm512_maskz_loadu_ps(k, gates + 2 * H + j), o = _mm512_maskz_loadu_ps(k, gates + 3 * H + j);
        const __m512 cp = _mm512_maskz_loadu_ps(k, c_prev + j), cn = _mm512_maskz_loadu_ps(k, c + j);
        const __m512 dmj = _mm512_maskz_loadu_ps(k, dm + j);
        const __m512 tc = tanh16(cn);
        // forward was: m = o*tanh(c)   so: do = dm*tanh(c); dc += dm*o*(1 - tanh(c)^2)
        const __m512 dzo = _mm512_mul_ps(_mm512_mul_ps(dmj, tc), _mm512_mul_ps(o, _mm512_sub_ps(one, o)));
        // forward was: o = sigmoid(zo + wco*c)   so: dc += dzo*wco
        __m512 dct = _mm512_fmadd_ps(_mm512_mul_ps(dmj, o), _mm512_fnmadd_ps(tc, tc, one), _mm512_maskz_loadu_ps(k, dc + j));
        dct = _mm512_fmadd_ps(dzo, _mm512_maskz_loadu_ps(k, peephole + 2 * H + j), dct);
        // forward was: c = clip(c_raw)   so: a clipped element passes no gradient
        const __mmask16 inside = _mm512_cmp_ps_mask(_mm512_abs_ps(cn), clip, _CMP_LT_OQ);
        dct = _mm512_maskz_mov_ps(inside, dct);
        // forward was: c_raw = f*c_prev + i*g
        const __m512 dzi = _mm512_mul_ps(_mm512_mul_ps(dct, g), _mm512_mul_ps(i, _mm512_sub_ps(one, i)));
        const __m512 dzf = _mm512_mul_ps(_mm512_mul_ps(dct, cp), _mm512_mul_ps(f, _mm512_sub_ps(one, f)));
        const __m512 dzg = _mm512_mul_ps(_mm512_mul_ps(dct, i), _mm512_fnmadd_ps(g, g, one));
        // forward was: i = sigmoid(zi + wci*c_prev), f = sigmoid(zf + wcf*c_prev)
        __m512 dcp = _mm512_mul_ps(dct, f);
        dcp = _mm512_fmadd_ps(dzi, _mm512_maskz_loadu_ps(k, peephole + j), dcp);
        dcp = _mm512_fmadd_ps(dzf, _mm512_maskz_loadu_ps(k, peephole + H + j), dcp);
        _mm512_mask_storeu_ps(dc_prev + j, k, dcp);
        _mm512_mask_storeu_ps(dz + j, k, dzi);
        _mm512_mask_storeu_ps(dz + H + j, k, dzf);
        _mm512_mask_storeu_ps(dz + 2 * H + j, k, dzg);
        _mm512_mask_storeu_ps(dz + 3 * H + j, k, dzo);
    }
}

template <__m512 (*F)(__m512)>
void elementwise16(float* y, const float* x, int64_t n) {
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 k = Vec16::tail_mask(n - j);
        _mm512_mask_storeu_ps(y + j, k, F(_mm512_maskz_loadu_ps(k, x + j)));
    }
}

}  // namespace avx512

const Kernels<float>& kernels_f32_avx512() {
    static const Kernels<float> table = [] {
        Kernels<float> k = avx512::make_kernels<float>("avx512");
        k.gemm_nt = avx512::gemm_nt_tiles<avx512::Vec16, 4>;
        k.gemm_nn = avx512::gemm_nn_tiles<avx512::Vec16, 4>;
        k.panel_width = avx512::kPanel;
        k.gemm_packed = avx512::gemm_packed_tiles<avx512::Vec16, 8>;
        k.gates_forward = avx512::gates_forward16;
        k.gates_backward = avx512::gates_backward16;
        k.sigmoid = avx512::elementwise16<avx512::sigmoid16>;
        k.tanh = avx512::elementwise16<avx512::tanh16>;
        k.exp = avx512::elementwise16<avx512::exp16>;
        return k;
    }();
    return table;
}
}  // namespace lstmcpp
