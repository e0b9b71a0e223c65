// The Mogrifier (SPEC §7; Melis, Kočiský, Blunsom, 2020), our reading of the notes' 形变LSTM: before
// each step's gates, the input x and the state h gate each other for `rounds` rounds,
//   x^(-1) = x_t, h^(0) = h_{t-1};  odd j: x^(j) = 2*sigmoid(h^(j-1) Q_j^T) * x^(j-2)
//                                   even j: h^(j) = 2*sigmoid(x^(j-1) R_j^T) * h^(j-2)
// and the gates read the last x and the last h. Q_j (I,P), R_j (P,I), or with a rank q each the
// product a (rows,q) b (q,cols). Forward beside backward: the rounds of a block of batch rows as
// small products (the per-step kernels) and the elementwise gating; the matrices' gradients after
// the time loop, as large products over every row.
//
// One row's record of a step (what forward keeps for backward), `record_size()` values: for each
// round j in turn, its output (x^(j) or h^(j)) and its gate s_j = 2*sigmoid(...), n_j values each.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "core/blas.h"
#include "core/team.h"
#include "kernels/kernels.h"
#include "weights/dense.h"

namespace lstmcpp {

// One pointer a round, held inline up to kInline rounds (so building a Mogrifier for a call, as a
// stream's step does, allocates nothing), on the heap beyond.
template <class P>
class RoundPointers {
public:
    void push_back(P p) {
        if (n_ < kInline) inline_[n_] = p;
        else heap_.push_back(p);
        ++n_;
    }
    P operator[](int64_t j) const { return j < kInline ? inline_[j] : heap_[j - kInline]; }

private:
    static constexpr int64_t kInline = 8;
    std::array<P, kInline> inline_{};
    std::vector<P> heap_;
    int64_t n_ = 0;
};

template <class T>
struct Mogrifier {
    int64_t rounds = 0;  // 0: none (every other member unused)
    int64_t rank = 0;    // q, or 0 for whole matrices
    int64_t I = 0, P = 0;
    RoundPointers<const T*> a, b;  // round j at [j - 1]: Q_j / R_j (or factor a), factor b (rank only)
    RoundPointers<T*> a_grad, b_grad;

    int64_t out_size(int64_t j) const { return j % 2 ? I : P; }  // n_j
    int64_t src_size(int64_t j) const { return j % 2 ? P : I; }
    int64_t record_size() const {
        int64_t n = 0;
        for (int64_t j = 1; j <= rounds; ++j) n += 2 * out_size(j);
        return n;
    }
    // where round j's output starts in a record (its gate follows it)
    int64_t offset(int64_t j) const {
        int64_t n = 0;
        for (int64_t k = 1; k < j; ++k) n += 2 * out_size(k);
        return n;
    }
    // the weights a step's rounds read (each a product of one row), all rounds together
    int64_t weights() const {
        int64_t n = 0;
        for (int64_t j = 1; j <= rounds; ++j) n += out_size(j) * (rank ? rank + src_size(j) : src_size(j));
        return n;
    }
    int64_t last_x() const { return rounds % 2 ? rounds : rounds - 1; }  // the last odd round
    int64_t last_h() const { return rounds % 2 ? rounds - 1 : rounds; }  // the last even one (0: h itself)

    // The gates' inputs for M rows: the last x (M,I) and the last h (M,P), each with its row stride.
    struct Rows {
        const T* x;
        int64_t ldx;
        const T* h;
        int64_t ldh;
    };
    Rows last(const T* record, int64_t ld, const T* h, int64_t ldh) const {
        const int64_t lh = last_h();
        return {record + offset(last_x()), ld, lh == 0 ? h : record + offset(lh), lh == 0 ? ldh : ld};
    }

    // M rows of x (ldx) and h (ldh) through the rounds into their records (M rows of ld >=
    // record_size()). tmp: M * rank values (rank only).
    void forward(const Kernels<T>& K, const T* x, int64_t ldx, const T* h, int64_t ldh, int64_t M, T* record,
                 int64_t ld, T* tmp) const {
        forward(K, x, ldx, h, ldh, M, record, ld, tmp, 1, 0, [] {});
    }
    // The same by a team of `parts` threads, this one `me`: each round's outputs split among them,
    // each making its part (from the whole round before) and then meeting the others (meet()).
    // A row's output is the same whatever the split. tmp: this thread's own.
    template <class Meet>
    void forward(const Kernels<T>& K, const T* x, int64_t ldx, const T* h, int64_t ldh, int64_t M, T* record,
                 int64_t ld, T* tmp, int parts, int me, const Meet& meet) const {
        for (int64_t j = 1; j <= rounds; ++j) {
            const int64_t n = out_size(j), depth = src_size(j);
            const Range part = split(n, parts, me, 16);
            const T* src = value(j - 1, x, ldx, h, ldh, record, ld);
            const T* scaled = value(j - 2, x, ldx, h, ldh, record, ld) + part.begin;
            const int64_t ld_src = stride(j - 1, ldx, ldh, ld), ld_scaled = stride(j - 2, ldx, ldh, ld);
            T* out = record + offset(j) + part.begin;
            T* s = record + offset(j) + n + part.begin;
            if (rank > 0) {  // s = (src b^T) a^T (src b^T whole on every thread)
                step_gemm_nt(K, tmp, rank, src, ld_src, b[j - 1], depth, M, rank, depth, T(0));
                step_gemm_nt(K, s, ld, tmp, rank, a[j - 1] + part.begin * rank, rank, M, part.size(), rank, T(0));
            } else {
                step_gemm_nt(K, s, ld, src, ld_src, a[j - 1] + part.begin * depth, depth, M, part.size(), depth, T(0));
            }
            for (int64_t m = 0; m < M; ++m) {
                T* s_m = s + m * ld;
                K.sigmoid(s_m, s_m, part.size());
                for (int64_t k = 0; k < part.size(); ++k) {
                    s_m[k] *= T(2);
                    out[m * ld + k] = s_m[k] * scaled[m * ld_scaled + k];
                }
            }
            if (parts > 1) meet();
        }
    }

