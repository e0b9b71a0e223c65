// The codebook weight formats (SPEC §5, "codebook4", "codebook8"): every weight stored as the
// index of its value in a codebook fitted by k-means (in Python, once): 16 values for each row,
// 4-bit indices (codebook4); 256 values for each block of rows (a gate block, or all of W_hr),
// 8-bit indices (codebook8). The per-step products decode the indices in registers; the product
// of every row (the input projection) decodes the matrix once per call and runs the BLAS. All
// arithmetic float32.
#pragma once

#include <cstdint>

#include "core/aligned.h"
#include "core/team.h"
#include "kernels/kernels.h"
#include "weights/float_rows_product.h"

namespace lstmcpp {

struct CodebookMatrix {
    using Product = FloatRowsProduct<CodebookMatrix>;
    static constexpr bool kPacks = false;  // one layout: threads always split the rows
    static constexpr bool kStepwiseInput = false;  // decoded once per call for the BLAS instead
    static constexpr int64_t kMacsPerFloatMac = 1;  // decoded to float32 in registers
    static constexpr int64_t kSplitsBatchFrom = 8;  // whole steps a thread for its rows: weights/int8.h
    CodebookView view;       // indices, codebooks and their layout (kernels.h)
    int64_t rows = 0, cols = 0;

    int64_t bytes() const { return rows * view.ld; }  // what a product reads (the indices)
    void multiply_rows(float* out, const float* x, int64_t M, float beta) const;
    void decode_rows(float* out, Range r) const;  // out[r, :] = W[r, :] as float32
    Product step_product(const Kernels<float>& K, bool /*pack*/, Range outputs) const { return Product(K, *this, outputs); }
    // C (M, r) = beta*C + A (M,K) W[r, :]^T for the rows r of W, decoded as they are read
    void apply_rows(const Kernels<float>& K, float* C, int64_t ldc, const float* A, int64_t lda, Range r, int64_t M,
                    float beta) const {
        K.gemm_nt_codebook(C, ldc, A, lda, view, r.begin, M, r.size(), cols, beta);
    }
};

struct CodebookWeights {
    using Matrix = CodebookMatrix;
    AlignedVector<uint8_t> indices;  // (N, ld) in the kernels' layout (kernels.h, CodebookView)
    AlignedVector<float> books;      // (N / rows_per_book, book_size)
    int64_t rows = 0, cols = 0, ld = 0, rows_per_book = 1, book_size = 16;

    bool empty() const { return indices.empty(); }
    CodebookMatrix view() const {
        return {{indices.empty() ? nullptr : indices.data(), ld, book_size == 16 ? 4 : 8, books.data(), rows_per_book,
                 book_size},
                rows, cols};
    }
    // idx (N,K) one index a byte, books (N / rows_per_book, book_size) with book_size 16 or 256.
    void assign(const uint8_t* idx, const float* values, int64_t N, int64_t K, int64_t rows_per_book, int64_t book_size);
    int64_t nbytes() const {
        return rows * ld + static_cast<int64_t>(books.size() * sizeof(float));
    }
};

}  // namespace lstmcpp
