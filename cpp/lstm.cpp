// The LSTM layer: forward and backward through time, one cell (layer, direction) at a time.
//
// Per cell, forward is one GEMM for the input projection of all T steps, then per step one
// recurrent product and one fused elementwise pass. One OpenMP team runs the whole time loop:
// thread k owns hidden units [j0, j1) in all four gates (and output units [p0, p1) of the
// projection) for the whole sequence, so its rows of W_hh stay in its own cache, and the team
// meets at one barrier per step (two when projecting). Backward mirrors it, and computes the
// weight gradients as large GEMMs after its reverse-time loop.
#include "lstm.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "blas.h"
#include "kernels.h"
#include "parallel.h"

namespace lstmcpp {

namespace {

std::atomic<int> g_num_threads{0};
std::atomic<uint64_t> g_next_model_id{1};

// One cell's parameters (or their gradients) as pointers into the flat buffer.
template <class P>
struct CellTensors {
    P* weight_ih;        // (4H,I)
    P* weight_hh;        // (4H,P)
    P* bias_ih;          // (4H) or null
    P* bias_hh;          // (4H) or null
    P* weight_hr;        // (P,H) or null
    P* weight_peephole;  // (3,H) rows i, f, o; zeros when the model has none (forward only)
};

template <class P, class T>
CellTensors<P> cell_tensors(T* base, const CellOffsets& o, P* zero_peepholes) {
    auto at = [base](int64_t off) -> P* { return off < 0 ? nullptr : base + off; };
    P* peep = at(o.weight_peephole);
    return {at(o.weight_ih), at(o.weight_hh), at(o.bias_ih), at(o.bias_hh), at(o.weight_hr),
            peep ? peep : zero_peepholes};
}

template <class T>
struct CellShape {
    int64_t steps, batch, I, H, P;
    bool projecting, reverse;
    T cell_clip, proj_clip;  // +inf when off
};

template <class T>
T clip_or_inf(double clip) {
    return clip > 0 ? static_cast<T>(clip) : std::numeric_limits<T>::infinity();
}

inline bool active(const int32_t* lengths, int64_t b, int64_t t) {
    return lengths == nullptr || t < lengths[b];
}

// Threads worth waking for a time loop with this much work per step: each barrier costs
// about as much as 64k multiply-adds, so small cells run on one thread.
std::atomic<int64_t> g_min_macs_per_thread{65536};

int threads_for_step(int64_t macs_per_step) {
    int64_t wanted = std::max<int64_t>(1, macs_per_step / g_min_macs_per_thread.load());
    return static_cast<int>(std::min<int64_t>(get_num_threads(), wanted));
}

// The per-step products. Our kernels read the weights in place, where the BLAS would copy
// (pack) them on every call. Measured on Zen 4: ours win for the forward product (rows of W
// dotted with rows of h) at every batch size; for backward's (rows of W summed) the BLAS wins
// above 16. float64 (the checking path, portable kernels only) uses the BLAS above 16 too.
constexpr int64_t kSmallBatch = 16;

template <class T>
void step_gemm_nt(const Kernels<T>& K, T* C, int64_t ldc, const T* A, int64_t lda, const T* W,
                  int64_t ldw, int64_t M, int64_t N, int64_t depth, T beta) {
    if (N <= 0) return;
    if (std::is_same_v<T, float> || M <= kSmallBatch) K.gemm_nt(C, ldc, A, lda, W, ldw, M, N, depth, beta);
    else gemm(false, true, M, N, depth, T(1), A, lda, W, ldw, beta, C, ldc);
}

template <class T>
void step_gemm_nn(const Kernels<T>& K, T* C, int64_t ldc, const T* A, int64_t lda, const T* W,
                  int64_t ldw, int64_t M, int64_t N, int64_t depth, T beta) {
    if (N <= 0) return;
    if (M <= kSmallBatch) K.gemm_nn(C, ldc, A, lda, W, ldw, M, N, depth, beta);
    else gemm(false, false, M, N, depth, T(1), A, lda, W, ldw, beta, C, ldc);
}

// Packs columns [0, N) of B (K,N) for gemm_packed: block n of `width` columns holds K rows of
// `width` values, B(k, n*width + r) at [(n*K + k)*width + r], zero past column N. B(k, j) is
// src[j*ld + k] when columns_are_rows (B = W^T for a row-major W (N,K)), else src[k*ld + j].
// packed holds ceil(N / width) * width * K values.
template <class T>
void pack_panel(T* packed, const T* src, int64_t ld, bool columns_are_rows, int64_t K, int64_t N,
                int64_t width) {
    for (int64_t n0 = 0; n0 < N; n0 += width) {
        T* block = packed + n0 * K;
        const int64_t w = N - n0 < width ? N - n0 : width;
        if (columns_are_rows) {
            for (int64_t r = 0; r < w; ++r) {
                const T* column = src + (n0 + r) * ld;
                for (int64_t k = 0; k < K; ++k) block[k * width + r] = column[k];
            }
        } else {
            for (int64_t k = 0; k < K; ++k)
                for (int64_t r = 0; r < w; ++r) block[k * width + r] = src[k * ld + n0 + r];
        }
        for (int64_t k = 0; k < K; ++k)
            for (int64_t r = w; r < width; ++r) block[k * width + r] = T(0);
    }
}

// Whether a call's per-step products pack their weights (once per call, per thread): when the
// call has at least this many rows of steps x batch to spread the packing over (testing switch:
// set_pack_min_rows). Forward's in-place kernels stay faster for a batch of one.
std::atomic<int64_t> g_pack_min_rows{128};

bool packs_weights(int64_t batch, int64_t steps, bool forward) {
    return steps * batch >= g_pack_min_rows.load() && (batch >= 2 || !forward);
}

// One thread's columns `cols` of a per-step product's right-hand side B (depth,N), applied every
// step as C[:, cols] (+)= A B[:, cols]. B is W^T when columns_are_rows (forward's products: the
// rows of W (N,depth) are B's columns), else W (depth,N) itself (backward's). When `pack`, the
// columns are packed once, into this thread's own memory, for K.gemm_packed; otherwise the
// small-batch kernels read W in place (a packed copy would not pay for itself).
template <class T>
class StepProduct {
public:
    StepProduct(const Kernels<T>& K, bool pack, const T* W, int64_t ldw, bool columns_are_rows,
                int64_t depth, Range cols)
        : K_(&K), W_(W), ldw_(ldw), columns_are_rows_(columns_are_rows), depth_(depth), cols_(cols) {
        if (pack && cols.size() > 0) {
            const int64_t width = K.panel_width;
            packed_.resize((cols.size() + width - 1) / width * width * depth);
            pack_panel(packed_.data(), columns_are_rows ? W + cols.begin * ldw : W + cols.begin, ldw,
                       columns_are_rows, depth, cols.size(), width);
        }
    }

