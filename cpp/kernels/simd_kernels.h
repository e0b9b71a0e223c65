// The vector kernels, one body for every vector width: included by kernels_avx2.cpp and
// kernels_avx512.cpp inside their namespaces (after kernels_impl.h, for in_row_blocks and the exp
// coefficients), and instantiated with that file's vector traits V, which give:
//   reg, mask, lanes        a vector of `lanes` floats and a lane mask
//   zero(), set1(v), load(p), load_masked(p, mask), store_masked(p, mask, v), broadcast(p)
//   add, sub, mul, min, max, fmadd(a, b, c) = a*b + c, fnmadd(a, b, c) = c - a*b
//   and_, andnot(a, b) = ~a & b, or_, abs, round (to nearest even), tail_mask(n): the first n lanes
//   scale2n(p, n) = p * 2^n (n integral, in [-126, 127]), reciprocal(d) ~ 1/d
//   keep_inside(v, x, limit): v where |x| < limit, else 0 (NaN x: 0)
//   sum4(a, b, c, d) -> __m128 of the four horizontal sums; sum1(a) -> lane 0 of sum4(a, ...)
//   widen_bf16(p), widen_bf16_masked(p, mask): `lanes` bfloat16 values as float32
//   store(p, v); transpose(r): r[0 .. lanes) as a lanes x lanes square, transposed in place
// What differs in more than width and intrinsics (the tile heights, which depend on the number
// of registers) stays in the instruction set's own file.

// ---------------------------------------------------------------------------------------------
// The gates' elementwise work: kernels_impl.h's exp (the same range reduction and polynomial),
// and divisions as V::reciprocal (AVX-512: vrcp14ps and one Newton step; AVX2: a division).
// The clamps take x second, so a NaN passes through as it does in the scalar code.

template <class V>
inline typename V::reg exp_v(typename V::reg x) {
    x = V::min(V::set1(kExpMax), V::max(V::set1(kExpMin), x));
    const typename V::reg n = V::round(V::mul(x, V::set1(kLog2e)));
    typename V::reg r = V::fnmadd(n, V::set1(kLn2High), x);
    r = V::fnmadd(n, V::set1(kLn2Low), r);
    typename V::reg p = V::set1(kExpPoly[0]);
    for (int k = 1; k < 6; ++k) p = V::fmadd(p, r, V::set1(kExpPoly[k]));
    p = V::fmadd(V::mul(p, r), r, V::add(r, V::set1(1.0f)));
    return V::scale2n(p, n);
}

template <class V>
inline typename V::reg sigmoid_v(typename V::reg x) {
    return V::reciprocal(V::add(V::set1(1.0f), exp_v<V>(V::sub(V::zero(), x))));
}

template <class V>
inline typename V::reg tanh_v(typename V::reg x) {
    const typename V::reg sign = V::and_(x, V::set1(-0.0f));
    const typename V::reg e = exp_v<V>(V::mul(V::set1(-2.0f), V::andnot(V::set1(-0.0f), x)));
    const typename V::reg t = V::mul(V::sub(V::set1(1.0f), e), V::reciprocal(V::add(V::set1(1.0f), e)));
    return V::or_(t, sign);
}

