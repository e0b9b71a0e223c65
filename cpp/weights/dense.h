// The dense weight format: a float32 (or float64) matrix W (N,K), row-major, as the model's
// parameters hold it. Each product the time loop runs goes through here:
//   - multiply_rows: every row of an input at once, out (M,N) = x (M,K) W^T on the whole team
//     (the input projection of all steps, token input's table);
//   - step_product: one thread's rows of W applied every step, read in place by the small-batch
//     kernels or packed once per call for the outer-product kernel;
//   - step_product_transposed: the same through W itself, C (+)= A (M,N) W (backward's products).
// A quantized format (bf16, int8, codebook) is another type with multiply_rows and step_product.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/aligned.h"
#include "core/blas.h"
#include "core/scratch.h"
#include "core/team.h"
#include "kernels/kernels.h"

namespace lstmcpp {

// Testing switch: the fewest rows (steps x batch) for which a call's per-step products pack
// their weights (default 128); 1 packs in every call that can, a huge value in none.
void set_pack_min_rows(int64_t rows);
// Whether a call's per-step products pack their weights (once per call, per thread): when the
// call has at least set_pack_min_rows() rows of steps x batch to spread the packing over.
// Forward's in-place kernels stay faster for a batch of one.
bool packs_weights(int64_t batch, int64_t steps, bool forward);

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

// Packs columns [0, N) of B = W (K,N) (row stride ld) for gemm_packed, as Kernels::pack_rows
// does for B = W^T: block n of `width` columns holds K rows of `width` values, B(k, n*width + r)
// at [(n*K + k)*width + r], zero past column N. (Backward's products: rows copied in pieces.)
template <class T>
void pack_columns(T* packed, const T* W, int64_t ld, int64_t K, int64_t N, int64_t width) {
    for (int64_t n0 = 0; n0 < N; n0 += width) {
        T* block = packed + n0 * K;
        const int64_t w = N - n0 < width ? N - n0 : width;
        for (int64_t k = 0; k < K; ++k) {
            std::copy(W + k * ld + n0, W + k * ld + n0 + w, block + k * width);
            std::fill(block + k * width + w, block + (k + 1) * width, T(0));
        }
    }
}

// A packed copy's memory: one of this thread's blocks, each kept when released and grown to the
// largest copy it has held, so the products of a call that packs (one batched step of a pool's
// chunk, say) allocate nothing once the thread has seen their sizes. Taken and released on the
// thread that uses it (the time loops make their products on the thread that runs them).
template <class T>
class PackedBlock {
public:
    PackedBlock() = default;
    explicit PackedBlock(int64_t size) {
        std::vector<Slot>& mine = slots();
        auto free = std::find_if(mine.begin(), mine.end(), [](const Slot& slot) { return !slot.used; });
        if (free == mine.end()) free = mine.emplace(mine.end());
        slot_ = static_cast<int>(free - mine.begin());
        if (static_cast<int64_t>(free->block.size()) < size) free->block.resize(size);
        free->used = true;
        data_ = free->block.data();
    }
    PackedBlock(PackedBlock&& other) noexcept : data_(other.data_), slot_(other.slot_) { other.forget(); }
    PackedBlock& operator=(PackedBlock&& other) noexcept {
        if (this != &other) {
            release();
            data_ = other.data_;
            slot_ = other.slot_;
            other.forget();
        }
        return *this;
    }
    PackedBlock(const PackedBlock&) = delete;
    PackedBlock& operator=(const PackedBlock&) = delete;
    ~PackedBlock() { release(); }

    T* data() const { return data_; }
    bool empty() const { return data_ == nullptr; }

private:
    struct Slot {
        AlignedVector<T> block;
        bool used = false;
    };
    static std::vector<Slot>& slots() {
        thread_local std::vector<Slot> mine;
        return mine;
    }
    void forget() {
        data_ = nullptr;
        slot_ = -1;
    }
    void release() {
        if (slot_ >= 0) slots()[slot_].used = false;
        forget();
    }