    // C[:, cols] = beta*C[:, cols] + A (M,depth) B[:, cols]; C points at column 0.
    void apply(T* C, int64_t ldc, const T* A, int64_t lda, int64_t M, T beta) const {
        if (cols_.size() <= 0) return;
        T* c = C + cols_.begin;
        if (!packed_.empty())
            K_->gemm_packed(c, ldc, A, lda, packed_.data(), M, cols_.size(), depth_, beta);
        else if (columns_are_rows_)
            step_gemm_nt(*K_, c, ldc, A, lda, W_ + cols_.begin * ldw_, ldw_, M, cols_.size(), depth_, beta);
        else
            step_gemm_nn(*K_, c, ldc, A, lda, W_ + cols_.begin, ldw_, M, cols_.size(), depth_, beta);
    }

private:
    const Kernels<T>* K_;
    const T* W_;
    int64_t ldw_;
    bool columns_are_rows_;
    int64_t depth_;
    Range cols_;
    AlignedVector<T> packed_;
};

// One thread's units of all four gate blocks of W (4H,depth), e.g. W_ih for the input or W_hh
// for the state: add(z, A) does z[:, q*H + units] += A (B,depth) W[q*H + units, :]^T for each q.
template <class T>
class GateProducts {
public:
    GateProducts(const Kernels<T>& K, bool pack, const T* W, int64_t depth, int64_t H, Range units)
        : depth_(depth),
          gates_{gate(K, pack, W, depth, H, units, 0), gate(K, pack, W, depth, H, units, 1),
                 gate(K, pack, W, depth, H, units, 2), gate(K, pack, W, depth, H, units, 3)} {}
    void add(T* z, int64_t ldz, const T* A, int64_t B) const {
        for (const StepProduct<T>& gate : gates_) gate.apply(z, ldz, A, depth_, B, T(1));
    }

private:
    static StepProduct<T> gate(const Kernels<T>& K, bool pack, const T* W, int64_t depth, int64_t H,
                               Range units, int64_t q) {
        return StepProduct<T>(K, pack, W, depth, true, depth, Range{q * H + units.begin, q * H + units.end});
    }

    int64_t depth_;
    std::array<StepProduct<T>, 4> gates_;  // i, f, g, o (no heap allocation: a streaming call makes these)
};

// Runs body(team, me) on a team of `threads` OpenMP threads, or directly on this thread when
// the team would be one (entering a parallel region costs about a microsecond).
template <class Body>
void run_team(int threads, const Body& body) {
    if (threads <= 1) {
        DenormalsAreZero daz;
        body(1, 0);
        return;
    }
#pragma omp parallel num_threads(threads)
    {
        DenormalsAreZero daz;
        body(omp_get_num_threads(), omp_get_thread_num());
    }
}

// out (cols,rows) = in (rows,cols)^T, in 32x32 blocks so both sides stream through the cache.
template <class T>
void transpose(T* out, const T* in, int64_t rows, int64_t cols) {
    for (int64_t r0 = 0; r0 < rows; r0 += 32)
        for (int64_t c0 = 0; c0 < cols; c0 += 32)
            for (int64_t r = r0; r < std::min(rows, r0 + 32); ++r)
                for (int64_t c = c0; c < std::min(cols, c0 + 32); ++c) out[c * rows + r] = in[r * cols + c];
}

// Buffers for one call: from this thread's reusable scratch when the call needs little (up to
// 64k elements), else one heap block for this call. take() hands out 16-element-aligned pieces.
template <class T>
class Scratch {
public:
    static constexpr int64_t kReusable = 1 << 16;

