// The kernels' one implementation, included by kernels_<isa>.cpp inside a namespace of that
// instruction set and compiled with its flags only. It includes nothing and uses no std::
// templates, so no function compiled for one instruction set can stand in for another's.
//
// float32 uses the exp below (Cephes' range reduction and polynomial, ~2 ulp), written so the
// compiler vectorises it; float64 uses the C library's exact functions. simd_kernels.h holds the
// vector versions (gates, products), for the instruction sets that have vector traits.

// exp(x) = 2^n p(r): n = round(x / ln 2), r = x - n ln 2 (ln 2 in two parts, so r keeps its
// low bits), p(r) = 1 + r + r^2 (kExpPoly[0] r^5 + ... + kExpPoly[5]). Every exp of the float32
// kernels uses these (kernels_avx512.cpp's exp16 too).
static constexpr float kExpMin = -87.0f;  // keeps 2^n a normal number
static constexpr float kExpMax = 88.0f;
static constexpr float kLog2e = 1.44269504088896341f;
static constexpr float kLn2High = 0.693359375f;
static constexpr float kLn2Low = -2.12194440e-4f;
static constexpr float kExpPoly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                      4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

static inline float exp_f32(float x) {
    x = x < kExpMin ? kExpMin : x;
    x = x > kExpMax ? kExpMax : x;
    // n = round(x / ln 2) by the 1.5*2^23 trick, which vectorises without SSE4.1's roundps
    float n = (x * kLog2e + 12582912.0f) - 12582912.0f;
    float r = x - n * kLn2High;
    r = r - n * kLn2Low;
    float p = kExpPoly[0];
    for (int k = 1; k < 6; ++k) p = p * r + kExpPoly[k];
    p = p * r * r + r + 1.0f;
    // NaN passed the clamps (comparisons with NaN are false); the conversion to int must not see
    // it (undefined behaviour). p is NaN already, so the result still is.
    n = n == n ? n : 0.0f;
    int e = (static_cast<int>(n) + 127) << 23;  // n in [-126, 127]: a normal float's exponent
    return p * __builtin_bit_cast(float, e);
}

static inline float sigmoid_of(float x) { return 1.0f / (1.0f + exp_f32(-x)); }
static inline float tanh_of(float x) {
    float a = x < 0.0f ? -x : x;
    float e = exp_f32(-2.0f * a);
    float t = (1.0f - e) / (1.0f + e);
    return x < 0.0f ? -t : t;
}
static inline double exp_of(double x) { return __builtin_exp(x); }
static inline float exp_of(float x) { return exp_f32(x); }
static inline double sigmoid_of(double x) { return 1.0 / (1.0 + __builtin_exp(-x)); }
static inline double tanh_of(double x) { return __builtin_tanh(x); }

template <class T>
static void gates_forward(T* __restrict gates, T* __restrict c, T* __restrict m,
                          const T* __restrict c_prev, const T* __restrict peephole,
                          int64_t H, int64_t j0, int64_t j1, T cell_clip) {
    T* __restrict zi = gates;
    T* __restrict zf = gates + H;
    T* __restrict zg = gates + 2 * H;
    T* __restrict zo = gates + 3 * H;
    const T* __restrict wi = peephole;
    const T* __restrict wf = peephole + H;
    const T* __restrict wo = peephole + 2 * H;
    for (int64_t j = j0; j < j1; ++j) {
        T cp = c_prev[j];
        T i = sigmoid_of(zi[j] + wi[j] * cp);
        T f = sigmoid_of(zf[j] + wf[j] * cp);
        T g = tanh_of(zg[j]);
        T cn = f * cp + i * g;
        cn = cn > cell_clip ? cell_clip : cn;
        cn = cn < -cell_clip ? -cell_clip : cn;
        T o = sigmoid_of(zo[j] + wo[j] * cn);  // the output peephole sees the new cell
        zi[j] = i;
        zf[j] = f;
        zg[j] = g;
        zo[j] = o;
        c[j] = cn;
        m[j] = o * tanh_of(cn);
    }
}