// N vectors of units from j at once: their exponentials' chains (about 60 cycles each, one
// after another in a unit) interleave.
template <class V, int N>
inline void gates_forward_block(float* gates, float* c, float* m, const float* c_prev, const float* peephole,
                                int64_t H, int64_t j, int64_t j1, float cell_clip) {
    using reg = typename V::reg;
    typename V::mask k[N];
    reg cp[N], i[N], f[N], g[N], cn[N], o[N];
    for (int v = 0; v < N; ++v) {
        k[v] = V::tail_mask(j1 - j - v * V::lanes);
        cp[v] = V::load_masked(c_prev + j + v * V::lanes, k[v]);
    }
    for (int v = 0; v < N; ++v) {
        const int64_t u = j + v * V::lanes;
        i[v] = sigmoid_v<V>(V::fmadd(V::load_masked(peephole + u, k[v]), cp[v], V::load_masked(gates + u, k[v])));
        f[v] = sigmoid_v<V>(V::fmadd(V::load_masked(peephole + H + u, k[v]), cp[v], V::load_masked(gates + H + u, k[v])));
        g[v] = tanh_v<V>(V::load_masked(gates + 2 * H + u, k[v]));
    }
    for (int v = 0; v < N; ++v) {
        const int64_t u = j + v * V::lanes;
        cn[v] = V::fmadd(f[v], cp[v], V::mul(i[v], g[v]));
        cn[v] = V::max(V::set1(-cell_clip), V::min(V::set1(cell_clip), cn[v]));  // cn second: NaN passes
        // the output peephole sees the new cell
        o[v] = sigmoid_v<V>(V::fmadd(V::load_masked(peephole + 2 * H + u, k[v]), cn[v], V::load_masked(gates + 3 * H + u, k[v])));
    }
    for (int v = 0; v < N; ++v) {
        const int64_t u = j + v * V::lanes;
        V::store_masked(gates + u, k[v], i[v]);
        V::store_masked(gates + H + u, k[v], f[v]);
        V::store_masked(gates + 2 * H + u, k[v], g[v]);
        V::store_masked(gates + 3 * H + u, k[v], o[v]);
        V::store_masked(c + u, k[v], cn[v]);
        V::store_masked(m + u, k[v], V::mul(o[v], tanh_v<V>(cn[v])));
    }
}

template <class V>
void gates_forward_v(float* gates, float* c, float* m, const float* c_prev, const float* peephole, int64_t H,
                     int64_t j0, int64_t j1, float cell_clip) {
    int64_t j = j0;
    for (; j + 2 * V::lanes <= j1; j += 2 * V::lanes) gates_forward_block<V, 2>(gates, c, m, c_prev, peephole, H, j, j1, cell_clip);
    for (; j < j1; j += V::lanes) gates_forward_block<V, 1>(gates, c, m, c_prev, peephole, H, j, j1, cell_clip);
}

template <class V>
void gates_backward_v(float* dz, float* dc_prev, const float* gates, const float* c_prev, const float* c,
                      const float* dm, const float* dc, const float* peephole, int64_t H, int64_t j0, int64_t j1,
                      float cell_clip) {
    using reg = typename V::reg;
    const reg one = V::set1(1.0f), clip = V::set1(cell_clip);
    for (int64_t j = j0; j < j1; j += V::lanes) {
        const typename V::mask k = V::tail_mask(j1 - j);
        const reg i = V::load_masked(gates + j, k), f = V::load_masked(gates + H + j, k);
        const reg g = V::load_masked(gates + 2 * H + j, k), o = V::load_masked(gates + 3 * H + j, k);
        const reg cp = V::load_masked(c_prev + j, k), cn = V::load_masked(c + j, k);
        const reg dmj = V::load_masked(dm + j, k);
        const reg tc = tanh_v<V>(cn);
        // forward was: m = o*tanh(c)   so: do = dm*tanh(c); dc += dm*o*(1 - tanh(c)^2)
        const reg dzo = V::mul(V::mul(dmj, tc), V::mul(o, V::sub(one, o)));
        // forward was: o = sigmoid(zo + wco*c)   so: dc += dzo*wco
        reg dct = V::fmadd(V::mul(dmj, o), V::fnmadd(tc, tc, one), V::load_masked(dc + j, k));
        dct = V::fmadd(dzo, V::load_masked(peephole + 2 * H + j, k), dct);
        // forward was: c = clip(c_raw)   so: a clipped element passes no gradient
        dct = V::keep_inside(dct, cn, clip);
        // forward was: c_raw = f*c_prev + i*g
        const reg dzi = V::mul(V::mul(dct, g), V::mul(i, V::sub(one, i)));
        const reg dzf = V::mul(V::mul(dct, cp), V::mul(f, V::sub(one, f)));
        const reg dzg = V::mul(V::mul(dct, i), V::fnmadd(g, g, one));
        // forward was: i = sigmoid(zi + wci*c_prev), f = sigmoid(zf + wcf*c_prev)
        reg dcp = V::mul(dct, f);
        dcp = V::fmadd(dzi, V::load_masked(peephole + j, k), dcp);
        dcp = V::fmadd(dzf, V::load_masked(peephole + H + j, k), dcp);
        V::store_masked(dc_prev + j, k, dcp);
        V::store_masked(dz + j, k, dzi);
        V::store_masked(dz + H + j, k, dzf);
        V::store_masked(dz + 2 * H + j, k, dzg);
        V::store_masked(dz + 3 * H + j, k, dzo);
    }
}

