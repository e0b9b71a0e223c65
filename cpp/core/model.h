// lstmcpp core: a multi-layer, optionally bidirectional LSTM with peepholes, projection and
// clipping, forward and backward through time. Plain C++: no Python anywhere in here.
//
// The model is the driver's outer part: layers, directions, dropout between layers, token input,
// and what forward keeps for backward; each cell's time loop is core/time_loop.h. Sizes as in
// core/config.h's legend.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "core/aligned.h"
#include "core/config.h"
#include "core/team.h"
#include "core/time_loop.h"

namespace lstmcpp {

// Layer 0's input given as token ids into an embedding, x[t,b] = embedding[ids[t,b]] (the input
// of a language model). Forward then projects each of the V rows of the embedding once, instead
// of each of the T*B steps' inputs, and gathers a step's gate inputs by id; backward sums the
// gate gradients per id, so the products for weight_ih_l0's gradient and the embedding's gradient
// run over V rows instead of T*B. The results equal those for x = embedding[ids] up to rounding.
template <class T>
struct TokenInput {
    const int32_t* ids = nullptr;  // (T,B), each in [0, vocab)
    const T* embedding = nullptr;  // (V,I)
    int64_t vocab = 0;             // V
};

template <class T>
struct Cache {
    uint64_t model_id = 0;
    int64_t steps = 0, batch = 0;
    std::vector<int32_t> lengths;              // (B) or empty: every element runs all T steps
    std::vector<int32_t> ids;                  // (T,B) for token input, else empty
    int64_t vocab = 0;                         // V for token input, else 0
    AlignedVector<T> input;                    // (T,B,I) layer 0's input, copied; (V,I) the embedding for token input
    std::vector<AlignedVector<T>> outputs;     // per layer: (T,B,DP) before dropout
    std::vector<AlignedVector<T>> dropped;     // per layer l < L-1 when dropout ran: (T,B,DP)
    std::vector<AlignedVector<T>> dropout_masks;  // per layer l < L-1 or empty: (T,B,DP) 0 or 1/(1-p)
    std::vector<CellCache<T>> cells;           // L*D, index layer*D + direction
};

template <class T>
class Model {
public:
    explicit Model(const Config& config);

    const Config& config() const { return config_; }
    const std::vector<ParamEntry>& layout() const { return layout_; }
    uint64_t id() const { return id_; }
    T* params() { return params_.data(); }
    T* grads() { return grads_.data(); }
    int64_t num_params() const { return num_params_; }  // flat buffer length, padding included

    // x (T,B,I); h0 (D*L,B,P) or null for zeros; c0 (D*L,B,H) or null; lengths (B) or null.
    // dropout_masks: L-1 pointers to (T,B,DP) masks, or empty for no dropout. tokens: layer 0's
    // input as ids into an embedding instead of x (x is then unused), or null.
    // Outputs y (T,B,DP), h_n (D*L,B,P), c_n (D*L,B,H). cache may be null (inference).
    void forward(T* y, T* h_n, T* c_n, Cache<T>* cache,
                 const T* x, const T* h0, const T* c0, const int32_t* lengths,
                 const std::vector<const T*>& dropout_masks,
                 int64_t steps, int64_t batch, const TokenInput<T>* tokens = nullptr) const;

    // dy (T,B,DP); dh_n (D*L,B,P) or null; dc_n (D*L,B,H) or null. Writes dx (T,B,I) (for token
    // input: the embedding's gradient (V,I) instead), dh0 (D*L,B,P), dc0 (D*L,B,H); adds every
    // parameter gradient into grads(). forward may run in any number of threads at once; backward
    // on one model in one thread at a time (a second concurrent call throws std::runtime_error
    // rather than race on the gradients).
    void backward(T* dx, T* dh0, T* dc0,
                  const Cache<T>& cache, const T* dy, const T* dh_n, const T* dc_n);

private:
    Config config_;
    std::vector<ParamEntry> layout_;
    std::vector<CellOffsets> cells_;
    int64_t num_params_ = 0;
    AlignedVector<T> params_;
    AlignedVector<T> grads_;
    AlignedVector<T> zero_peepholes_;  // (3,H) zeros: the kernels always read a peephole row
    uint64_t id_;
    // backward adds into grads_: two at once on one model would race, so the second raises.
    std::atomic<bool> backward_running_{false};
};

}  // namespace lstmcpp