    // Back through the rounds for the same M rows: dx_last (M,I) and dh_last (M,P) are the gradients
    // of the last x and h; adds the gradient of x_t into dx (M,I) and writes h_{t-1}'s into dh (M,P)
    // (which may be dh_last), and each
    // round's dp (the gradient of its product, n_j values) into d_record (M rows of ld_d >=
    // record_size() / 2). work: M * (I + P + record_size() / 2) + M * rank values.
    void backward(const Kernels<T>& K, const T* x, int64_t ldx, const T* h, int64_t ldh, const T* record, int64_t ld,
                  const T* dx_last, int64_t ld_dx_last, const T* dh_last, int64_t ld_dh_last, T* dx, int64_t ld_dx,
                  T* dh, int64_t ld_dh, T* d_record, int64_t ld_d, int64_t M, T* work) const {
        // d[j]: the gradient of round j's output (j = -1: x_t, j = 0: h_{t-1}), M rows of W values
        const int64_t W = I + P + record_size() / 2;
        std::fill(work, work + M * W, T(0));
        auto d = [&](int64_t j) { return work + (j == -1 ? 0 : j == 0 ? I : I + P + offset(j) / 2); };
        for (int64_t m = 0; m < M; ++m) {
            T* to_x = d(last_x()) + m * W;
            T* to_h = d(last_h()) + m * W;
            for (int64_t k = 0; k < I; ++k) to_x[k] += dx_last[m * ld_dx_last + k];
            for (int64_t k = 0; k < P; ++k) to_h[k] += dh_last[m * ld_dh_last + k];
        }
        T* tmp = work + M * W;
        for (int64_t j = rounds; j >= 1; --j) {
            const int64_t n = out_size(j), depth = src_size(j);
            const T* scaled = value(j - 2, x, ldx, h, ldh, record, ld);
            const int64_t ld_scaled = stride(j - 2, ldx, ldh, ld);
            const T* s = record + offset(j) + n;
            T* dp = d_record + offset(j) / 2;
            // forward was: out = s * scaled, s = 2*sigmoid(p)   so: d scaled += d out * s,
            // dp = d out * scaled * s * (1 - s/2)
            for (int64_t m = 0; m < M; ++m) {
                const T* d_out = d(j) + m * W;
                T* d_scaled = d(j - 2) + m * W;
                for (int64_t k = 0; k < n; ++k) {
                    const T s_k = s[m * ld + k];
                    d_scaled[k] += d_out[k] * s_k;
                    dp[m * ld_d + k] = d_out[k] * scaled[m * ld_scaled + k] * s_k * (T(1) - T(0.5) * s_k);
                }
            }
            // forward was: p = src M_j^T   so: d src += dp M_j
            if (rank > 0) {
                step_gemm_nn(K, tmp, rank, dp, ld_d, a[j - 1], rank, M, rank, n, T(0));
                step_gemm_nn(K, d(j - 1), W, tmp, rank, b[j - 1], depth, M, depth, rank, T(1));
            } else {
                step_gemm_nn(K, d(j - 1), W, dp, ld_d, a[j - 1], depth, M, depth, n, T(1));
            }
        }
        for (int64_t m = 0; m < M; ++m) {
            for (int64_t k = 0; k < I; ++k) dx[m * ld_dx + k] += d(-1)[m * W + k];
            std::copy(d(0) + m * W, d(0) + m * W + P, dh + m * ld_dh);
        }
    }

    // After the loop, over all `rows` rows: M_j's gradient += dp_j^T src_j. x (rows,I) and h
    // (rows,P) are what entered the rounds, records and d_records as forward and backward wrote them.
    void add_gradients(const T* x, int64_t ldx, const T* h, int64_t ldh, const T* records, int64_t ld,
                       const T* d_records, int64_t ld_d, int64_t rows, int threads) const {
        for (int64_t j = 1; j <= rounds; ++j) {
            const int64_t n = out_size(j), depth = src_size(j);
            const T* src = value(j - 1, x, ldx, h, ldh, records, ld);
            const int64_t ld_src = stride(j - 1, ldx, ldh, ld);
            const T* dp = d_records + offset(j) / 2;
            if (rank > 0) {  // dM (n,depth), then a += dM b^T, b += a^T dM
                std::vector<T> dM(n * depth);
                gemm_parallel<T>(threads, true, false, n, depth, rows, T(1), dp, ld_d, src, ld_src, T(0), dM.data(), depth);
                gemm(false, true, n, rank, depth, T(1), dM.data(), depth, b[j - 1], depth, T(1), a_grad[j - 1], rank);
                gemm(true, false, rank, depth, n, T(1), a[j - 1], rank, dM.data(), depth, T(1), b_grad[j - 1], depth);
            } else {
                gemm_parallel<T>(threads, true, false, n, depth, rows, T(1), dp, ld_d, src, ld_src, T(1), a_grad[j - 1],
                                 depth);
            }
        }
    }

private:
    // round j's output (j = -1: x, j = 0: h) and its row stride
    const T* value(int64_t j, const T* x, int64_t, const T* h, int64_t, const T* record, int64_t) const {
        return j == -1 ? x : j == 0 ? h : record + offset(j);
    }
    static int64_t stride(int64_t j, int64_t ldx, int64_t ldh, int64_t ld) { return j == -1 ? ldx : j == 0 ? ldh : ld; }
};

}  // namespace lstmcpp