// y = F(x) over n values, with F one of exp_v, sigmoid_v, tanh_v.
template <class V, typename V::reg (*F)(typename V::reg)>
void elementwise_v(float* y, const float* x, int64_t n) {
    for (int64_t j = 0; j < n; j += V::lanes) {
        const typename V::mask k = V::tail_mask(n - j);
        V::store_masked(y + j, k, F(V::load_masked(x + j, k)));
    }
}

// ---------------------------------------------------------------------------------------------
// The small-batch products.

// How the row-dot tiles read a weight: float32 as it is (Load = V), or bfloat16 widened to float32
// (Load = Bf16<V>: the 16 bits become a float's high half, exactly).
template <class V>
struct Bf16 {
    using weight = uint16_t;
    static typename V::reg load(const uint16_t* p) { return V::widen_bf16(p); }
    static typename V::reg load_masked(const uint16_t* p, typename V::mask m) { return V::widen_bf16_masked(p, m); }
};

template <class V>
struct F32 {
    using weight = float;
    static typename V::reg load(const float* p) { return V::load(p); }
    static typename V::reg load_masked(const float* p, typename V::mask m) { return V::load_masked(p, m); }
};

// C[b, 0..R) (+)= A[b, :] . W[r, :] for MB rows of A and R = 4 (or 1) rows of W.
template <class V, int MB, int R, class Load = F32<V>>
inline void nt_tile(float* C, int64_t ldc, const float* A, int64_t lda, const typename Load::weight* W,
                    int64_t ldw, int64_t K, float beta) {
    typename V::reg acc[MB][R];
    for (int b = 0; b < MB; ++b)
        for (int r = 0; r < R; ++r) acc[b][r] = V::zero();
    int64_t k = 0;
    for (; k + V::lanes <= K; k += V::lanes) {
        typename V::reg w[R];
        for (int r = 0; r < R; ++r) w[r] = Load::load(W + r * ldw + k);
        for (int b = 0; b < MB; ++b) {
            const typename V::reg a = V::load(A + b * lda + k);
            for (int r = 0; r < R; ++r) acc[b][r] = V::fmadd(w[r], a, acc[b][r]);
        }
    }
    if (k < K) {
        const typename V::mask mask = V::tail_mask(K - k);
        typename V::reg w[R];
        for (int r = 0; r < R; ++r) w[r] = Load::load_masked(W + r * ldw + k, mask);
        for (int b = 0; b < MB; ++b) {
            const typename V::reg a = V::load_masked(A + b * lda + k, mask);
            for (int r = 0; r < R; ++r) acc[b][r] = V::fmadd(w[r], a, acc[b][r]);
        }
    }
    for (int b = 0; b < MB; ++b) {
        if constexpr (R == 4) {
            __m128 s = V::sum4(acc[b][0], acc[b][1], acc[b][2], acc[b][3]);
            if (beta != 0.0f) s = _mm_add_ps(s, _mm_loadu_ps(C + b * ldc));
            _mm_storeu_ps(C + b * ldc, s);
        } else {
            const float s = V::sum1(acc[b][0]);
            C[b * ldc] = beta != 0.0f ? C[b * ldc] + s : s;
        }
    }
}

