// The int8 weight format (SPEC §5, "int8"): every row of a weight matrix W (N,K) stored as int8
// values q with its own symmetric scale s (W[n, k] ~ q[n, k] * s[n]); the activations entering a
// product are quantized the same way per row (per batch row, per step), the products summed
// exactly in int32, and the result scaled back to float32. The matrix is stored in the kernels'
// layout (kernels.h, Int8View: blocks of 16 rows, groups of 4 weights), every path reading the same
// bytes; the activations as bytes q + 128, for VNNI's u8 x s8 product. The gate math and the cell state stay
// float32. The weights' quantization is done once, in Python (lstmcpp.quantize, with the NumPy
// reference's own function), so the core and the reference hold the same integers.
#pragma once

#include <cstdint>

#include "core/aligned.h"
#include "core/team.h"
#include "kernels/kernels.h"

namespace lstmcpp {

struct Int8Matrix;

// One thread's rows `outputs` of an int8 matrix, applied every step: C[:, outputs] (+)= A W[outputs]^T.
class Int8StepProduct {
public:
    // A step's activations, quantized once (into this thread's buffer) for all products that share them.
    struct Prepared {
        // (M, ldq) bytes q + 128, q in [-127, 127]; each row padded with q = 0 to a multiple of 16,
        // ldq to one of 64 (the bytes between are any: the kernels read them against zero weights)
        const uint8_t* q;
        int64_t ldq;
        const float* scale;  // (M)
    };
    static Prepared prepare(const Kernels<float>& K, const float* A, int64_t lda, int64_t M, int64_t depth);

    Int8StepProduct() = default;  // no rows: apply does nothing
    Int8StepProduct(const Kernels<float>& K, const Int8Matrix& W, Range outputs) : K_(&K), W_(&W), rows_(outputs) {}

    void apply(float* C, int64_t ldc, const Prepared& a, int64_t M, float beta) const;
    void apply(float* C, int64_t ldc, const float* A, int64_t lda, int64_t M, float beta) const;
    // The same for the part [part.begin, part.end) of its rows (counted from its first).
    void apply(float* C, int64_t ldc, const Prepared& a, int64_t M, float beta, Range part) const;
    int64_t size() const { return rows_.size(); }

private:
    const Kernels<float>* K_ = nullptr;
    const Int8Matrix* W_ = nullptr;
    Range rows_{0, 0};
};

struct Int8Matrix {
    using Product = Int8StepProduct;
    static constexpr bool kPacks = false;  // one layout: threads always split the rows
    // A large batch projects its input step by step: the same kernel (the input product of every
    // row is no faster), and each step's gates stay in cache (time_loop.cpp).
    static constexpr bool kStepwiseInput = true;
    // A step's team is sized on half its multiply-adds (time_loop.cpp): the products cost a quarter
    // of float32's (vpdpbusd: 4 a lane), the gates and the quantizing of h the same. Measured on
    // Zen 4: a one-step call of H = 128 runs faster on one thread (3.3 against 4.1 us a
    // stream.step), a stream of H = 256 on two (1.11 against 1.28 ms for 200 steps).
    static constexpr int64_t kMacsPerFloatMac = 2;
    // From 8 rows a thread, the threads split the batch, each running whole steps for its rows
    // with all of W and no barrier (time_loop.cpp), as packed float weights do: the products are
    // exact whatever the split. Measured on Zen 4 against splitting the hidden units: B64 T50
    // H512 0.92-0.94x the time, B32 0.88-0.93x, B16 0.93-0.98x, B64 H256 0.80-0.88x, a pool's
    // 256 streams of H = 128 0.74-0.75x.
    static constexpr int64_t kSplitsBatchFrom = 8;
    Int8View view{};   // data null when the model has no such matrix
    int64_t rows = 0;  // N
    int64_t cols = 0;  // K

    int64_t bytes() const { return rows * cols; }  // what a product reads
    // out (M,N) = beta*out + x (M,K) W^T, every row at once, split over the whole team.
    void multiply_rows(float* out, const float* x, int64_t M, float beta) const;
    // The product of one thread's rows `outputs` of W each step (pack: the format has one layout).
    Int8StepProduct step_product(const Kernels<float>& K, bool /*pack*/, Range outputs) const {
        return Int8StepProduct(K, *this, outputs);
    }
};

// A matrix's stored form: what Int8Matrix points into.
struct Int8Weights {
    using Matrix = Int8Matrix;
    AlignedVector<int8_t> data;      // the kernels' layout (Int8View), rows padded to 128
    AlignedVector<int32_t> row_sums; // (N rounded up to 16)
    AlignedVector<float> scales;     // (N rounded up to 16)
    int64_t rows = 0, cols = 0;
    bool has_min = false;            // some weight is -128 (Int8View::has_min)

    bool empty() const { return data.empty(); }
    Int8Matrix view() const {
        if (data.empty()) return {};
        return {{data.data(), row_sums.data(), scales.data(), (cols + 3) / 4, block_bytes(cols), has_min}, rows, cols};
    }
    // The bytes of a block of 16 rows (Int8View::ld): 64 a group of 4 columns, the groups padded to
    // a multiple of 16 (an AMX tile's).
    static int64_t block_bytes(int64_t K) { return 64 * (((K + 3) / 4 + 15) / 16 * 16); }
    // q (N,K) row-major int8 (any values, -128 included) and scales (N): stored in the kernels' layout.
    void assign(const int8_t* q, const float* s, int64_t N, int64_t K);
    int64_t nbytes() const { return rows * cols + rows * static_cast<int64_t>(sizeof(float)); }
};

}  // namespace lstmcpp