template <class T>
static void gates_backward(T* __restrict dz, T* __restrict dc_prev, const T* __restrict gates,
                           const T* __restrict c_prev, const T* __restrict c,
                           const T* __restrict dm, const T* __restrict dc,
                           const T* __restrict peephole, int64_t H, int64_t j0, int64_t j1,
                           T cell_clip) {
    const T* __restrict wi = peephole;
    const T* __restrict wf = peephole + H;
    const T* __restrict wo = peephole + 2 * H;
    for (int64_t j = j0; j < j1; ++j) {
        T i = gates[j], f = gates[H + j], g = gates[2 * H + j], o = gates[3 * H + j];
        T cp = c_prev[j], cn = c[j];
        T tc = tanh_of(cn);
        // forward was: m = o*tanh(c)   so: do = dm*tanh(c); dc += dm*o*(1 - tanh(c)^2)
        T dzo = dm[j] * tc * o * (T(1) - o);
        // forward was: o = sigmoid(zo + wco*c)   so: dc += dzo*wco
        T dct = dc[j] + dm[j] * o * (T(1) - tc * tc) + dzo * wo[j];
        // forward was: c = clip(c_raw)   so: a clipped element passes no gradient
        dct = (cn < cell_clip && cn > -cell_clip) ? dct : T(0);
        // forward was: c_raw = f*c_prev + i*g
        T dzi = dct * g * i * (T(1) - i);
        T dzf = dct * cp * f * (T(1) - f);
        T dzg = dct * i * (T(1) - g * g);
        // forward was: i = sigmoid(zi + wci*c_prev), f = sigmoid(zf + wcf*c_prev)
        dc_prev[j] = dct * f + dzi * wi[j] + dzf * wf[j];
        dz[j] = dzi;
        dz[H + j] = dzf;
        dz[2 * H + j] = dzg;
        dz[3 * H + j] = dzo;
    }
}

// Row tiles: in_row_blocks<Tile>(M, rows) calls rows(RowCount<Tile>{}, m) for each block of Tile
// rows of M, then once with the 1 to Tile-1 rows left, so every tile's height is a compile-time
// constant (the instruction-set kernels keep their accumulators in registers that way).
template <int N>
struct RowCount {
    static constexpr int value = N;
};

template <int N, class Rows>
static inline void last_rows(int64_t left, int64_t m, const Rows& rows) {
    if constexpr (N > 0) {
        if (left == N) rows(RowCount<N>{}, m);
        else last_rows<N - 1>(left, m, rows);
    }
}

template <int Tile, class Rows>
static inline void in_row_blocks(int64_t M, const Rows& rows) {
    int64_t m = 0;
    for (; m + Tile <= M; m += Tile) rows(RowCount<Tile>{}, m);
    last_rows<Tile - 1>(M - m, m, rows);
}

template <class T>
static inline T dot_row(const T* __restrict w, const T* __restrict x, int64_t K) {
    // 16 independent partial sums: vectorisable without reassociating a single sum.
    T acc[16] = {0};
    int64_t k = 0;
    for (; k + 16 <= K; k += 16)
        for (int l = 0; l < 16; ++l) acc[l] += w[k + l] * x[k + l];
    T s = 0;
    for (; k < K; ++k) s += w[k] * x[k];
    for (int l = 0; l < 16; ++l) s += acc[l];
    return s;
}

// The slow, obvious versions: the portable and float64 kernels, and the reference for the
// instruction-set ones.
template <class T>
static void gemm_nt_generic(T* __restrict C, int64_t ldc, const T* __restrict A, int64_t lda,
                            const T* __restrict W, int64_t ldw, int64_t M, int64_t N, int64_t K,
                            T beta) {
    for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
            T s = dot_row(W + n * ldw, A + m * lda, K);
            C[m * ldc + n] = beta == T(0) ? s : C[m * ldc + n] + s;
        }
}

template <class T>
static void gemm_nn_generic(T* __restrict C, int64_t ldc, const T* __restrict A, int64_t lda,
                            const T* __restrict W, int64_t ldw, int64_t M, int64_t N, int64_t K,
                            T beta) {
    for (int64_t m = 0; m < M; ++m) {
        T* __restrict c = C + m * ldc;
        if (beta == T(0))
            for (int64_t n = 0; n < N; ++n) c[n] = 0;
        for (int64_t k = 0; k < K; ++k) {
            const T a = A[m * lda + k];
            const T* __restrict w = W + k * ldw;
            for (int64_t n = 0; n < N; ++n) c[n] += a * w[n];
        }
    }
}