template <class V, int MB, class Load = F32<V>>
void nt_rows(float* C, int64_t ldc, const float* A, int64_t lda, const typename Load::weight* W, int64_t ldw,
             int64_t N, int64_t K, float beta) {
    int64_t n = 0;
    for (; n + 4 <= N; n += 4) nt_tile<V, MB, 4, Load>(C + n, ldc, A, lda, W + n * ldw, ldw, K, beta);
    for (; n < N; ++n) nt_tile<V, MB, 1, Load>(C + n, ldc, A, lda, W + n * ldw, ldw, K, beta);
}

// C (M,N) = beta*C + A (M,K) W (N,K)^T, RowTile rows of A at a time; W float32 or (Load = Bf16<V>) bfloat16.
template <class V, int RowTile, class Load = F32<V>>
void gemm_nt_tiles(float* C, int64_t ldc, const float* A, int64_t lda, const typename Load::weight* W, int64_t ldw,
                   int64_t M, int64_t N, int64_t K, float beta) {
    in_row_blocks<RowTile>(M, [&](auto block, int64_t m) {
        nt_rows<V, decltype(block)::value, Load>(C + m * ldc, ldc, A + m * lda, lda, W, ldw, N, K, beta);
    });
}

// C[b, 0..width) (+)= sum_k A[b, k] W[k, 0..width) for MB rows of A, width <= 4 vectors.
template <class V, int MB>
inline void nn_tile(float* C, int64_t ldc, const float* A, int64_t lda, const float* W,
                    int64_t ldw, int64_t K, int64_t width, float beta) {
    const typename V::mask mask[4] = {V::tail_mask(width), V::tail_mask(width - V::lanes),
                                      V::tail_mask(width - 2 * V::lanes), V::tail_mask(width - 3 * V::lanes)};
    typename V::reg acc[MB][4];
    for (int b = 0; b < MB; ++b)
        for (int v = 0; v < 4; ++v) acc[b][v] = V::zero();
    for (int64_t k = 0; k < K; ++k) {
        const float* w_row = W + k * ldw;
        typename V::reg w[4];
        for (int v = 0; v < 4; ++v) w[v] = V::load_masked(w_row + V::lanes * v, mask[v]);
        for (int b = 0; b < MB; ++b) {
            const typename V::reg a = V::broadcast(A + b * lda + k);
            for (int v = 0; v < 4; ++v) acc[b][v] = V::fmadd(a, w[v], acc[b][v]);
        }
    }
    for (int b = 0; b < MB; ++b)
        for (int v = 0; v < 4; ++v) {
            float* c = C + b * ldc + V::lanes * v;
            typename V::reg s = acc[b][v];
            if (beta != 0.0f) s = V::add(s, V::load_masked(c, mask[v]));
            V::store_masked(c, mask[v], s);
        }
}

template <class V, int MB>
void nn_rows(float* C, int64_t ldc, const float* A, int64_t lda, const float* W, int64_t ldw,
             int64_t N, int64_t K, float beta) {
    constexpr int64_t width = 4 * V::lanes;
    for (int64_t n = 0; n < N; n += width)
        nn_tile<V, MB>(C + n, ldc, A, lda, W + n, ldw, K, N - n < width ? N - n : width, beta);
}

// C (M,N) = beta*C + A (M,K) W (K,N), RowTile rows of A at a time.
template <class V, int RowTile>
void gemm_nn_tiles(float* C, int64_t ldc, const float* A, int64_t lda, const float* W, int64_t ldw,
                   int64_t M, int64_t N, int64_t K, float beta) {
    in_row_blocks<RowTile>(M, [&](auto block, int64_t m) {
        nn_rows<V, decltype(block)::value>(C + m * ldc, ldc, A + m * lda, lda, W, ldw, N, K, beta);
    });
}

