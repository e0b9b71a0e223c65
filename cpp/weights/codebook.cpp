#include "weights/codebook.h"

#include <stdexcept>
#include <string>

#include "weights/float_rows_product.h"

namespace lstmcpp {

void CodebookMatrix::multiply_rows(float* out, const float* x, int64_t M, float beta) const {
    multiply_float_rows(*this, out, x, M, beta);
}

void CodebookMatrix::decode_rows(float* out, Range r) const {
    kernels_f32().decode_codebook(out + r.begin * cols, cols, view, r.begin, r.size(), cols);
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
    const int64_t blocks = (K + 31) / 32;  // the kernels' layout (kernels.h, CodebookView)
    ld = size == 16 ? 16 * blocks : 32 * blocks;
    indices.assign(N * ld, uint8_t(0));
    for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) {
            const uint8_t i = idx[n * K + k];
            if (i >= size) throw std::invalid_argument("codebook: index " + std::to_string(i) + " past a book of " + std::to_string(size));
            if (size == 16) indices[n * ld + (k / 32) * 16 + k % 16] |= static_cast<uint8_t>(i << (k & 16 ? 4 : 0));
            else indices[n * ld + k] = i;
        }
    books.assign(values, values + (N / per_book) * size);
}

}  // namespace lstmcpp
