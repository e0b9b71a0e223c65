// The bf16 weight format (SPEC §5, "bf16"): every weight stored as bfloat16 (rounded to nearest
// even, in Python, once), widened to float32 as the products read it; all arithmetic float32. The
// per-step products read the weights in place with the row-dot kernels; the product of every row
// (the input projection) decodes the matrix once per call and runs the BLAS.
#pragma once

#include <cstdint>

#include "core/aligned.h"
#include "core/team.h"
#include "kernels/kernels.h"

namespace lstmcpp {

struct Bf16Matrix;

class Bf16StepProduct {
public:
    struct Prepared {  // the activations stay float32
        const float* A;
        int64_t lda;
    };
    static Prepared prepare(const Kernels<float>&, const float* A, int64_t lda, int64_t /*M*/, int64_t /*depth*/) {
        return {A, lda};
    }

    Bf16StepProduct() = default;  // no rows: apply does nothing
    Bf16StepProduct(const Kernels<float>& K, const Bf16Matrix& W, Range outputs) : K_(&K), W_(&W), rows_(outputs) {}

    void apply(float* C, int64_t ldc, const Prepared& a, int64_t M, float beta) const;
    void apply(float* C, int64_t ldc, const float* A, int64_t lda, int64_t M, float beta) const {
        apply(C, ldc, Prepared{A, lda}, M, beta);
    }

private:
    const Kernels<float>* K_ = nullptr;
    const Bf16Matrix* W_ = nullptr;
    Range rows_{0, 0};
};

struct Bf16Matrix {
    using Product = Bf16StepProduct;
    const uint16_t* data = nullptr;  // (N,K) bfloat16 bits, row-major
    int64_t rows = 0, cols = 0;      // N, K

    void multiply_rows(float* out, const float* x, int64_t M, float beta) const;
    Bf16StepProduct step_product(const Kernels<float>& K, bool /*pack*/, Range outputs) const {
        return Bf16StepProduct(K, *this, outputs);
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
