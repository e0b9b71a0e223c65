#include "weights/bf16.h"

#include <cstring>

#include "core/blas.h"

namespace lstmcpp {

void Bf16Matrix::multiply_rows(float* out, const float* x, int64_t M, float beta) const {
    // The whole matrix as float32 in this thread's buffer (kept for the next call), then the BLAS.
    thread_local AlignedVector<float> decoded;
    if (static_cast<int64_t>(decoded.size()) < rows * cols) decoded.resize(rows * cols);
    for (int64_t i = 0; i < rows * cols; ++i) {
        const uint32_t bits = static_cast<uint32_t>(data[i]) << 16;
        std::memcpy(&decoded[i], &bits, sizeof(float));
    }
    gemm_parallel<float>(get_num_threads(), false, true, M, rows, cols, 1.0f, x, cols, decoded.data(), cols, beta, out, rows);
}

}  // namespace lstmcpp