    T* data_ = nullptr;
    int slot_ = -1;
};

// This thread's packed copies of the current PackingCall (at most kEntries at a time: a deeper
// model's later products pack into blocks of their own, as outside a call).
template <class T>
class PackedCopies {
public:
    // Where the copy of (W, ldw, depth, cols, as rows or columns) of `size` values lives, and
    // whether it still has to be made; null when every entry already holds one of this call.
    static std::pair<T*, bool> find(uint64_t call, const T* W, int64_t ldw, int64_t depth, Range cols, bool rows, int64_t size) {
        Entry* free = nullptr;
        for (Entry& e : entries()) {
            if (e.call == call && e.W == W && e.ldw == ldw && e.depth == depth && e.cols.begin == cols.begin &&
                e.cols.end == cols.end && e.rows == rows)
                return {e.block.data(), false};
            if (!free && e.call != call) free = &e;
        }
        if (!free) return {nullptr, false};
        free->call = call, free->W = W, free->ldw = ldw, free->depth = depth, free->cols = cols, free->rows = rows;
        if (static_cast<int64_t>(free->block.size()) < size) free->block.resize(size);
        return {free->block.data(), true};
    }

private:
    static constexpr int kEntries = 32;
    struct Entry {
        uint64_t call = 0;
        const T* W = nullptr;
        int64_t ldw = 0, depth = 0;
        Range cols{0, 0};
        bool rows = false;
        AlignedVector<T> block;
    };
    static std::array<Entry, kEntries>& entries() {
        thread_local std::array<Entry, kEntries> mine;
        return mine;
    }
};

// One thread's columns `cols` of a per-step product's right-hand side B (depth,N), applied every
// step as C[:, cols] (+)= A B[:, cols]. B is W^T when columns_are_rows (forward's products: the
// rows of W (N,depth) are B's columns), else W (depth,N) itself (backward's). When `pack`, the
// columns are packed once, into this thread's own memory, for K.gemm_packed; otherwise the
// small-batch kernels read W in place (a packed copy would not pay for itself).
template <class T>
class StepProduct {
public:
    StepProduct() = default;  // no columns: apply does nothing
    StepProduct(const Kernels<T>& K, bool pack, const T* W, int64_t ldw, bool columns_are_rows,
                int64_t depth, Range cols)
        : K_(&K), W_(W), ldw_(ldw), columns_are_rows_(columns_are_rows), depth_(depth), cols_(cols) {
        if (pack && cols.size() > 0) make_packed();
    }

    // A step's left-hand side as the products read it: a weight format whose products need the
    // activations in another form (int8) makes it once here for all the products that share them.
    struct Prepared {
        const T* A;
        int64_t lda;
    };
    static Prepared prepare(const Kernels<T>&, const T* A, int64_t lda, int64_t /*M*/, int64_t /*depth*/) {
        return {A, lda};
    }

    // C[:, cols] = beta*C[:, cols] + A (M,depth) B[:, cols]; C points at column 0.
    void apply(T* C, int64_t ldc, const T* A, int64_t lda, int64_t M, T beta) const {
        apply(C, ldc, Prepared{A, lda}, M, beta);
    }
    void apply(T* C, int64_t ldc, const Prepared& a, int64_t M, T beta) const {
        apply(C, ldc, a, M, beta, Range{0, cols_.size()});
    }

    // The same for the part [part.begin, part.end) of its columns (counted from its first; a packed
    // product's parts start at a multiple of the panel width).
    void apply(T* C, int64_t ldc, const Prepared& a, int64_t M, T beta, Range part) const {
        if (part.size() <= 0) return;
        const int64_t first = cols_.begin + part.begin;
        T* c = C + first;
        if (packed_data_)
            K_->gemm_packed(c, ldc, a.A, a.lda, packed_data_ + part.begin * depth_, M, part.size(), depth_, beta);
        else if (columns_are_rows_)
            step_gemm_nt(*K_, c, ldc, a.A, a.lda, W_ + first * ldw_, ldw_, M, part.size(), depth_, beta);
        else
            step_gemm_nn(*K_, c, ldc, a.A, a.lda, W_ + first, ldw_, M, part.size(), depth_, beta);
    }
    int64_t size() const { return cols_.size(); }

private:
    // (out of line: a stream's step makes eight products that do not pack, each in a few cycles)
    [[gnu::noinline]] void make_packed() {
        const int64_t width = K_->panel_width, size = (cols_.size() + width - 1) / width * width * depth_;
        T* copy = nullptr;
        bool make = true;
        if (const uint64_t call = PackingCall::current())
            std::tie(copy, make) = PackedCopies<T>::find(call, W_, ldw_, depth_, cols_, columns_are_rows_, size);
        if (!copy) {
            packed_ = PackedBlock<T>(size);
            copy = packed_.data();
            make = true;
        }
        packed_data_ = copy;
        if (!make) return;
        if (columns_are_rows_) K_->pack_rows(copy, W_ + cols_.begin * ldw_, ldw_, depth_, cols_.size());
        else pack_columns(copy, W_ + cols_.begin, ldw_, depth_, cols_.size(), width);
    }

