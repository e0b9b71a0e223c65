#include "weights/int8.h"

#include <algorithm>
#include <cstring>

namespace lstmcpp {

namespace {

// A row of quantized activations: K bytes, padded to whole 64-byte rows of an AMX tile (the
// kernels read the bytes past K only against zero weights).
int64_t padded64(int64_t K) { return (K + 63) / 64 * 64; }

// This thread's buffer for quantized activations: grows to the largest call seen, then a
// streaming call allocates nothing.
struct ActivationBuffer {
    AlignedVector<uint8_t> q;
    AlignedVector<float> scale;
    void reserve(int64_t M, int64_t ldq) {
        if (static_cast<int64_t>(q.size()) < M * ldq) q.resize(M * ldq);
        if (static_cast<int64_t>(scale.size()) < M) scale.resize(M);
    }
};

ActivationBuffer& activation_buffer() {
    thread_local ActivationBuffer buffer;
    return buffer;
}

constexpr int64_t kRowBlock = 64;  // rows of x quantized and multiplied at a time (they stay in cache)

}  // namespace

Int8StepProduct::Prepared Int8StepProduct::prepare(const Kernels<float>& K, const float* A, int64_t lda, int64_t M,
                                                   int64_t depth) {
    ActivationBuffer& buffer = activation_buffer();
    const int64_t ldq = padded64(depth);
    buffer.reserve(M, ldq);
    K.quantize_rows(buffer.q.data(), ldq, buffer.scale.data(), A, lda, M, depth);
    return {buffer.q.data(), ldq, buffer.scale.data()};
}

void Int8StepProduct::apply(float* C, int64_t ldc, const Prepared& a, int64_t M, float beta) const {
    apply(C, ldc, a, M, beta, Range{0, rows_.size()});
}

void Int8StepProduct::apply(float* C, int64_t ldc, const Prepared& a, int64_t M, float beta, Range part) const {
    if (part.size() <= 0) return;
    const int64_t first = rows_.begin + part.begin;
    K_->gemm_nt_s8(C + first, ldc, a.q, a.ldq, a.scale, W_->view, first, M, part.size(), beta);
}

void Int8StepProduct::apply(float* C, int64_t ldc, const float* A, int64_t lda, int64_t M, float beta) const {
    if (rows_.size() <= 0) return;
    apply(C, ldc, prepare(*K_, A, lda, M, W_->cols), M, beta);
}

void Int8Matrix::multiply_rows(float* out, const float* x, int64_t M, float beta) const {
    const Kernels<float>& K = kernels_f32();
    const double macs = double(M) * double(rows) * double(cols);
    // a share of the rows of x for each thread (each reads all of W once: few rows, and it is read
    // from memory), taken by the team's threads as they come; no row's result depends on its share
    const int threads = macs < 1e6 ? 1 : get_num_threads();
    run_team_chunks(threads, threads, [&](int64_t q) {
        const Range mine = split(M, threads, static_cast<int>(q), 8);  // whole 8-row tiles
        for (int64_t m0 = mine.begin; m0 < mine.end; m0 += kRowBlock) {
            const int64_t m = std::min(kRowBlock, mine.end - m0);
            const Int8StepProduct::Prepared a = Int8StepProduct::prepare(K, x + m0 * cols, cols, m, cols);
            K.gemm_nt_s8(out + m0 * rows, rows, a.q, a.ldq, a.scale, view, 0, m, rows, beta);
        }
    });
}

void Int8Weights::assign(const int8_t* q, const float* s, int64_t N, int64_t K) {
    rows = N;
    cols = K;
    has_min = false;
    constexpr int64_t S = Int8View::kBlocksPerSuper;
    const int64_t blocks = (N + 15) / 16, groups = (K + 3) / 4, ld = block_bytes(K);
    data.assign((blocks + S - 1) / S * S * ld, int8_t(0));
    row_sums.assign(blocks * 16, 0);
    scales.assign(blocks * 16, 0.0f);
    const Int8View layout{data.data(), nullptr, nullptr, groups, ld};
    for (int64_t n = 0; n < N; ++n) {
        int8_t* block = const_cast<int8_t*>(layout.block(n / 16)) + (n % 16) * 4;
        for (int64_t k = 0; k < K; ++k) {
            block[(k / 4) * Int8View::kGroupStride + k % 4] = q[n * K + k];
            row_sums[n] += q[n * K + k];
            has_min = has_min || q[n * K + k] == -128;
        }
        scales[n] = s[n];
    }
}

}  // namespace lstmcpp
