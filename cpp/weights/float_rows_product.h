// The per-step product of a weight format whose activations stay float32 (bf16, the codebooks):
// one thread's rows `outputs` of W, applied every step by the format's own kernel through
// Matrix::apply_rows(K, C, ldc, A, lda, rows, M, beta).
#pragma once

#include <cstdint>

#include "core/aligned.h"
#include "core/blas.h"
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
        apply(C, ldc, a, M, beta, Range{0, rows_.size()});
    }
    void apply(float* C, int64_t ldc, const float* A, int64_t lda, int64_t M, float beta) const {
        apply(C, ldc, Prepared{A, lda}, M, beta);
    }
    // The same for the part [part.begin, part.end) of its rows (counted from its first).
    void apply(float* C, int64_t ldc, const Prepared& a, int64_t M, float beta, Range part) const {
        const Range r{rows_.begin + part.begin, rows_.begin + part.end};
        if (r.size() > 0) W_->apply_rows(*K_, C + r.begin, ldc, a.A, a.lda, r, M, beta);
    }
    int64_t size() const { return rows_.size(); }

private:
    const Kernels<float>* K_ = nullptr;
    const Matrix* W_ = nullptr;
    Range rows_{0, 0};
};

// out (M,N) = beta*out + x (M,K) W^T for a format whose arithmetic is float32 (Matrix gives
// apply_rows and decode_rows(out, rows): rows of W as float32, row-major). Few rows of x: the
// format's own kernel, the rows of W split over the team. Many: the whole matrix decoded (each
// thread its rows, into a buffer kept for the next call), then the BLAS, whose blocking wins once
// the decoding is shared by enough rows of x.
template <class Matrix>
void multiply_float_rows(const Matrix& W, float* out, const float* x, int64_t M, float beta) {
    constexpr int64_t kDecodeFromRows = 32, kRowsAChunk = 64;  // rows of W a thread takes at a time
    const Kernels<float>& K = kernels_f32();
    const int64_t N = W.rows, depth = W.cols, chunks = (N + kRowsAChunk - 1) / kRowsAChunk;
    const auto rows_of = [&](int64_t q) { return Range{q * kRowsAChunk, std::min(N, (q + 1) * kRowsAChunk)}; };
    if (M < kDecodeFromRows) {
        const double macs = double(M) * double(N) * double(depth);
        run_team_chunks(macs < 2e5 ? 1 : get_num_threads(), chunks, [&](int64_t q) {
            const Range r = rows_of(q);
            W.apply_rows(K, out + r.begin, N, x, depth, r, M, beta);
        });
        return;
    }
    static thread_local AlignedVector<float> buffer;
    if (static_cast<int64_t>(buffer.size()) < N * depth) buffer.resize(N * depth);
    float* decoded = buffer.data();
    run_team_chunks(get_num_threads(), chunks, [&](int64_t q) { W.decode_rows(decoded, rows_of(q)); });
    gemm_parallel<float>(get_num_threads(), false, true, M, N, depth, 1.0f, x, depth, decoded, depth, beta, out, N);
}

}  // namespace lstmcpp
