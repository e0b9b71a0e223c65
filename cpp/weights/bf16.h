// The bf16 weight format (SPEC §5, "bf16"): every weight stored as bfloat16 (rounded to nearest
// even, in Python, once), widened to float32 as the products read it; all arithmetic float32. The
// per-step products read the weights in place with the row-dot kernels; the product of every row
// (the input projection) decodes the matrix once per call and runs the BLAS.
#pragma once

#include <cstdint>

#include "core/aligned.h"
#include "core/team.h"
#include "kernels/kernels.h"
#include "weights/float_rows_product.h"

namespace lstmcpp {

struct Bf16Matrix {
    using Product = FloatRowsProduct<Bf16Matrix>;
    static constexpr bool kPacks = false;  // one layout: threads always split the rows
    static constexpr bool kStepwiseInput = false;  // decoded once per call for the BLAS instead
    static constexpr int64_t kMacsPerFloatMac = 1;  // widening costs about what float32's bytes do
    static constexpr int64_t kSplitsBatchFrom = 8;  // whole steps a thread for its rows: weights/int8.h
    const uint16_t* data = nullptr;  // (N,K) bfloat16 bits, row-major
    int64_t rows = 0, cols = 0;      // N, K

    int64_t bytes() const { return rows * cols * 2; }  // what a product reads
    void multiply_rows(float* out, const float* x, int64_t M, float beta) const;
    void decode_rows(float* out, Range r) const;  // out[r, :] = W[r, :] as float32
    Product step_product(const Kernels<float>& K, bool /*pack*/, Range outputs) const { return Product(K, *this, outputs); }
    // C (M, r) = beta*C + A (M,K) W[r, :]^T for the rows r of W
    void apply_rows(const Kernels<float>& K, float* C, int64_t ldc, const float* A, int64_t lda, Range r, int64_t M,
                    float beta) const {
        K.gemm_nt_bf16(C, ldc, A, lda, data + r.begin * cols, cols, M, r.size(), cols, beta);
    }
};

struct Bf16Weights {
    using Matrix = Bf16Matrix;
    AlignedVector<uint16_t> data;
    int64_t rows = 0, cols = 0;

    bool empty() const { return data.empty(); }
    Bf16Matrix view() const { return {data.empty() ? nullptr : data.data(), rows, cols}; }
    void assign(const uint16_t* bits, int64_t N, int64_t K) {
        rows = N;
        cols = K;
        data.assign(bits, bits + N * K);
    }
    int64_t nbytes() const { return rows * cols * static_cast<int64_t>(sizeof(uint16_t)); }
};

}  // namespace lstmcpp