// C (M,N) = beta*C + A (M,K) B (K,N), B packed by pack_rows (or pack_columns) into blocks of NR columns. Each
// element is one multiply-add chain over k in order, whatever the tiling around it.
template <class T, int NR>
static void gemm_packed_generic(T* __restrict C, int64_t ldc, const T* __restrict A, int64_t lda,
                                const T* __restrict B_packed, int64_t M, int64_t N, int64_t K,
                                T beta) {
    for (int64_t n0 = 0; n0 < N; n0 += NR) {
        const T* __restrict block = B_packed + n0 * K;
        const int64_t width = N - n0 < NR ? N - n0 : NR;
        for (int64_t m = 0; m < M; ++m) {
            T acc[NR] = {0};
            for (int64_t k = 0; k < K; ++k) {
                const T a = A[m * lda + k];
                for (int r = 0; r < NR; ++r) acc[r] += a * block[k * NR + r];
            }
            T* __restrict c = C + m * ldc + n0;
            for (int64_t r = 0; r < width; ++r) c[r] = beta == T(0) ? acc[r] : c[r] + acc[r];
        }
    }
}

// Kernels::pack_rows, one value at a time.
template <class T, int NR>
static void pack_rows_generic(T* __restrict packed, const T* __restrict W, int64_t ldw, int64_t K, int64_t N) {
    for (int64_t n0 = 0; n0 < N; n0 += NR) {
        T* __restrict block = packed + n0 * K;
        const int64_t width = N - n0 < NR ? N - n0 : NR;
        for (int64_t k = 0; k < K; ++k)
            for (int64_t r = 0; r < NR; ++r) block[k * NR + r] = r < width ? W[(n0 + r) * ldw + k] : T(0);
    }
}

template <class T>
static void sigmoid_all(T* __restrict y, const T* __restrict x, int64_t n) {
    for (int64_t k = 0; k < n; ++k) y[k] = sigmoid_of(x[k]);
}

template <class T>
static void tanh_all(T* __restrict y, const T* __restrict x, int64_t n) {
    for (int64_t k = 0; k < n; ++k) y[k] = tanh_of(x[k]);
}

template <class T>
static void exp_all(T* y, const T* x, int64_t n) {
    for (int64_t k = 0; k < n; ++k) y[k] = exp_of(x[k]);
}

// ---------------------------------------------------------------------------------------------
// int8: the portable versions, and the reference for the instruction-set ones.

// The scale of a row whose largest magnitude is amax, and the factor that maps it to [-127, 127]:
// scale = amax / 127, inv = 127 / amax; a row of zeros has scale 0; NaN or Inf gives scale NaN
// (the row is then all zeros, and the product NaN).
static inline void row_scale(float amax, float* scale, float* inv) {
    if (!(amax <= 3.4028234663852886e38f)) {  // NaN or Inf
        *scale = __builtin_nanf("");
        *inv = 0.0f;
    } else if (amax == 0.0f) {
        *scale = 0.0f;
        *inv = 0.0f;
    } else {
        *scale = amax / 127.0f;
        *inv = 127.0f / amax;
    }
}

static inline int64_t padded16(int64_t K) { return (K + 15) / 16 * 16; }

static void quantize_rows_generic(uint8_t* __restrict q, int64_t ldq, float* __restrict scale,
                                  const float* __restrict a, int64_t lda, int64_t M, int64_t K) {
    for (int64_t m = 0; m < M; ++m) {
        const float* row = a + m * lda;
        float amax = 0.0f;
        bool finite = true;
        for (int64_t k = 0; k < K; ++k) {
            const float v = row[k] < 0.0f ? -row[k] : row[k];
            finite = finite && (v <= 3.4028234663852886e38f);
            amax = v > amax ? v : amax;
        }
        float inv;
        row_scale(finite ? amax : __builtin_nanf(""), scale + m, &inv);
        uint8_t* out = q + m * ldq;
        for (int64_t k = 0; k < K; ++k) {
            float v = __builtin_nearbyintf(row[k] * inv);  // round half to even, as NumPy's rint
            v = v > 127.0f ? 127.0f : v;
            v = v < -127.0f ? -127.0f : v;
            out[k] = static_cast<uint8_t>(finite ? static_cast<int>(v) + 128 : 128);
        }
        for (int64_t k = K; k < padded16(K); ++k) out[k] = 128;
    }
}

