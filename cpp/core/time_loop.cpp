#include "core/time_loop.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "cells/cells.h"
#include "cells/projection.h"
#include "core/blas.h"
#include "core/cpu_caches.h"
#include "core/scratch.h"
#include "core/team.h"
#include "kernels/kernels.h"

namespace lstmcpp {

namespace {

// Whether element b runs step t (lengths null: every element runs every step).
inline bool active(const int32_t* lengths, int64_t b, int64_t t) {
    return lengths == nullptr || t < lengths[b];
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
// How long the calling thread of a time loop that meets every step waits for its worker to start
// before it runs the loop alone: a spinning worker joins within a microsecond, a sleeping one
// wakes in 6-250 us on the Zen 4 VM, and one whose core NumPy's BLAS threads hold comes
// milliseconds later.
constexpr std::chrono::microseconds kWorkerGrace{250};
// From this batch size, a format with Matrix::kStepwiseInput projects each step's input in the step.
constexpr int64_t kStepwiseInputFromBatch = 32;
// From this batch size, one step of a format that packs (float) packs its weights even for that
// one step, when they fit in half of a core's L2 (read at run time); larger ones make two BLAS
// products on the team, x W_ih^T and h0 W_hh^T, then the cell. Both pack the weights: the BLAS
// a block at a time while it multiplies, we all of them (each thread its own copy of all its rows)
// before the kernel reads them, so ours only pays while the packed copy stays in L2. Measured on
// the Zen 4 (1 MiB of L2) against the BLAS, 256 streams of a pool: H128 0.87x the time (0.70x for
// 64 streams), H256 1.11x, H512 1.10x; a stream of 64 rows: H128 0.82x, H512 1.19x.
constexpr int64_t kOneStepPacksFromBatch = 32;

// Whether a thread that reads `bytes` of weights a step reads them backward every other step
// (GateProducts, kSweepRows): when they are more than half of its L2, read at run time.
// Measured on Zen 4 (1 MiB of L2 a core; its L3 gives a row-dot kernel 70-80 GB/s a core, its L2
// 85-90): 2 MiB of float32 rows a step 0.91x the time, 1 MiB 0.94x, 512 KiB 0.97x; streams of
// float32 H768 and H1024 0.85x and 0.87x, bf16 H512 (1 MiB a thread) 0.94-0.95x, float32 H512
// (2 MiB) 0.98-1.04x.
std::atomic<int64_t> g_sweep_from_bytes{-1};

bool sweeps_weights(int64_t bytes) {
    const int64_t from = g_sweep_from_bytes.load(std::memory_order_relaxed);
    return bytes > (from < 0 ? cache_sizes().l2 / 2 : from);
}

// Each thread alternates its own sweeps, across calls too, so that a stream's one-step calls
// alternate as a sequence's steps do. (The direction changes no result: each row's sums are
// the same either way.)
bool next_sweep_backward() {
    thread_local bool backward = false;
    backward = !backward;
    return backward;
}

// A thread's share of a time loop: whole rows of the batch (no barrier) when the cell needs them,
// or when every thread has rows_from rows (0: the weights do not allow it); else its hidden units
// of every row, meeting every step.
Share share_of(int64_t B, int64_t H, int64_t P, bool projecting, int64_t rows_from, int team, int me, bool whole_rows = false) {
    if (whole_rows || (rows_from > 0 && B >= rows_from * team)) return {true, split(B, team, me, 1), {0, H}, {0, P}};
    const Range units = split(H, team, me, 16);
    return {false, {0, B}, units, projecting ? split(P, team, me, 16) : units};
}

// out (cols,rows) = in (rows,cols)^T, in 32x32 blocks so both sides stream through the cache.
template <class T>
void transpose(T* out, const T* in, int64_t rows, int64_t cols) {
    for (int64_t r0 = 0; r0 < rows; r0 += 32)
        for (int64_t c0 = 0; c0 < cols; c0 += 32)
            for (int64_t r = r0; r < std::min(rows, r0 + 32); ++r)
                for (int64_t c = c0; c < std::min(cols, c0 + 32); ++c) out[c * rows + r] = in[r * cols + c];
}

// dst[rows, cols] = src[rows, cols]
template <class T>
void copy_block(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, Range rows, Range cols) {
    for (int64_t b = rows.begin; b < rows.end; ++b)
        std::copy(src + b * ld_src + cols.begin, src + b * ld_src + cols.end, dst + b * ld_dst + cols.begin);
}

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

}  // namespace

void set_sweep_from_bytes(int64_t bytes) { g_sweep_from_bytes.store(bytes); }

// z[cols] = b_ih[cols] + b_hh[cols] (either absent: zeros): where a row of gates starts.
template <class T, class Cell, class Matrix>
static void start_gates(T* z, const CellWeights<T, Cell, Matrix>& w, Range cols) {
    for (int64_t k = cols.begin; k < cols.end; ++k) z[k] = (w.bias_ih ? w.bias_ih[k] : T(0)) + (w.bias_hh ? w.bias_hh[k] : T(0));
}

template <class T, class Cell, class Matrix>
void project_inputs(T* out, const T* x, int64_t rows, const CellWeights<T, Cell, Matrix>& w) {
    const int64_t G = w.weight_ih.rows;
    // every row starts as the biases (tens of MB for a large batch): in pieces that whichever
    // thread is there takes (a worker whose core NumPy's BLAS holds is not waited for), each its
    // first row, then copies of it
    const int threads = get_num_threads();
    const int64_t pieces = rows * G >= (1 << 16) ? std::min<int64_t>(rows, threads) : 1;
    run_team_chunks(threads, pieces, [&](int64_t q) {
        const Range mine = split(rows, static_cast<int>(pieces), static_cast<int>(q), 1);
        if (mine.size() == 0) return;
        T* first = out + mine.begin * G;
        start_gates(first, w, Range{0, G});
        for (int64_t r = mine.begin + 1; r < mine.end; ++r) std::copy(first, first + G, out + r * G);
    });
    if (x) w.weight_ih.multiply_rows(out, x, rows, T(1));
}

// ---------------------------------------------------------------------------------------------
// forward

namespace {

// The rows of the batch each thread needs before a time loop's team splits the batch rather than
// the hidden units (0: never). Split, every thread reads all of a step's weights each step; split
// by hidden units, a share of them, but the team meets every step. Weights that fit in half of a
// core's L2 (read at run time) are read from each thread's own cache, which costs less than the
// meeting, so from one row a thread. Measured on a Zen 3 (512 KiB of L2) against splitting the
// units: float32 H128 B4 and B8 0.87x and 0.72x the time, bf16 H128 B4 0.75x, int8 H256 B2-B8
// 0.58-0.74x, codebook4 H256 B4 0.86x; B = 2 at H128 the same; where the weights did not fit
// (codebook4 H512 B8: 1.16x) the split stays where it was. Larger weights: from kRowsPerThread
// rows a thread for a format that packs, from Matrix::kSplitsBatchFrom for one that splits the
// batch as it is (int8).
template <class Matrix>
int64_t rows_to_split_from(bool pack, int64_t step_bytes) {
    return !(pack || Matrix::kSplitsBatchFrom > 0) ? 0
           : 2 * step_bytes <= cache_sizes().l2   ? 1
           : pack                                 ? kRowsPerThread
                                                  : Matrix::kSplitsBatchFrom;
}

// What a one-step call's timings are kept under (choose_step_team): its work, batch, format and cell.
template <class Matrix>
int64_t step_shape(int64_t macs, int64_t B, int gates, bool whole_rows) {
    return ((macs * 1021 + B) * 8 + Matrix::kMacsPerFloatMac) * 8 + gates + (whole_rows ? 4 : 0);
}

// One step that keeps no cache and meets nowhere inside it (a stream's step, a pool's chunk; not
// a projecting or whole-row cell, nor a batch whose step packs its weights): the time loop's step
// without the loop. Each thread makes its rows' (or units') gates, biases + x W_ih^T + h0 W_hh^T,
// and writes its part of y, h_n and c_n itself; every thread reads h0 and c0 (which h_n and c_n
// may be) from copies made first. The same operations in the same order as the loop's step, so
// the same bits; what goes is the loop's setting up (Zen 4, float32 H128, processes alternating:
// 4.28-4.42 against 4.54-4.63 us a step).
template <class T, class Cell, class Matrix>
void forward_one_step(T* y, int64_t ldy, T* h_n, T* c_n, const T* x, const T* h0, const T* c0,
                      const CellWeights<T, Cell, Matrix>& w, const CellShape<T>& s, int64_t macs, int64_t step_bytes) {
    constexpr int Gates = Cell::kGates;
    const int64_t B = s.batch, I = s.I, H = s.H, G = Gates * H;  // P = H: not projecting
    const Kernels<T>& K = kernels<T>();
    Scratch<T> scratch({B * G, B * H, B * H});
    T* z = scratch.take(B * G);
    T* h_prev = scratch.take(B * H);
    T* c_prev = scratch.take(B * H);
    if (h0) std::copy(h0, h0 + B * H, h_prev);
    else std::fill(h_prev, h_prev + B * H, T(0));
    if (c0) std::copy(c0, c0 + B * H, c_prev);
    else std::fill(c_prev, c_prev + B * H, T(0));
    const int64_t rows_from = rows_to_split_from<Matrix>(false, step_bytes);

    auto run = [&](const Share& my, int team) {
        if (my.rows.size() == 0) return;  // whole rows, more threads than rows: nothing of mine
        const Range br = my.rows, jr = my.units;
        const int64_t b0 = br.begin, rows = br.size();
        const GateProducts<T, Gates, Matrix> input(K, false, w.weight_ih, H, jr), recurrent(K, false, w.weight_hh, H, jr);
        const bool backward = sweeps_weights(my.by_rows || team == 1 ? step_bytes : step_bytes / team) && next_sweep_backward();
        for (int64_t b = br.begin; b < br.end; ++b)
            for (int64_t q = 0; q < Gates; ++q) start_gates(z + b * G, w, Range{q * H + jr.begin, q * H + jr.end});
        input.add(z + b0 * G, G, x + b0 * I, I, rows, backward);
        recurrent.add(z + b0 * G, G, h_prev + b0 * H, H, rows, backward);
        for (int64_t b = br.begin; b < br.end; ++b) {
            T* out = y + b * ldy;  // m = h: my units of this row's output, then of its next state
            w.cell.forward(K, z + b * G, c_n + b * H, out, c_prev + b * H, jr);
            std::copy(out + jr.begin, out + jr.end, h_n + b * H + jr.begin);
        }
    };
    int threads = threads_for_step(macs);
    StepTiming timing;  // its team or one thread, whichever has lately been faster (team.h)
    if (threads > 1 && !in_team()) threads = choose_step_team(step_shape<Matrix>(macs, B, Gates, false), threads, timing);
    run_team(threads, [&](int team, int me) {
        run(share_of(B, H, H, false, rows_from, team, me), team);
        // an optional worker that never joined: its share too
        if (me == 0 && team == 2 && worker_absent(std::chrono::microseconds(0))) run(share_of(B, H, H, false, rows_from, team, 1), 1);
    }, threads == 2);
    step_team_finished(timing);
}

}  // namespace

template <class T, class Cell, class Matrix>
void forward_through_time(T* y, int64_t ldy, T* h_n, T* c_n, CellCache<T>* cache,
                          const T* x, const int32_t* ids, const T* table, const T* h0, const T* c0,
                          const int32_t* lengths, const CellWeights<T, Cell, Matrix>& w, const CellShape<T>& s) {
    constexpr int Gates = Cell::kGates;
    const int64_t steps = s.steps, B = s.batch, I = s.I, H = s.H, P = s.P, G = Gates * H;
    const Kernels<T>& K = kernels<T>();

    // Inference buffers come from this calling thread's scratch when small (a streaming call
    // allocates nothing), else from the heap for this call (whose freed large blocks aligned.cpp
    // keeps for the next call). gates (T,B,G): first the input projection x W_ih^T + b_ih + b_hh
    // of every step at once (for token input, each thread gathers its columns step by step
    // instead), then activated in place step by step; the cache keeps it for backward.
    // One step (a streaming call): each thread projects the input onto its own rows inside the
    // step, so its rows of W_ih stay in its cache across calls as its rows of W_hh do. So does a
    // large batch in a format whose per-step product is as fast as its product of every row
    // (int8, and float32 on packed weights): each step's gates stay in cache between the two
    // products instead of coming back from memory (T x B x 4H floats, 26 MB at T 50, B 64, H 512),
    // and inference keeps one step's.
    // A cell that needs whole rows (layer norm, the Mogrifier) projects its input inside each step:
    // the Mogrifier's input is only known then, layer norm normalises each product on its own.
    const Mogrifier<T>& mog = w.mogrifier;
    constexpr bool kNormalizes = Cell::kLayerNorm;
    const bool whole_rows = kNormalizes || mog.rounds > 0;
    if (whole_rows && ids)
        throw std::invalid_argument("token input: a layer-normalised or Mogrifier cell takes the embedded input x");
    // the weights a step reads, with or without its input product
    auto step_weight_bytes = [&](bool with_input) {
        return w.weight_hh.bytes() + (with_input ? w.weight_ih.bytes() : 0) + (s.projecting ? w.weight_hr.bytes() : 0) +
               int64_t(sizeof(T)) * mog.weights();
    };
    // one step that meets nowhere inside it and packs nothing (a stream's step): no loop (its work
    // in multiply-adds counted as below)
    if constexpr (!kNormalizes) {
        if (steps == 1 && !cache && !ids && !whole_rows && !s.projecting &&
            !(Matrix::kPacks && (B >= kOneStepPacksFromBatch || packs_weights(B, steps, true)))) {
            forward_one_step(y, ldy, h_n, c_n, x, h0, c0, w, s, B * G * (P + I) / Matrix::kMacsPerFloatMac / 2,
                             step_weight_bytes(true));
            return;
        }
    }
    const bool one_step_batch = !whole_rows && steps == 1 && !ids && Matrix::kPacks && B >= kOneStepPacksFromBatch;
    const bool one_step_packs = one_step_batch && 2 * step_weight_bytes(true) <= cache_sizes().l2;
    const bool by_blas = one_step_batch && !one_step_packs;
    // (a format that packs does so only in a call that packs: the in-place kernels are slower)
    const bool stepwise_input = Matrix::kStepwiseInput && B >= kStepwiseInputFromBatch &&
                                (!Matrix::kPacks || packs_weights(B, steps, true));
    const bool fuse_input = !ids && !by_blas && (whole_rows || steps == 1 || stepwise_input);
    const int64_t gate_rows = fuse_input ? B : steps * B;
    // Layer norm's input product x W_ih^T is normalised on its own, so inference of more than
    // one step makes it for every step at once before the loop, as the LSTM's input projection
    // is (the Mogrifier's input is only known inside the step, and training keeps its cache's
    // layout): each step then reads only W_hh.
    const bool hoists_input = kNormalizes && mog.rounds == 0 && !cache && !ids && steps > 1;
    const bool input_in_step = fuse_input && !hoists_input;
    int64_t E = 0, R = mog.record_size();  // per row: the cell's kept values, the Mogrifier's record
    if constexpr (kNormalizes) E = Cell::extra_size(H);

    // a step's work in float32 multiply-adds, which sizes its team
    int64_t macs = B * (G * (P + (input_in_step ? I : 0)) + (s.projecting ? P * H : 0)) / Matrix::kMacsPerFloatMac +
                   B * mog.weights();
    // A one-step call (a stream's step) starts its team for that step alone, so it counts half its
    // work (measured on the Zen 4, 100 calls of one step: int8 H128, 65k multiply-adds a step,
    // 1.08x the time on two threads; float32 H96, 74k, 0.90x).
    if (steps == 1) macs /= 2;
    // A cell that needs whole rows splits the batch among its threads, but inference with fewer
    // rows than the threads its work is worth (a stream) splits every row's units instead, the team
    // meeting inside each step as well: after each Mogrifier round, once the layer-normalised
    // cell's products are made, and once its c is. Each thread then reads whole rows' statistics
    // and writes its own units, so no result depends on the split. The team is sized by the work
    // per meeting, a meeting inside the step counting half of the step's own (measured on the Zen
    // 4, float32 layer norm T200: H256 0.82x the time on two threads against one, int8 H256 1.15x,
    // H128 the same; so two threads from H256 in float32, one for int8 H256 and below).
    const int64_t inner_meetings = (kNormalizes ? 2 : 0) + mog.rounds;
    const int split_team = threads_for_step(macs * 2 / (2 + inner_meetings));
    const bool splits_rows = whole_rows && !cache && B < split_team;
    const bool rows_whole = whole_rows && !splits_rows;  // threads take whole rows
    const int64_t tmp_teams = splits_rows ? split_team : 1;  // a low-rank round's (B,q) for each thread
    Scratch<T> scratch({cache ? 0 : gate_rows * G, hoists_input ? steps * B * G : 0, 2 * B * P, 2 * B * H, s.projecting ? B * H : 0,
                        kNormalizes ? 2 * B * G : 0, cache ? 0 : B * E, cache ? 0 : B * R, tmp_teams * B * mog.rank});
    T* gates;
    if (cache) {
        cache->gates.resize(steps * B * G);
        cache->c_prev.resize(steps * B * H);
        cache->c.resize(steps * B * H);
        cache->h_prev.resize(steps * B * P);
        cache->m.resize(s.projecting ? steps * B * H : 0);
        cache->extra.resize(steps * B * E);
        cache->records.resize(steps * B * R);
        gates = cache->gates.data();
    } else {
        gates = scratch.take(gate_rows * G);
    }
    T* inputs = scratch.take(hoists_input ? steps * B * G : 0);  // (T,B,G) layer norm's x W_ih^T, hoisted
    if (hoists_input) w.weight_ih.multiply_rows(inputs, x, steps * B, T(0));
    T* z_of_step_0 = gates;  // where step t's gates are: z_of_step_0 + (each step its own ? t : 0) * B * G
    const bool gates_per_step = cache || !fuse_input;
    if (!ids && !fuse_input) project_inputs(gates, x, steps * B, w);
    if (by_blas && h0) w.weight_hh.multiply_rows(gates, h0, B, T(1));  // the step's recurrent product, whole

    // state (2,B,P) and cell (2,B,H), ping-pong between steps; m (B,H), the cell's output, when projecting
    T* state = scratch.take(2 * B * P);
    T* cell = scratch.take(2 * B * H);
    T* m_local = s.projecting ? scratch.take(B * H) : nullptr;
    T* products = scratch.take(kNormalizes ? 2 * B * G : 0);  // (B,2G) layer norm: a step's x W_ih^T, h W_hh^T
    T* extra_local = scratch.take(cache ? 0 : B * E);         // (B,E) layer norm's values of a step
    T* records_local = scratch.take(cache ? 0 : B * R);       // (B,R) the Mogrifier's rounds of a step
    T* mog_tmp = scratch.take(tmp_teams * B * mog.rank);      // (B,q) for each thread
    if (h0) std::copy(h0, h0 + B * P, state);
    else std::fill(state, state + B * P, T(0));
    if (c0) std::copy(c0, c0 + B * H, cell);
    else std::fill(cell, cell + B * H, T(0));

    // the rows a thread needs before the team splits the batch (rows_to_split_from)
    const bool pack = Matrix::kPacks && !by_blas && (one_step_packs || packs_weights(B, steps, true));
    const int64_t step_bytes = step_weight_bytes(input_in_step);
    const int64_t rows_from = rows_to_split_from<Matrix>(pack, step_bytes);
    // Steps first .. steps for one thread's share of a team: returns where it stopped, steps or,
    // when the team is starved (StepBarrier), the step after the barrier that said so. A team of
    // two that meets does not start without its worker: when it has not joined within
    // kWorkerGrace (its core held elsewhere: worker_absent), the calling thread returns kAlone
    // before computing anything, and runs the loop alone.
    constexpr int64_t kAlone = -1;
    StepBarrier barrier;
    auto run_steps = [&](const Share& my, int team, int me, int64_t first) -> int64_t {
        if (my.rows.size() == 0) return steps;  // whole rows, more threads than rows: nothing of mine
        const Range br = my.rows, jr = my.units, pr = my.outputs;  // my batch rows, hidden units, outputs
        const int64_t b0 = br.begin, rows = br.size();
        const bool meets = team > 1 && !my.by_rows;  // a barrier each step (by batch rows: none)
        if (meets && me == 0 && team == 2 && (steps - first > 1 || s.projecting || splits_rows) && worker_absent(kWorkerGrace))
            return kAlone;
        const GateProducts<T, Gates, Matrix> recurrent(K, pack, w.weight_hh, H, jr);
        const GateProducts<T, Gates, Matrix> input = input_in_step ? GateProducts<T, Gates, Matrix>(K, pack, w.weight_ih, H, jr)
                                                                 : GateProducts<T, Gates, Matrix>();
        using Product = typename Matrix::Product;
        const Product projection = s.projecting ? w.weight_hr.step_product(K, pack, pr) : Product();
        StepBarrier::Waits waits;
        // a meeting inside a step (split rows of a whole-row cell): a starved team learns so at the
        // step's own meeting, which the decision, once made, stays for
        auto meet = [&] {
            if (meets) barrier.wait(team, waits, false);
        };
        const bool sweeps = sweeps_weights(my.by_rows || team == 1 ? step_bytes : step_bytes / team);

        for (int64_t step = first; step < steps; ++step) {
            const bool backward = sweeps && next_sweep_backward();
            const int64_t t = s.reverse ? steps - 1 - step : step;
            T* h_cur = state + (step % 2) * B * P;  // ping-pong: step reads one half, writes the other
            T* h_next = state + (1 - step % 2) * B * P;
            T* c_cur = cell + (step % 2) * B * H;
            T* c_next = cell + (1 - step % 2) * B * H;
            T* z = z_of_step_0 + (gates_per_step ? t : 0) * B * G;  // (B,G) this step's gates
            T* extra = cache ? cache->extra.data() + t * B * E : extra_local;  // (B,E)
            // what the gates read: x_t and h_prev, or (the Mogrifier) their last rounds
            const T* x_in = x ? x + (t * B + b0) * I : nullptr;
            int64_t ld_x_in = I;
            const T* h_in = h_cur + b0 * P;
            int64_t ld_h_in = P;
            if (mog.rounds > 0) {
                T* record = (cache ? cache->records.data() + t * B * R : records_local) + b0 * R;
                const int parts = splits_rows ? team : 1;  // of each round's outputs
                mog.forward(K, x_in, I, h_in, P, rows, record, R, mog_tmp + (splits_rows ? me * B : b0) * mog.rank, parts,
                            splits_rows ? me : 0, meet);
                const auto last = mog.last(record, R, h_in, P);
                x_in = last.x, ld_x_in = last.ldx, h_in = last.h, ld_h_in = last.ldh;
            }
            if constexpr (kNormalizes) {  // z = LN(x W_ih^T)*g_ih + LN(h W_hh^T)*g_hh + b, row by row
                T* a = products + b0 * 2 * G;  // (rows, 2G): a then r of each row (a made already: hoisted)
                for (int64_t b = 0; b < rows; ++b)
                    for (int64_t q = hoists_input ? Gates : 0; q < 2 * Gates; ++q)
                        std::fill(a + b * 2 * G + q * H + jr.begin, a + b * 2 * G + q * H + jr.end, T(0));
                if (input_in_step) input.add(a, 2 * G, x_in, ld_x_in, rows, backward);
                recurrent.add(a + G, 2 * G, h_in, ld_h_in, rows, backward);
                meet();
                for (int64_t b = br.begin; b < br.end; ++b) {
                    const T* a_row = hoists_input ? inputs + (t * B + b) * G : products + b * 2 * G;
                    w.cell.combine(z + b * G, a_row, products + b * 2 * G + G, w.bias_ih, w.bias_hh, extra + b * E, jr);
                }
            } else if (fuse_input) {  // my part of this step's input projection: biases + x_t W_ih[my units]^T
                for (int64_t b = br.begin; b < br.end; ++b)
                    for (int64_t q = 0; q < Gates; ++q) start_gates(z + b * G, w, Range{q * H + jr.begin, q * H + jr.end});
                input.add(z + b0 * G, G, x_in, ld_x_in, rows, backward);
            }
            if (ids) {  // my part of this step's input projections, by token
                for (int64_t b = br.begin; b < br.end; ++b)
                    for (int64_t q = 0; q < Gates; ++q) {
                        const T* row = table + ids[t * B + b] * G + q * H;
                        std::copy(row + jr.begin, row + jr.end, z + b * G + q * H + jr.begin);
                    }
            }
            if (cache) {
                copy_block(cache->h_prev.data() + t * B * P, P, h_cur, P, br, pr);
                copy_block(cache->c_prev.data() + t * B * H, H, c_cur, H, br, jr);
            }
            // z[my rows, my units of each gate] += h_prev[my rows] W_hh[my units]^T (made already: by_blas,
            // or with the input's by a layer-normalised cell)
            if (!by_blas && !kNormalizes) recurrent.add(z + b0 * G, G, h_in, ld_h_in, rows, backward);
            // m (B,H): straight into the next state when not projecting
            T* m = s.projecting ? (cache ? cache->m.data() + t * B * H : m_local) : h_next;
            for (int64_t b = br.begin; b < br.end; ++b) {
                if (active(lengths, b, t)) {
                    if constexpr (kNormalizes) w.cell.forward(K, z + b * G, c_next + b * H, m + b * H, c_cur + b * H, jr, extra + b * E, meet);
                    else w.cell.forward(K, z + b * G, c_next + b * H, m + b * H, c_cur + b * H, jr);
                } else {  // past this element's length: the state carries over unchanged
                    if (cache) std::fill(extra + b * E, extra + (b + 1) * E, T(0));  // (backward reads it times zero)
                    std::copy(c_cur + b * H + jr.begin, c_cur + b * H + jr.end, c_next + b * H + jr.begin);
                    if (s.projecting) std::fill(m + b * H + jr.begin, m + b * H + jr.end, T(0));
                    else std::copy(h_cur + b * P + jr.begin, h_cur + b * P + jr.end, h_next + b * P + jr.begin);
                }
            }
            if (cache) copy_block(cache->c.data() + t * B * H, H, c_next, H, br, jr);

            if (s.projecting) {
                if (meets) barrier.wait(team, waits);
                // h_next[my rows, my outputs] = m[my rows] W_hr[my outputs]^T, clipped
                projection.apply(h_next + b0 * P, P, m + b0 * H, H, rows, T(0));
                for (int64_t b = br.begin; b < br.end; ++b) {
                    T* h = h_next + b * P;
                    if (active(lengths, b, t)) clip_projection(h, pr, s.proj_clip);
                    else std::copy(h_cur + b * P + pr.begin, h_cur + b * P + pr.end, h + pr.begin);
                }
            }
            for (int64_t b = br.begin; b < br.end; ++b) {
                T* out = y + (t * B + b) * ldy;
                if (active(lengths, b, t)) std::copy(h_next + b * P + pr.begin, h_next + b * P + pr.end, out + pr.begin);
                else std::fill(out + pr.begin, out + pr.end, T(0));
            }
            // (after the last step the team's closing barrier is the meeting: one fewer, which a
            // one-step call, a stream's step, pays in full)
            if (meets && step + 1 < steps && barrier.wait(team, waits)) return step + 1;
        }
        return steps;
    };
    // the final state, in the half of the ping-pong the last step wrote
    auto copy_final = [&](const Share& my) {
        copy_block(h_n, P, state + (steps % 2) * B * P, P, my.rows, my.outputs);
        copy_block(c_n, H, cell + (steps % 2) * B * H, H, my.rows, my.units);
    };

    int threads = splits_rows ? split_team
                  : rows_whole ? static_cast<int>(std::min<int64_t>(threads_for_step(macs), B))
                               : threads_for_step(macs);
    // a stream's step takes its team or one thread, whichever has lately been faster (team.h)
    StepTiming timing;
    if (steps == 1 && !cache && threads > 1 && !in_team()) {
        threads = choose_step_team(step_shape<Matrix>(macs, B, Gates, whole_rows), threads, timing);
    }
    // A team of two is optional (run_team): its worker may never join, and the calling thread then
    // does the worker's share too: after its own where they never meet (batch rows, or a single
    // step with no meeting inside it), else the whole loop alone (kAlone).
    run_team(threads, [&](int team, int me) {
        const Share my = share_of(B, H, P, s.projecting, rows_from, team, me, rows_whole);
        const int64_t stopped = run_steps(my, team, me, 0);
        if (stopped == steps) {
            copy_final(my);
            if (me == 0 && team == 2 && worker_absent(std::chrono::microseconds(0))) {  // (no meeting: rows, or one step)
                const Share theirs = share_of(B, H, P, s.projecting, rows_from, team, 1, rows_whole);
                run_steps(theirs, 1, 0, 0);
                copy_final(theirs);
            }
        } else if (me == 0) {  // starved: this thread finishes the call alone (the same results:
            const Share all = share_of(B, H, P, s.projecting, rows_from, 1, 0, rows_whole);  // no sum depends on the split)
            count_starved_call();
            note_team_starved();
            run_steps(all, 1, 0, stopped == kAlone ? 0 : stopped);
            copy_final(all);
            barrier.finished();
        } else {
            barrier.sleep_until_finished();
        }
    }, threads == 2);
    step_team_finished(timing);
}

// ---------------------------------------------------------------------------------------------
// backward

template <class T, class Cell>
void backward_through_time(T* dx, T* dh0, T* dc0, const CellGradients<T>& grad,
                           const CellCache<T>& cache, const T* x, const int32_t* ids, T* d_table,
                           int64_t vocab, const T* y, int64_t ldy, const T* dy,
                           const T* dh_n, const T* dc_n, const int32_t* lengths,
                           const CellWeights<T, Cell>& w, const CellShape<T>& s) {
    constexpr int Gates = Cell::kGates;
    const int64_t steps = s.steps, B = s.batch, I = s.I, H = s.H, P = s.P, G = Gates * H;
    const int64_t TB = steps * B;
    const Kernels<T>& K = kernels<T>();

    // The per-step products: each thread's columns of W_hh and W_hr packed once per call when the
    // batch is worth it. Else, for more than a few steps, W_hh^T (P,G) and W_hr^T (H,P) are made
    // once per call, so each step's products become rows dotted with rows, the faster small-batch
    // form, each thread's rows in its cache; for a few steps the kernels read W_hh and W_hr as they are.
    const Mogrifier<T>& mog = w.mogrifier;
    constexpr bool kNormalizes = Cell::kLayerNorm;
    const bool whole_rows = kNormalizes || mog.rounds > 0;
    if (whole_rows && ids)
        throw std::invalid_argument("token input: a layer-normalised or Mogrifier cell takes the embedded input x");
    const bool pack = packs_weights(B, steps, false);
    const bool transposed = !pack && steps >= 8;
    AlignedVector<T> w_hh_t(transposed ? P * G : 0), w_hr_t(transposed && s.projecting ? H * P : 0);
    if (transposed) {
        transpose(w_hh_t.data(), w.weight_hh.data, G, P);
        if (s.projecting) transpose(w_hr_t.data(), w.weight_hr.data, P, H);
    }
    const DenseMatrix<T> hh_t{w_hh_t.data(), P, G}, hr_t{w_hr_t.data(), H, P};
    AlignedVector<T> dz(TB * G);                         // (T,B,G) gradient of the pre-activations
    AlignedVector<T> dh_raw(s.projecting ? TB * P : 0);  // (T,B,P) gradient of h before proj_clip
    AlignedVector<T> dstate(2 * B * P), dcell(2 * B * H), dm(B * H);  // ping-pong, and (B,H)
    // Layer norm: per row, the gradients of the two products, da (G) and dr (G), and du (H) (the
    // cell's d_extra), which the products read instead of dz. The Mogrifier: per row, its rounds' dp.
    int64_t E = 0, DE = 0;
    if constexpr (kNormalizes) E = Cell::extra_size(H), DE = Cell::d_extra_size(H);
    const int64_t R = mog.record_size(), RD = R / 2;
    AlignedVector<T> d_extra(TB * DE), d_records(TB * RD);
    const T* d_input_rows = kNormalizes ? d_extra.data() : dz.data();  // (T,B,*) what multiplies W_ih
    const T* d_recurrent_rows = kNormalizes ? d_extra.data() + G : dz.data();  // and W_hh
    const int64_t ld_d = kNormalizes ? DE : G;
    if (dh_n) std::copy(dh_n, dh_n + B * P, dstate.begin());
    else std::fill(dstate.begin(), dstate.begin() + B * P, T(0));
    if (dc_n) std::copy(dc_n, dc_n + B * H, dcell.begin());
    else std::fill(dcell.begin(), dcell.begin() + B * H, T(0));

    const int64_t macs = B * (G * P + (s.projecting ? P * H : 0));
    StepBarrier barrier;
    const int threads_in_loop = whole_rows ? static_cast<int>(std::min<int64_t>(threads_for_step(macs), B)) : threads_for_step(macs);
    run_team(threads_in_loop, [&](int team, int me) {
        const Share my = share_of(B, H, P, s.projecting, pack ? kRowsPerThread : 0, team, me, whole_rows);
        if (my.rows.size() == 0) return;  // whole rows, more threads than rows: nothing of mine
        StepBarrier::Waits waits;  // (training meets at full strength: large steps, no fallback)
        const Range br = my.rows, jr = my.units, pr = my.outputs;  // my batch rows, hidden units, outputs
        const int64_t b0 = br.begin, rows = br.size();
        // forward was: z += h_prev W_hh^T   so: dh_prev[:, my outputs] = dz W_hh[:, my outputs]
        const StepProduct<T> recurrent = transposed ? hh_t.step_product(K, false, pr)
                                                    : w.weight_hh.step_product_transposed(K, pack, pr);
        // forward was: h_raw = m W_hr^T   so: dm[:, my units] = dh_raw W_hr[:, my units]
        const StepProduct<T> projection = !s.projecting ? StepProduct<T>()
                                          : transposed  ? hr_t.step_product(K, false, jr)
                                                        : w.weight_hr.step_product_transposed(K, pack, jr);
        // the Mogrifier: dx_hat = d_input W_ih (the gradient of the last x), and its rounds' work
        const StepProduct<T> input_t = mog.rounds > 0 ? w.weight_ih.step_product_transposed(K, pack, Range{0, I}) : StepProduct<T>();
        AlignedVector<T> dx_hat(mog.rounds > 0 ? rows * I : 0), mog_work(mog.rounds > 0 ? rows * (I + P + RD + mog.rank) : 0);
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
                    clip_projection_backward(dh_raw.data() + (t * B + b) * P, y + (t * B + b) * ldy, dh_b, dy_b, on, pr,
                                             s.proj_clip);
                } else {
                    T* d = dm.data() + b * H;
                    for (int64_t p = pr.begin; p < pr.end; ++p) d[p] = on ? dh_b[p] + dy_b[p] : T(0);
                }
            }
            if (s.projecting) {
                if (!my.by_rows) barrier.wait(team, waits, false);
                projection.apply(dm.data() + b0 * H, H, dh_raw.data() + (t * B + b0) * P, P, rows, T(0));
            }
            for (int64_t b = br.begin; b < br.end; ++b) {
                if (active(lengths, b, t)) {
                    const int64_t row = t * B + b;
                    if constexpr (kNormalizes)
                        w.cell.backward(K, dz_t + b * G, dc_next + b * H, gates_t + b * G, cache.c_prev.data() + row * H,
                                        cache.c.data() + row * H, dm.data() + b * H, dc_cur + b * H, jr,
                                        cache.extra.data() + row * E, d_extra.data() + row * DE);
                    else
                        w.cell.backward(K, dz_t + b * G, dc_next + b * H, gates_t + b * G, cache.c_prev.data() + row * H,
                                        cache.c.data() + row * H, dm.data() + b * H, dc_cur + b * H, jr);
                } else {  // the step did not run: no gate gradient, the cell gradient passes through
                    for (int64_t q = 0; q < Gates; ++q)
                        std::fill(dz_t + b * G + q * H + jr.begin, dz_t + b * G + q * H + jr.end, T(0));
                    std::fill(d_extra.data() + (t * B + b) * DE, d_extra.data() + (t * B + b + 1) * DE, T(0));
                    std::copy(dc_cur + b * H + jr.begin, dc_cur + b * H + jr.end, dc_next + b * H + jr.begin);
                }
            }
            if (!my.by_rows) barrier.wait(team, waits, false);
            recurrent.apply(dh_next + b0 * P, P, d_recurrent_rows + (t * B + b0) * ld_d, ld_d, rows, T(0));
            if (mog.rounds > 0) {  // back through the rounds: dx_t (added into dx) and dh_prev (into dh_next)
                const int64_t row0 = t * B + b0;
                input_t.apply(dx_hat.data(), I, d_input_rows + row0 * ld_d, ld_d, rows, T(0));
                mog.backward(K, x + row0 * I, I, cache.h_prev.data() + row0 * P, P, cache.records.data() + row0 * R, R,
                             dx_hat.data(), I, dh_next + b0 * P, P, dx + row0 * I, I, dh_next + b0 * P, P,
                             d_records.data() + row0 * RD, RD, rows, mog_work.data());
            }
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
        // forward was: z = x_in W_ih^T + h_in W_hh^T + b_ih + b_hh, x_in = x and h_in = h_prev but
        // for the Mogrifier (its last rounds; it made dx in the loop) and layer norm (which
        // normalised the two products: d_input_rows and d_recurrent_rows are theirs)
        const T* x_in = mog.rounds > 0 ? cache.records.data() + mog.offset(mog.last_x()) : x;
        if (mog.rounds == 0)
            gemm_parallel<T>(threads, false, false, TB, I, G, T(1), d_input_rows, ld_d, w.weight_ih.data, I, T(1), dx, I);
        gemm_parallel<T>(threads, true, false, G, I, TB, T(1), d_input_rows, ld_d, x_in, mog.rounds > 0 ? R : I, T(1),
                         grad.weight_ih, I);
    }
    const bool h_mogrified = mog.rounds > 0 && mog.last_h() > 0;
    gemm_parallel<T>(threads, true, false, G, P, TB, T(1), d_recurrent_rows, ld_d,
                     h_mogrified ? cache.records.data() + mog.offset(mog.last_h()) : cache.h_prev.data(),
                     h_mogrified ? R : P, T(1), grad.weight_hh, P);
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
    if constexpr (kNormalizes)
        w.cell.add_gradients(dz.data(), cache.c_prev.data(), cache.c.data(), TB, cache.extra.data(), d_extra.data());
    else
        w.cell.add_gradients(dz.data(), cache.c_prev.data(), cache.c.data(), TB);
    if (mog.rounds > 0)
        mog.add_gradients(x, I, cache.h_prev.data(), P, cache.records.data(), R, d_records.data(), RD, TB, threads);
}

#define LSTMCPP_INSTANTIATE_FORWARD(T, Cell, Matrix)                                                              \
    template void project_inputs<T, Cell, Matrix>(T*, const T*, int64_t, const CellWeights<T, Cell, Matrix>&);     \
    template void forward_through_time<T, Cell, Matrix>(T*, int64_t, T*, T*, CellCache<T>*, const T*,              \
                                                        const int32_t*, const T*, const T*, const T*,              \
                                                        const int32_t*, const CellWeights<T, Cell, Matrix>&,       \
                                                        const CellShape<T>&);
#define LSTMCPP_INSTANTIATE_BACKWARD(T, Cell)                                                                      \
    template void backward_through_time<T, Cell>(T*, T*, T*, const CellGradients<T>&, const CellCache<T>&,     \
                                                 const T*, const int32_t*, T*, int64_t, const T*, int64_t,      \
                                                 const T*, const T*, const T*, const int32_t*,                  \
                                                 const CellWeights<T, Cell>&, const CellShape<T>&);

// every cell type (cells/cells.h) over the dense weights, forward and backward, and over the
// quantized formats, forward (inference)
#define LSTMCPP_INSTANTIATE_DENSE(Cell)                                    \
    LSTMCPP_INSTANTIATE_FORWARD(float, Cell<float>, DenseMatrix<float>)   \
    LSTMCPP_INSTANTIATE_FORWARD(double, Cell<double>, DenseMatrix<double>) \
    LSTMCPP_INSTANTIATE_BACKWARD(float, Cell<float>)                      \
    LSTMCPP_INSTANTIATE_BACKWARD(double, Cell<double>)
#define LSTMCPP_INSTANTIATE_QUANTIZED(Cell)                                \
    LSTMCPP_INSTANTIATE_FORWARD(float, Cell<float>, Int8Matrix)           \
    LSTMCPP_INSTANTIATE_FORWARD(float, Cell<float>, Bf16Matrix)           \
    LSTMCPP_INSTANTIATE_FORWARD(float, Cell<float>, CodebookMatrix)

template <class T>
using LayerNormLstmCell = LayerNormCell<T, LstmCell<T>>;
template <class T>
using LayerNormCifgCell = LayerNormCell<T, CifgCell<T>>;
LSTMCPP_INSTANTIATE_DENSE(LstmCell)
LSTMCPP_INSTANTIATE_DENSE(CifgCell)
LSTMCPP_INSTANTIATE_DENSE(LayerNormLstmCell)
LSTMCPP_INSTANTIATE_DENSE(LayerNormCifgCell)
LSTMCPP_INSTANTIATE_QUANTIZED(LstmCell)
LSTMCPP_INSTANTIATE_QUANTIZED(CifgCell)
LSTMCPP_INSTANTIATE_QUANTIZED(LayerNormLstmCell)
LSTMCPP_INSTANTIATE_QUANTIZED(LayerNormCifgCell)

}  // namespace lstmcpp