    explicit Scratch(int64_t elements) {
        const int64_t padded = elements + 4 * 16;  // each piece rounds up to 16 elements
        if (padded <= kReusable) {
            thread_local AlignedVector<T> reused(kReusable);
            base_ = reused.data();
        } else {
            own_.resize(padded);
            base_ = own_.data();
        }
    }
    T* take(int64_t n) {
        T* p = base_ + used_;
        used_ += (n + 15) / 16 * 16;
        return p;
    }

private:
    AlignedVector<T> own_;
    T* base_ = nullptr;
    int64_t used_ = 0;
};

// dst[rows, cols] = src[rows, cols]
template <class T>
void copy_block(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, Range rows, Range cols) {
    for (int64_t b = rows.begin; b < rows.end; ++b)
        std::copy(src + b * ld_src + cols.begin, src + b * ld_src + cols.end, dst + b * ld_dst + cols.begin);
}

// One thread's share of a time loop. By hidden units: the thread computes its units (and output
// units) of every batch row, so each step needs all of the previous state and the team meets at
// a barrier every step. By batch rows: the thread runs whole steps for its rows, sharing nothing
// with the others until the loop ends. Rows are chosen when the weights are packed and every
// thread gets a full row tile of the kernel: measured on a 2-vCPU VM, the split by units ran one
// time in five at half speed (while the vCPUs sat far apart, each step's exchange and barrier
// cost a few microseconds more), the split by rows one time in forty, and 5% faster otherwise.
struct Share {
    bool by_rows;
    Range rows, units, outputs;
};

constexpr int64_t kRowsPerThread = 8;

Share share_of(int64_t B, int64_t H, int64_t P, bool projecting, bool packed, int team, int me) {
    if (packed && B >= kRowsPerThread * team) return {true, split(B, team, me, 1), {0, H}, {0, P}};
    const Range units = split(H, team, me, 16);
    return {false, {0, B}, units, projecting ? split(P, team, me, 16) : units};
}

// ---------------------------------------------------------------------------------------------
// cell forward

// out (rows,4H) = x (rows,I) W_ih^T + b_ih + b_hh, all rows in one product; x null: the biases
// only (a one-step call projects its input inside the step).
template <class T>
void project_inputs(T* out, const T* x, int64_t rows, int64_t I, int64_t H, const CellTensors<const T>& w) {
    const int64_t G = 4 * H;
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < G; ++k)
            out[r * G + k] = (w.bias_ih ? w.bias_ih[k] : T(0)) + (w.bias_hh ? w.bias_hh[k] : T(0));
    if (x) gemm_parallel<T>(get_num_threads(), false, true, rows, G, I, T(1), x, I, w.weight_ih, I, T(1), out, G);
}

// x (T,B,I) is the input, or, when ids (T,B) is given, row ids[t,b] of table (V,4H) is step t's
// x W_ih^T + b_ih + b_hh for element b (token input, layer 0).
template <class T>
void cell_forward(T* y, int64_t ldy, T* h_n, T* c_n, CellCache<T>* cache,
                  const T* x, const int32_t* ids, const T* table, const T* h0, const T* c0,
                  const int32_t* lengths, const CellTensors<const T>& w, const CellShape<T>& s) {
    const int64_t steps = s.steps, B = s.batch, I = s.I, H = s.H, P = s.P, G = 4 * H;
    const Kernels<T>& K = kernels<T>();

    // Inference buffers come from this calling thread's scratch when small (a streaming call
    // allocates nothing), else from the heap for this call (whose freed large blocks aligned.cpp
    // keeps for the next call). gates (T,B,4H): first the input projection x W_ih^T + b_ih + b_hh of every step at
    // once (for token input, each thread gathers its columns step by step instead), then
    // activated in place step by step; the cache keeps it for backward.
    Scratch<T> scratch((cache ? 0 : steps * B * G) + 2 * B * P + 2 * B * H + (s.projecting ? B * H : 0));
    T* gates;
    if (cache) {
        cache->gates.resize(steps * B * G);
        cache->c_prev.resize(steps * B * H);
        cache->c.resize(steps * B * H);
        cache->h_prev.resize(steps * B * P);
        cache->m.resize(s.projecting ? steps * B * H : 0);
        gates = cache->gates.data();
    } else {
        gates = scratch.take(steps * B * G);
    }
    // One step (a streaming call): each thread projects the input onto its own rows inside the
    // step, so its rows of W_ih stay in its cache across calls as its rows of W_hh do.
    const bool fuse_input = steps == 1 && !ids;
    if (!ids) project_inputs(gates, fuse_input ? nullptr : x, steps * B, I, H, w);

    // state (2,B,P) and cell (2,B,H), ping-pong between steps; m (B,H) = o*tanh(c) when projecting
    T* state = scratch.take(2 * B * P);
    T* cell = scratch.take(2 * B * H);
    T* m_local = s.projecting ? scratch.take(B * H) : nullptr;
    if (h0) std::copy(h0, h0 + B * P, state);
    else std::fill(state, state + B * P, T(0));
    if (c0) std::copy(c0, c0 + B * H, cell);
    else std::fill(cell, cell + B * H, T(0));

    const int64_t macs = B * (G * (P + (fuse_input ? I : 0)) + (s.projecting ? P * H : 0));
    const bool pack = packs_weights(B, steps, true);
    run_team(threads_for_step(macs), [&](int team, int me) {
        const Share my = share_of(B, H, P, s.projecting, pack, team, me);
        const Range br = my.rows, jr = my.units, pr = my.outputs;  // my batch rows, hidden units, outputs
        const int64_t b0 = br.begin, rows = br.size();
        if (fuse_input) GateProducts<T>(K, false, w.weight_ih, I, H, jr).add(gates + b0 * G, G, x + b0 * I, rows);
        const GateProducts<T> recurrent(K, pack, w.weight_hh, P, H, jr);
        const StepProduct<T> projection(K, pack, w.weight_hr, H, true, H, s.projecting ? pr : Range{0, 0});
        T* h_cur = state;
        T* h_next = h_cur + B * P;
        T* c_cur = cell;
        T* c_next = c_cur + B * H;

        for (int64_t step = 0; step < steps; ++step) {
            const int64_t t = s.reverse ? steps - 1 - step : step;
            T* z = gates + t * B * G;  // (B,4H) this step's gates
            if (ids) {  // my part of this step's input projections, by token
                for (int64_t b = br.begin; b < br.end; ++b)
                    for (int64_t q = 0; q < 4; ++q) {
                        const T* row = table + ids[t * B + b] * G + q * H;
                        std::copy(row + jr.begin, row + jr.end, z + b * G + q * H + jr.begin);
                    }
            }
            if (cache) {
                copy_block(cache->h_prev.data() + t * B * P, P, h_cur, P, br, pr);
                copy_block(cache->c_prev.data() + t * B * H, H, c_cur, H, br, jr);
            }
            // z[my rows, my units of each gate] += h_prev[my rows] W_hh[my units]^T
            recurrent.add(z + b0 * G, G, h_cur + b0 * P, rows);
            // m (B,H): straight into the next state when not projecting
            T* m = s.projecting ? (cache ? cache->m.data() + t * B * H : m_local) : h_next;
            for (int64_t b = br.begin; b < br.end; ++b) {
                if (active(lengths, b, t)) {
                    K.gates_forward(z + b * G, c_next + b * H, m + b * H, c_cur + b * H,
                                    w.weight_peephole, H, jr.begin, jr.end, s.cell_clip);
                } else {  // past this element's length: the state carries over unchanged
                    std::copy(c_cur + b * H + jr.begin, c_cur + b * H + jr.end, c_next + b * H + jr.begin);
                    if (s.projecting) std::fill(m + b * H + jr.begin, m + b * H + jr.end, T(0));
                    else std::copy(h_cur + b * P + jr.begin, h_cur + b * P + jr.end, h_next + b * P + jr.begin);
                }
            }
            if (cache) copy_block(cache->c.data() + t * B * H, H, c_next, H, br, jr);

            if (s.projecting) {
                if (!my.by_rows) {
#pragma omp barrier
                }
                // h_next[my rows, my outputs] = m[my rows] W_hr[my outputs]^T, clipped
                projection.apply(h_next + b0 * P, P, m + b0 * H, H, rows, T(0));
                for (int64_t b = br.begin; b < br.end; ++b) {
                    T* h = h_next + b * P;
                    if (active(lengths, b, t)) {
                        for (int64_t p = pr.begin; p < pr.end; ++p)
                            h[p] = std::min(std::max(h[p], -s.proj_clip), s.proj_clip);
                    } else {
                        std::copy(h_cur + b * P + pr.begin, h_cur + b * P + pr.end, h + pr.begin);
                    }
                }
            }
            for (int64_t b = br.begin; b < br.end; ++b) {
                T* out = y + (t * B + b) * ldy;
                if (active(lengths, b, t)) std::copy(h_next + b * P + pr.begin, h_next + b * P + pr.end, out + pr.begin);
                else std::fill(out + pr.begin, out + pr.end, T(0));
            }
            if (!my.by_rows) {
#pragma omp barrier
            }
            std::swap(h_cur, h_next);
            std::swap(c_cur, c_next);
        }
        copy_block(h_n, P, h_cur, P, br, pr);
        copy_block(c_n, H, c_cur, H, br, jr);
    });
}

// ---------------------------------------------------------------------------------------------
// cell backward

// out[ids[r]] += rows[r] for r < n, rows of G values, each column in row order; the team splits
// the columns (so the sums do not depend on the number of threads).
template <class T>
void add_rows_by_id(T* out, const T* rows, const int32_t* ids, int64_t n, int64_t G) {
    run_team(n * G >= (1 << 16) ? get_num_threads() : 1, [&](int team, int me) {
        const Range cols = split(G, team, me, 16);
        for (int64_t r = 0; r < n; ++r) {
            T* __restrict o = out + ids[r] * G;
            const T* __restrict in = rows + r * G;
            for (int64_t k = cols.begin; k < cols.end; ++k) o[k] += in[k];
        }
    });
}

// sums (G) = the sum of n rows of G values, each column in row order; the team splits the columns.
template <class T>
void column_sums(T* sums, const T* rows, int64_t n, int64_t G) {
    run_team(n * G >= (1 << 16) ? get_num_threads() : 1, [&](int team, int me) {
        const Range cols = split(G, team, me, 16);
        std::fill(sums + cols.begin, sums + cols.end, T(0));
        for (int64_t r = 0; r < n; ++r)
            for (int64_t k = cols.begin; k < cols.end; ++k) sums[k] += rows[r * G + k];
    });
}

// Writes dx (T,B,I) for the input x (T,B,I); or, for token input (ids given), adds the gradient
// of the table forward gathered from into d_table (V,4H) instead, and leaves W_ih's gradient to
// the caller (it comes from d_table).
template <class T>
void cell_backward(T* dx, T* dh0, T* dc0, const CellTensors<T>& grad,
                   const CellCache<T>& cache, const T* x, const int32_t* ids, T* d_table,
                   int64_t vocab, const T* y, int64_t ldy, const T* dy,
                   const T* dh_n, const T* dc_n, const int32_t* lengths,
                   const CellTensors<const T>& w, const CellShape<T>& s, bool has_peepholes) {
    const int64_t steps = s.steps, B = s.batch, I = s.I, H = s.H, P = s.P, G = 4 * H;
    const int64_t TB = steps * B;
    const Kernels<T>& K = kernels<T>();

    // The per-step products: each thread's columns of W_hh and W_hr packed once per call when the
    // batch is worth it. Else, for more than a few steps, W_hh^T (P,4H) and W_hr^T (H,P) are made
    // once per call, so each step's products become rows dotted with rows, the faster small-batch
    // form, each thread's rows in its cache; for a few steps the kernels read W_hh and W_hr as they are.
    const bool pack = packs_weights(B, steps, false);
    const bool transposed = !pack && steps >= 8;
    AlignedVector<T> w_hh_t(transposed ? P * G : 0), w_hr_t(transposed && s.projecting ? H * P : 0);
    if (transposed) {
        transpose(w_hh_t.data(), w.weight_hh, G, P);
        if (s.projecting) transpose(w_hr_t.data(), w.weight_hr, P, H);
    }
    AlignedVector<T> dz(TB * G);                         // (T,B,4H) gradient of the pre-activations
    AlignedVector<T> dh_raw(s.projecting ? TB * P : 0);  // (T,B,P) gradient of h before proj_clip
    AlignedVector<T> dstate(2 * B * P), dcell(2 * B * H), dm(B * H);  // ping-pong, and (B,H)
    if (dh_n) std::copy(dh_n, dh_n + B * P, dstate.begin());
    else std::fill(dstate.begin(), dstate.begin() + B * P, T(0));
    if (dc_n) std::copy(dc_n, dc_n + B * H, dcell.begin());
    else std::fill(dcell.begin(), dcell.begin() + B * H, T(0));

    const int64_t macs = B * (G * P + (s.projecting ? P * H : 0));
    run_team(threads_for_step(macs), [&](int team, int me) {
        const Share my = share_of(B, H, P, s.projecting, pack, team, me);
        const Range br = my.rows, jr = my.units, pr = my.outputs;  // my batch rows, hidden units, outputs
        const int64_t b0 = br.begin, rows = br.size();
        // forward was: z += h_prev W_hh^T   so: dh_prev[:, my outputs] = dz W_hh[:, my outputs]
        const StepProduct<T> recurrent = transposed ? StepProduct<T>(K, false, w_hh_t.data(), G, true, G, pr)
                                                    : StepProduct<T>(K, pack, w.weight_hh, P, false, G, pr);
        // forward was: h_raw = m W_hr^T   so: dm[:, my units] = dh_raw W_hr[:, my units]
        const Range my_units = s.projecting ? jr : Range{0, 0};
        const StepProduct<T> projection = transposed ? StepProduct<T>(K, false, w_hr_t.data(), P, true, P, my_units)
                                                     : StepProduct<T>(K, pack, w.weight_hr, H, false, P, my_units);
        T* dh_cur = dstate.data();
        T* dh_next = dh_cur + B * P;
        T* dc_cur = dcell.data();
        T* dc_next = dc_cur + B * H;

        for (int64_t step = 0; step < steps; ++step) {
            const int64_t t = s.reverse ? step : steps - 1 - step;
            const T* gates_t = cache.gates.data() + t * B * G;
            T* dz_t = dz.data() + t * B * G;
            // dh = upstream gradient of this step's output + what flows back from the next step
            for (int64_t b = br.begin; b < br.end; ++b) {
                const bool on = active(lengths, b, t);
                const T* dy_b = dy + (t * B + b) * ldy;
                const T* dh_b = dh_cur + b * P;
                if (s.projecting) {
                    // forward was: h = clip(h_raw)   so: a clipped element passes no gradient
                    const T* h_b = y + (t * B + b) * ldy;
                    T* d = dh_raw.data() + (t * B + b) * P;
                    for (int64_t p = pr.begin; p < pr.end; ++p)
                        d[p] = (on && h_b[p] < s.proj_clip && h_b[p] > -s.proj_clip) ? dh_b[p] + dy_b[p] : T(0);
                } else {
                    T* d = dm.data() + b * H;
                    for (int64_t p = pr.begin; p < pr.end; ++p) d[p] = on ? dh_b[p] + dy_b[p] : T(0);
                }
            }
            if (s.projecting) {
                if (!my.by_rows) {
#pragma omp barrier
                }
                projection.apply(dm.data() + b0 * H, H, dh_raw.data() + (t * B + b0) * P, P, rows, T(0));
            }
            for (int64_t b = br.begin; b < br.end; ++b) {
                if (active(lengths, b, t)) {
                    K.gates_backward(dz_t + b * G, dc_next + b * H, gates_t + b * G,
                                     cache.c_prev.data() + (t * B + b) * H,
                                     cache.c.data() + (t * B + b) * H, dm.data() + b * H,
                                     dc_cur + b * H, w.weight_peephole, H, jr.begin, jr.end,
                                     s.cell_clip);
                } else {  // the step did not run: no gate gradient, the cell gradient passes through
                    for (int64_t q = 0; q < 4; ++q)
                        std::fill(dz_t + b * G + q * H + jr.begin, dz_t + b * G + q * H + jr.end, T(0));
                    std::copy(dc_cur + b * H + jr.begin, dc_cur + b * H + jr.end, dc_next + b * H + jr.begin);
                }
            }
            if (!my.by_rows) {
#pragma omp barrier
            }
            recurrent.apply(dh_next + b0 * P, P, dz_t + b0 * G, G, rows, T(0));
            for (int64_t b = br.begin; b < br.end; ++b)
                if (!active(lengths, b, t))
                    std::copy(dh_cur + b * P + pr.begin, dh_cur + b * P + pr.end, dh_next + b * P + pr.begin);
            // No barrier here: the next step's first phase reads only this thread's own slices.
            std::swap(dh_cur, dh_next);
            std::swap(dc_cur, dc_next);
        }
        copy_block(dh0, P, dh_cur, P, br, pr);
        copy_block(dc0, H, dc_cur, H, br, jr);
    });

    // The weight gradients of all steps at once, as large products.
    const int threads = get_num_threads();
    const T* dz_rows = dz.data();  // rows whose column sums are the biases' gradient
    int64_t rows = TB;
    if (ids) {
        // forward was: z = table[ids] + h_prev W_hh^T, table = embedding W_ih^T + b_ih + b_hh
        // so: d_table[v] = the sum of the dz rows of token v
        add_rows_by_id(d_table, dz.data(), ids, TB, G);
        dz_rows = d_table;
        rows = vocab;
    } else {
        // forward was: z = x W_ih^T + h_prev W_hh^T + b_ih + b_hh
        gemm_parallel<T>(threads, false, false, TB, I, G, T(1), dz.data(), G, w.weight_ih, I, T(1), dx, I);
        gemm_parallel<T>(threads, true, false, G, I, TB, T(1), dz.data(), G, x, I, T(1), grad.weight_ih, I);
    }
    gemm_parallel<T>(threads, true, false, G, P, TB, T(1), dz.data(), G, cache.h_prev.data(), P,
                     T(1), grad.weight_hh, P);
    if (grad.bias_ih || grad.bias_hh) {
        AlignedVector<T> dbias(G);
        column_sums(dbias.data(), dz_rows, rows, G);
        for (int64_t k = 0; k < G; ++k) {
            grad.bias_ih[k] += dbias[k];
            grad.bias_hh[k] += dbias[k];
        }
    }
    if (s.projecting)  // forward was: h_raw = m W_hr^T
        gemm_parallel<T>(threads, true, false, P, H, TB, T(1), dh_raw.data(), P, cache.m.data(), H,
                         T(1), grad.weight_hr, H);
    if (has_peepholes) {
        // forward was: i = sigmoid(zi + wci*c_prev), f = sigmoid(zf + wcf*c_prev), o = sigmoid(zo + wco*c)
        T* dwi = grad.weight_peephole;
        T* dwf = dwi + H;
        T* dwo = dwi + 2 * H;
        for (int64_t r = 0; r < TB; ++r) {
            const T* d = dz.data() + r * G;
            const T* cp = cache.c_prev.data() + r * H;
            const T* cn = cache.c.data() + r * H;
            for (int64_t j = 0; j < H; ++j) {
                dwi[j] += d[j] * cp[j];
                dwf[j] += d[H + j] * cp[j];
                dwo[j] += d[3 * H + j] * cn[j];
            }
        }
    }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// configuration and layout

void set_num_threads(int n) {
    if (n < 1) throw std::invalid_argument("num_threads must be >= 1, got " + std::to_string(n));
    g_num_threads.store(n);
}

void set_min_work_per_thread(int64_t macs) { g_min_macs_per_thread.store(std::max<int64_t>(1, macs)); }

void set_pack_min_rows(int64_t rows) { g_pack_min_rows.store(std::max<int64_t>(1, rows)); }

int get_num_threads() {
    int n = g_num_threads.load();
    return n > 0 ? n : std::max(1, omp_get_max_threads());
}

void Config::validate() const {
    auto fail = [](const std::string& m) { throw std::invalid_argument(m); };
    if (input_size < 1) fail("input_size must be >= 1, got " + std::to_string(input_size));
    if (hidden_size < 1) fail("hidden_size must be >= 1, got " + std::to_string(hidden_size));
    if (num_layers < 1) fail("num_layers must be >= 1, got " + std::to_string(num_layers));
    if (proj_size < 0 || (proj_size > 0 && proj_size >= hidden_size))
        fail("proj_size must be 0 or in 1..hidden_size-1 (" + std::to_string(hidden_size - 1) +
             "), got " + std::to_string(proj_size));
    if (!(cell_clip >= 0)) fail("cell_clip must be > 0 or None");
    if (!(proj_clip >= 0)) fail("proj_clip must be > 0 or None");
    if (proj_clip > 0 && proj_size == 0) fail("proj_clip needs proj_size > 0");
}

std::vector<ParamEntry> param_layout(const Config& c, std::vector<CellOffsets>* cells,
                                     int64_t* total_size) {
    c.validate();
    const int64_t H = c.hidden_size, P = c.output_size(), D = c.directions();
    std::vector<ParamEntry> entries;
    std::vector<CellOffsets> offsets;
    int64_t offset = 0;
    auto add = [&](const std::string& name, std::vector<int64_t> shape) {
        int64_t size = 1;
        for (int64_t d : shape) size *= d;
        entries.push_back({name, std::move(shape), offset, size});
        int64_t at = offset;
        offset += (size + 15) / 16 * 16;
        return at;
    };
    for (int64_t layer = 0; layer < c.num_layers; ++layer) {
        const int64_t I = c.layer_input_size(layer);
        for (int64_t d = 0; d < D; ++d) {
            const std::string sfx = "_l" + std::to_string(layer) + (d == 1 ? "_reverse" : "");
            CellOffsets o;
            o.weight_ih = add("weight_ih" + sfx, {4 * H, I});
            o.weight_hh = add("weight_hh" + sfx, {4 * H, P});
            if (c.bias) {
                o.bias_ih = add("bias_ih" + sfx, {4 * H});
                o.bias_hh = add("bias_hh" + sfx, {4 * H});
            }
            if (c.proj_size > 0) o.weight_hr = add("weight_hr" + sfx, {P, H});
            offsets.push_back(o);
        }
    }
    // Peepholes last, so the entries before them are exactly PyTorch's flat-weight order.
    if (c.peepholes) {
        for (int64_t layer = 0; layer < c.num_layers; ++layer)
            for (int64_t d = 0; d < D; ++d)
                offsets[layer * D + d].weight_peephole = add(
                    "weight_peephole_l" + std::to_string(layer) + (d == 1 ? "_reverse" : ""), {3, H});
    }
    if (cells) *cells = std::move(offsets);
    if (total_size) *total_size = offset;
    return entries;
}

// ---------------------------------------------------------------------------------------------
// the model

template <class T>
Model<T>::Model(const Config& config)
    : config_(config), id_(g_next_model_id.fetch_add(1)) {
    layout_ = param_layout(config_, &cells_, &num_params_);
    params_.assign(num_params_, T(0));
    grads_.assign(num_params_, T(0));
    zero_peepholes_.assign(3 * config_.hidden_size, T(0));
}

template <class T>
void Model<T>::forward(T* y, T* h_n, T* c_n, Cache<T>* cache, const T* x, const T* h0,
                       const T* c0, const int32_t* lengths,
                       const std::vector<const T*>& dropout_masks, int64_t steps,
                       int64_t batch, const TokenInput<T>* tokens) const {
    blas_single_threaded();
    const Config& c = config_;
    const int64_t L = c.num_layers, D = c.directions(), H = c.hidden_size, P = c.output_size();
    const int64_t B = batch, TB = steps * batch, DP = D * P;
    if (steps < 1) throw std::invalid_argument("x must have at least one time step, got T = 0");
    if (batch < 1) throw std::invalid_argument("x must have a batch of at least 1, got B = 0");
    if (!dropout_masks.empty() && static_cast<int64_t>(dropout_masks.size()) != L - 1)
        throw std::invalid_argument("dropout_masks: expected " + std::to_string(L - 1) + " masks");
    if (lengths) {
        for (int64_t b = 0; b < B; ++b)
            if (lengths[b] < 1 || lengths[b] > steps)
                throw std::invalid_argument("lengths[" + std::to_string(b) + "] = " +
                                            std::to_string(lengths[b]) + " is outside 1.." +
                                            std::to_string(steps));
    }

    if (tokens) {
        if (tokens->vocab < 1) throw std::invalid_argument("embedding: expected at least one row, got V = 0");
        for (int64_t r = 0; r < TB; ++r)
            if (tokens->ids[r] < 0 || tokens->ids[r] >= tokens->vocab)
                throw std::invalid_argument("ids[" + std::to_string(r / B) + ", " + std::to_string(r % B) + "] = " +
                                            std::to_string(tokens->ids[r]) + " is outside 0.." +
                                            std::to_string(tokens->vocab - 1));
    }

    if (cache) {
        cache->model_id = id_;
        cache->steps = steps;
        cache->batch = batch;
        cache->lengths.assign(lengths ? lengths : nullptr, lengths ? lengths + B : nullptr);
        if (tokens) {
            cache->ids.assign(tokens->ids, tokens->ids + TB);
            cache->vocab = tokens->vocab;
            cache->input.assign(tokens->embedding, tokens->embedding + tokens->vocab * c.input_size);
        } else {
            cache->ids.clear();
            cache->vocab = 0;
            cache->input.assign(x, x + TB * c.input_size);
        }
        cache->outputs.assign(L, {});
        cache->dropped.assign(dropout_masks.empty() ? 0 : L - 1, {});
        cache->dropout_masks.assign(dropout_masks.empty() ? 0 : L - 1, {});
        cache->cells.assign(L * D, {});
    }
    const T cell_clip = clip_or_inf<T>(c.cell_clip), proj_clip = clip_or_inf<T>(c.proj_clip);
    AlignedVector<T> outputs[2], dropped;  // inference: layers alternate between two buffers
    const T* input = tokens ? nullptr : cache ? cache->input.data() : x;
    // Token input: per direction, table (V,4H) = embedding W_ih^T + b_ih + b_hh, each token's
    // input projection made once.
    std::vector<AlignedVector<T>> tables(tokens ? D : 0);
    for (int64_t d = 0; d < static_cast<int64_t>(tables.size()); ++d) {
        const int64_t V = tokens->vocab, G = 4 * H, I = c.input_size;
        const CellTensors<const T> w = cell_tensors<const T>(params_.data(), cells_[d], zero_peepholes_.data());
        tables[d].resize(V * G);
        project_inputs(tables[d].data(), tokens->embedding, V, I, H, w);
    }
    for (int64_t layer = 0; layer < L; ++layer) {
        // (T,B,D*P). The cache keeps every layer's output but the last's, which is y itself;
        // backward reads it too only when projecting (for proj_clip), so then it keeps a copy.
        T* out;
        if (layer == L - 1) {
            out = y;
        } else if (cache) {
            cache->outputs[layer].resize(TB * DP);
            out = cache->outputs[layer].data();
        } else {
            outputs[layer % 2].resize(TB * DP);
            out = outputs[layer % 2].data();
        }
        const CellShape<T> shape{steps, B, c.layer_input_size(layer), H, P, c.proj_size > 0,
                                 false, cell_clip, proj_clip};
        for (int64_t d = 0; d < D; ++d) {
            const int64_t cell = layer * D + d;
            CellShape<T> sd = shape;
            sd.reverse = d == 1;
            const bool by_token = tokens && layer == 0;
            cell_forward<T>(out + d * P, DP, h_n + cell * B * P, c_n + cell * B * H,
                            cache ? &cache->cells[cell] : nullptr, input,
                            by_token ? tokens->ids : nullptr, by_token ? tables[d].data() : nullptr,
                            h0 ? h0 + cell * B * P : nullptr, c0 ? c0 + cell * B * H : nullptr,
                            lengths,
                            cell_tensors<const T>(params_.data(), cells_[cell], zero_peepholes_.data()),
                            sd);
        }
        input = out;
        if (layer < L - 1 && !dropout_masks.empty()) {
            const T* mask = dropout_masks[layer];
            T* next;
            if (cache) {
                cache->dropout_masks[layer].assign(mask, mask + TB * DP);
                cache->dropped[layer].resize(TB * DP);
                next = cache->dropped[layer].data();
            } else {
                dropped.resize(TB * DP);
                next = dropped.data();
            }
            for (int64_t k = 0; k < TB * DP; ++k) next[k] = out[k] * mask[k];
            input = next;
        }
    }
    if (cache && c.proj_size > 0) cache->outputs[L - 1].assign(y, y + TB * DP);
}

template <class T>
void Model<T>::backward(T* dx, T* dh0, T* dc0, const Cache<T>& cache, const T* dy,
                        const T* dh_n, const T* dc_n) {
    if (cache.model_id != id_)
        throw std::invalid_argument("cache: it was made by another model's forward");
    if (backward_running_.exchange(true))
        throw std::runtime_error("backward: another thread is running backward on this model; its gradients "
                                 "would be corrupted (run backward on one model from one thread at a time)");
    struct Release {
        std::atomic<bool>& flag;
        ~Release() { flag.store(false); }
    } release{backward_running_};
    blas_single_threaded();
    const Config& c = config_;
    const int64_t L = c.num_layers, D = c.directions(), H = c.hidden_size, P = c.output_size();
    const int64_t steps = cache.steps, B = cache.batch, TB = steps * B, DP = D * P;
    if (static_cast<int64_t>(cache.cells.size()) != L * D)
        throw std::invalid_argument("cache: expected " + std::to_string(L * D) + " cells, got " +
                                    std::to_string(cache.cells.size()));
    const int32_t* lengths = cache.lengths.empty() ? nullptr : cache.lengths.data();
    const T cell_clip = clip_or_inf<T>(c.cell_clip), proj_clip = clip_or_inf<T>(c.proj_clip);
    const bool projecting = c.proj_size > 0;

    const T* d_out = dy;             // (T,B,D*P) gradient of this layer's output
    AlignedVector<T> d_in, d_above;  // (T,B,I) gradient of this layer's input; the layer above's
    const bool tokens = !cache.ids.empty();
    const int64_t V = cache.vocab, G = 4 * H;
    AlignedVector<T> d_table(tokens ? V * G : 0);  // (V,4H) for token input, per direction in turn
    for (int64_t layer = L - 1; layer >= 0; --layer) {
        const int64_t I = c.layer_input_size(layer);
        const bool by_token = tokens && layer == 0;
        const T* input = layer == 0 ? cache.input.data()
                         : cache.dropped.empty() ? cache.outputs[layer - 1].data()
                                                 : cache.dropped[layer - 1].data();
        T* d_input;
        if (layer == 0) {
            d_input = dx;
        } else {
            d_in.resize(TB * I);
            d_input = d_in.data();
        }
        std::fill(d_input, d_input + (by_token ? V : TB) * I, T(0));
        const CellShape<T> shape{steps, B, I, H, P, c.proj_size > 0, false, cell_clip, proj_clip};
        for (int64_t d = 0; d < D; ++d) {
            const int64_t cell = layer * D + d;
            CellShape<T> sd = shape;
            sd.reverse = d == 1;
            const CellTensors<T> grad = cell_tensors<T>(grads_.data(), cells_[cell], static_cast<T*>(nullptr));
            const CellTensors<const T> w = cell_tensors<const T>(params_.data(), cells_[cell], zero_peepholes_.data());
            if (by_token) std::fill(d_table.begin(), d_table.end(), T(0));
            cell_backward<T>(d_input, dh0 + cell * B * P, dc0 + cell * B * H, grad, cache.cells[cell],
                             input, by_token ? cache.ids.data() : nullptr, d_table.data(), V,
                             projecting ? cache.outputs[layer].data() + d * P : nullptr, DP,
                             d_out + d * P, dh_n ? dh_n + cell * B * P : nullptr,
                             dc_n ? dc_n + cell * B * H : nullptr, lengths, w, sd, c.peepholes);
            if (by_token) {
                // forward was: table = embedding W_ih^T + b_ih + b_hh
                // so: dW_ih += d_table^T embedding; d_embedding += d_table W_ih
                const int threads = get_num_threads();
                gemm_parallel<T>(threads, true, false, G, I, V, T(1), d_table.data(), G, input, I, T(1),
                                 grad.weight_ih, I);
                gemm_parallel<T>(threads, false, false, V, I, G, T(1), d_table.data(), G, w.weight_ih, I, T(1),
                                 d_input, I);
            }
        }
        if (layer > 0) {
            if (!cache.dropout_masks.empty()) {  // forward was: dropped = out * mask
                const T* mask = cache.dropout_masks[layer - 1].data();
                for (int64_t k = 0; k < TB * I; ++k) d_in[k] *= mask[k];
            }
            std::swap(d_above, d_in);
            d_out = d_above.data();
        }
    }
}

template class Model<float>;
template class Model<double>;

}  // namespace lstmcpp