static inline int8_t int8_weight(const Int8View& W, int64_t n, int64_t k) {
    return W.block(n >> 4)[(k >> 2) * Int8View::kGroupStride + (n & 15) * 4 + (k & 3)];
}

static void gemm_nt_s8_generic(float* __restrict C, int64_t ldc, const uint8_t* __restrict A, int64_t lda,
                               const float* __restrict a_scale, const Int8View& W, int64_t first_row,
                               int64_t M, int64_t N, float beta) {
    for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
            const int64_t row = first_row + n;
            int32_t acc = 0;
            for (int64_t k = 0; k < 4 * W.groups; ++k) acc += static_cast<int32_t>(A[m * lda + k]) * int8_weight(W, row, k);
            acc -= 128 * W.row_sums[row];
            const float v = static_cast<float>(acc) * (a_scale[m] * W.scales[row]);
            C[m * ldc + n] = beta == 0.0f ? v : C[m * ldc + n] + v;
        }
}

static inline float bf16_to_float(uint16_t bits) {
    return __builtin_bit_cast(float, static_cast<uint32_t>(bits) << 16);
}

static void gemm_nt_bf16_generic(float* __restrict C, int64_t ldc, const float* __restrict A, int64_t lda,
                                 const uint16_t* __restrict W, int64_t ldw, int64_t M, int64_t N, int64_t K, float beta) {
    for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
            float acc[16] = {0};  // as dot_row: 16 partial sums
            int64_t k = 0;
            for (; k + 16 <= K; k += 16)
                for (int l = 0; l < 16; ++l) acc[l] += bf16_to_float(W[n * ldw + k + l]) * A[m * lda + k + l];
            float sum = 0;
            for (; k < K; ++k) sum += bf16_to_float(W[n * ldw + k]) * A[m * lda + k];
            for (int l = 0; l < 16; ++l) sum += acc[l];
            C[m * ldc + n] = beta == 0.0f ? sum : C[m * ldc + n] + sum;
        }
}

static inline float codebook_weight(const CodebookView& W, int64_t n, int64_t k) {
    const uint8_t* row = W.indices + n * W.ld;
    return W.books[(n / W.rows_per_book) * W.book_size + W.index(row, k)];
}

static void gemm_nt_codebook_generic(float* __restrict C, int64_t ldc, const float* __restrict A, int64_t lda,
                                     const CodebookView& W, int64_t first_row, int64_t M, int64_t N, int64_t K,
                                     float beta) {
    for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
            float acc[16] = {0};  // as dot_row: 16 partial sums
            int64_t k = 0;
            for (; k + 16 <= K; k += 16)
                for (int l = 0; l < 16; ++l) acc[l] += codebook_weight(W, first_row + n, k + l) * A[m * lda + k + l];
            float sum = 0;
            for (; k < K; ++k) sum += codebook_weight(W, first_row + n, k) * A[m * lda + k];
            for (int l = 0; l < 16; ++l) sum += acc[l];
            C[m * ldc + n] = beta == 0.0f ? sum : C[m * ldc + n] + sum;
        }
}

static void decode_codebook_generic(float* __restrict out, int64_t ldo, const CodebookView& W, int64_t first_row,
                                    int64_t N, int64_t K) {
    for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) out[n * ldo + k] = codebook_weight(W, first_row + n, k);
}

template <class T>
static Kernels<T> make_kernels(const char* name) {
    constexpr int kPanel = 64 / sizeof(T);  // a cache line of each packed row
    Kernels<T> k{name, "portable: int32 sums of u8 x s8, zero point 128", "portable: bf16 widened to float32",
                 "portable: each index looked up",
                 gates_forward<T>, gates_backward<T>, gemm_nt_generic<T>,
                 gemm_nn_generic<T>, kPanel, gemm_packed_generic<T, kPanel>, pack_rows_generic<T, kPanel>,
                 nullptr, nullptr, nullptr, nullptr, sigmoid_all<T>, tanh_all<T>, exp_all<T>};
    if constexpr (sizeof(T) == sizeof(float)) {
        k.quantize_rows = quantize_rows_generic;
        k.gemm_nt_s8 = gemm_nt_s8_generic;
        k.gemm_nt_bf16 = gemm_nt_bf16_generic;
        k.gemm_nt_codebook = gemm_nt_codebook_generic;
        k.decode_codebook = decode_codebook_generic;
    }
    return k;
}