    const Kernels<T>* K_ = nullptr;
    const T* W_ = nullptr;
    int64_t ldw_ = 0;
    bool columns_are_rows_ = true;
    int64_t depth_ = 0;
    Range cols_{0, 0};
    PackedBlock<T> packed_;         // the packed copy's memory when this product owns it
    const T* packed_data_ = nullptr;  // the packed copy (its own, or the call's: PackedCopies), or null
};

template <class T>
struct DenseMatrix {
    using Product = StepProduct<T>;
    // Large batches give each thread its own packed copy of all the rows, and split the batch.
    static constexpr bool kPacks = true;
    // A large batch whose call packs projects its input step by step too, on the packed kernel
    // with W_ih packed beside W_hh, instead of one BLAS product for every step before the loop:
    // that product wrote T x B x 4H gates (26 MB at T 50, B 64, H 512) to memory, each filled with
    // the biases first, for the steps to read back. Measured on the Zen 4 against it, interleaved:
    // B64 T50 H512 0.91-0.99x the time, B32 0.89-0.97x, B128 T25 0.88-0.99x, B64 and B32 at
    // H256 0.82-0.93x; training (B32 T100 H256, B64 T50 H512) 0.97-1.02x.
    static constexpr bool kStepwiseInput = true;
    // How many of this format's multiply-adds cost one of float32's, to size a step's team.
    static constexpr int64_t kMacsPerFloatMac = 1;
    static constexpr int64_t kSplitsBatchFrom = 0;  // (it packs instead)
    const T* data = nullptr;  // (N,K) row-major; null when the model has no such matrix
    int64_t rows = 0;         // N
    int64_t cols = 0;         // K

    int64_t bytes() const { return rows * cols * static_cast<int64_t>(sizeof(T)); }  // what a product reads

    // out (M,N) = beta*out + x (M,K) W^T, split over the whole team.
    void multiply_rows(T* out, const T* x, int64_t M, T beta) const {
        gemm_parallel<T>(get_num_threads(), false, true, M, rows, cols, T(1), x, cols, data, cols, beta, out, rows);
    }
    // C[:, outputs] (+)= A (M,K) W[outputs, :]^T each step, for one thread's rows `outputs` of W.
    StepProduct<T> step_product(const Kernels<T>& K, bool pack, Range outputs) const {
        return StepProduct<T>(K, pack, data, cols, true, cols, outputs);
    }
    // C[:, outputs] (+)= A (M,N) W[:, outputs] each step, for one thread's columns `outputs` of W.
    StepProduct<T> step_product_transposed(const Kernels<T>& K, bool pack, Range outputs) const {
        return StepProduct<T>(K, pack, data, cols, false, rows, outputs);
    }
};

// Weights larger than a core's L2 are read from the next cache every step, each line evicted
// before the next step needs it again. Read backward every other step (the gates in reverse, each
// gate's rows kSweepRows at a time from its last), a step first reads what the step before read
// last, still in L2. A multiple of every kernel's tile of rows (4; int8's superblocks: 128), so
// each row's sums are those of the forward sweep.
constexpr int64_t kSweepRows = 128;

// One thread's units of all Gates gate blocks of a matrix W (Gates*H,depth), e.g. W_ih for the
// input or W_hh for the state: add(z, A) does z[:, q*H + units] += A (B,depth) W[q*H + units, :]^T
// for each gate q.
template <class T, int Gates, class Matrix>
class GateProducts {
public:
    using Product = typename Matrix::Product;
    GateProducts() = default;  // none: add must not be called
    GateProducts(const Kernels<T>& K, bool pack, const Matrix& W, int64_t H, Range units) : K_(&K), depth_(W.cols) {
        for (int q = 0; q < Gates; ++q)
            gates_[q] = W.step_product(K, pack, Range{q * H + units.begin, q * H + units.end});
    }
    void add(T* z, int64_t ldz, const T* A, int64_t B) const { add(z, ldz, A, depth_, B); }
    // backward: the weights read last first (see kSweepRows)
    void add(T* z, int64_t ldz, const T* A, int64_t lda, int64_t B, bool backward = false) const {
        const typename Product::Prepared a = Product::prepare(*K_, A, lda, B, depth_);
        if (!backward) {
            for (const Product& gate : gates_) gate.apply(z, ldz, a, B, T(1));
            return;
        }
        constexpr int64_t S = kSweepRows;
        for (int q = Gates - 1; q >= 0; --q) {
            const Product& gate = gates_[q];
            for (int64_t p0 = (gate.size() - 1) / S * S; p0 >= 0; p0 -= S)
                gate.apply(z, ldz, a, B, T(1), Range{p0, std::min(gate.size(), p0 + S)});
        }
    }

private:
    const Kernels<T>* K_ = nullptr;
    int64_t depth_ = 0;
    std::array<Product, Gates> gates_;  // no heap allocation: a streaming call makes these
};

}  // namespace lstmcpp