// C[b, 0..2 lanes) (+)= A[b, :] B for MB rows of A and one packed block of B (K rows of 2 lanes),
// the columns past the block's width masked off: 2*MB accumulators, each a multiply-add chain
// over k.
template <class V, int MB>
inline void packed_tile(float* C, int64_t ldc, const float* A, int64_t lda, const float* block,
                        int64_t K, typename V::mask mask0, typename V::mask mask1, float beta) {
    typename V::reg acc[MB][2];
    for (int b = 0; b < MB; ++b) acc[b][0] = acc[b][1] = V::zero();
    for (int64_t k = 0; k < K; ++k) {
        const typename V::reg w0 = V::load(block + 2 * V::lanes * k);
        const typename V::reg w1 = V::load(block + 2 * V::lanes * k + V::lanes);
        for (int b = 0; b < MB; ++b) {
            const typename V::reg a = V::broadcast(A + b * lda + k);
            acc[b][0] = V::fmadd(a, w0, acc[b][0]);
            acc[b][1] = V::fmadd(a, w1, acc[b][1]);
        }
    }
    for (int b = 0; b < MB; ++b) {
        float* c = C + b * ldc;
        typename V::reg s0 = acc[b][0], s1 = acc[b][1];
        if (beta != 0.0f) {
            s0 = V::add(V::load_masked(c, mask0), s0);
            s1 = V::add(V::load_masked(c + V::lanes, mask1), s1);
        }
        V::store_masked(c, mask0, s0);
        V::store_masked(c + V::lanes, mask1, s1);
    }
}

// Kernels::pack_rows for panels of 2 lanes: lanes x lanes squares of W transposed in registers
// (V::transpose), rows past N and columns past K read as zeros.
template <class V>
void pack_rows_v(float* packed, const float* W, int64_t ldw, int64_t K, int64_t N) {
    constexpr int64_t L = V::lanes, panel = 2 * L;
    typename V::reg r[L];
    for (int64_t n0 = 0; n0 < N; n0 += panel) {
        float* block = packed + n0 * K;
        for (int64_t half = 0; half < panel; half += L) {
            const int64_t rows = std::min<int64_t>(L, std::max<int64_t>(0, N - n0 - half));
            const float* w = W + (n0 + half) * ldw;
            for (int64_t k0 = 0; k0 < K; k0 += L) {
                const typename V::mask m = V::tail_mask(K - k0);
                for (int64_t i = 0; i < L; ++i) r[i] = i < rows ? V::load_masked(w + i * ldw + k0, m) : V::zero();
                V::transpose(r);
                const int64_t columns = std::min<int64_t>(L, K - k0);
                for (int64_t j = 0; j < columns; ++j) V::store(block + (k0 + j) * panel + half, r[j]);
            }
        }
    }
}

// C (M,N) = beta*C + A (M,K) B (K,N), B packed by pack_rows_v (or pack_columns) in blocks of 2 lanes: each block is
// read from cache once per tile of RowTile rows of A.
template <class V, int RowTile>
void gemm_packed_tiles(float* C, int64_t ldc, const float* A, int64_t lda, const float* B_packed,
                       int64_t M, int64_t N, int64_t K, float beta) {
    constexpr int64_t panel = 2 * V::lanes;
    for (int64_t n0 = 0; n0 < N; n0 += panel) {
        const float* block = B_packed + n0 * K;
        const typename V::mask mask0 = V::tail_mask(N - n0), mask1 = V::tail_mask(N - n0 - V::lanes);
        in_row_blocks<RowTile>(M, [&](auto rows, int64_t m) {
            packed_tile<V, decltype(rows)::value>(C + m * ldc + n0, ldc, A + m * lda, lda, block, K, mask0, mask1, beta);
        });
    }
}
