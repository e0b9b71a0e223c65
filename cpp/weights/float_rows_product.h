// The per-step product of a weight format whose activations stay float32 (bf16, the codebooks):
// one thread's rows `outputs` of W, applied every step by the format's own kernel through
// Matrix::apply_rows(K, C, ldc, A, lda, rows, M, beta).
#pragma once

#include <cstdint>

#include "core/team.h"
#include "kernels/kernels.h"

namespace lstmcpp {

template <class Matrix>
class FloatRowsProduct {
public:
    struct Prepared {  // the activations as they are
        const float* A;
        int64_t lda;
    };
    static Prepared prepare(const Kernels<float>&, const float* A, int64_t lda, int64_t /*M*/, int64_t /*depth*/) {
        return {A, lda};
    }

    FloatRowsProduct() = default;  // no rows: apply does nothing
    FloatRowsProduct(const Kernels<float>& K, const Matrix& W, Range outputs) : K_(&K), W_(&W), rows_(outputs) {}

    // C[:, outputs] = beta*C[:, outputs] + A (M, cols) W[outputs, :]^T; C points at column 0.
    void apply(float* C, int64_t ldc, const Prepared& a, int64_t M, float beta) const {
        if (rows_.size() > 0) W_->apply_rows(*K_, C + rows_.begin, ldc, a.A, a.lda, rows_, M, beta);
    }
    void apply(float* C, int64_t ldc, const float* A, int64_t lda, int64_t M, float beta) const {
        apply(C, ldc, Prepared{A, lda}, M, beta);
    }

private:
    const Kernels<float>* K_ = nullptr;
    const Matrix* W_ = nullptr;
    Range rows_{0, 0};
};

}  // namespace lstmcpp
