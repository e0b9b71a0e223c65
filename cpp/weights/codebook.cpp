#include "weights/codebook.h"

#include <stdexcept>
#include <string>

#include "core/blas.h"

namespace lstmcpp {

void CodebookMatrix::multiply_rows(float* out, const float* x, int64_t M, float beta) const {
    // The whole matrix as float32 in this thread's buffer (kept for the next call), then the BLAS.
    thread_local AlignedVector<float> decoded;
    if (static_cast<int64_t>(decoded.size()) < rows * cols) decoded.resize(rows * cols);
    for (int64_t n = 0; n < rows; ++n) {
        const float* book = view.books + (n / view.rows_per_book) * view.book_size;
        const uint8_t* idx = view.indices + n * view.ld;
        float* row = decoded.data() + n * cols;
        for (int64_t k = 0; k < cols; ++k)
            row[k] = book[view.bits == 4 ? (idx[k / 2] >> (4 * (k % 2))) & 15 : idx[k]];
    }
    gemm_parallel<float>(get_num_threads(), false, true, M, rows, cols, 1.0f, x, cols, decoded.data(), cols, beta, out, rows);
}

void CodebookWeights::assign(const uint8_t* idx, const float* values, int64_t N, int64_t K, int64_t per_book,
                             int64_t size) {
    if (size != 16 && size != 256) throw std::invalid_argument("codebook: 16 or 256 values a book, got " + std::to_string(size));
    if (per_book < 1 || N % per_book != 0)
        throw std::invalid_argument("codebook: " + std::to_string(N) + " rows do not split into books of " + std::to_string(per_book));
    rows = N;
    cols = K;
    rows_per_book = per_book;
    book_size = size;
    ld = size == 16 ? ((K + 1) / 2 + 7) / 8 * 8 : (K + 7) / 8 * 8;  // whole 8-byte groups of indices
    indices.assign(N * ld, uint8_t(0));
    for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) {
            const uint8_t i = idx[n * K + k];
            if (i >= size) throw std::invalid_argument("codebook: index " + std::to_string(i) + " past a book of " + std::to_string(size));
            if (size == 16) indices[n * ld + k / 2] |= static_cast<uint8_t>(i << (4 * (k % 2)));
            else indices[n * ld + k] = i;
        }
    books.assign(values, values + (N / per_book) * size);
}

}  // namespace lstmcpp
