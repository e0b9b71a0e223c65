// lstmcpp core: a multi-layer, optionally bidirectional LSTM with peepholes, projection and
// clipping, forward and backward through time. Plain C++: no Python anywhere in here.
//
// Size legend used in every shape comment:
//   T = time steps, B = batch, I = input features of a layer, H = hidden (cell) units,
//   P = output size (proj_size when projecting, else H), D = directions, L = layers.
// Gate blocks are stacked i, f, g, o (PyTorch's order) along the 4H axis.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "aligned.h"

namespace lstmcpp {

struct Config {
    int64_t input_size = 1;
    int64_t hidden_size = 1;
    int64_t num_layers = 1;
    int64_t proj_size = 0;  // 0: no projection
    bool bias = true;
    bool bidirectional = false;
    bool peepholes = false;
    double cell_clip = 0.0;  // 0: off
    double proj_clip = 0.0;  // 0: off (needs proj_size > 0)

    int64_t output_size() const { return proj_size > 0 ? proj_size : hidden_size; }  // P
    int64_t directions() const { return bidirectional ? 2 : 1; }                     // D
    int64_t layer_input_size(int64_t layer) const {
        return layer == 0 ? input_size : directions() * output_size();
    }
    // Throws std::invalid_argument naming the offending field.
    void validate() const;
};

// One parameter tensor inside the model's flat buffer, named as PyTorch names it.
struct ParamEntry {
    std::string name;
    std::vector<int64_t> shape;
    int64_t offset;  // in elements, from the start of the flat buffer
    int64_t size;
};

// Offsets (or -1 when absent) of one cell's (one layer, one direction) parameters.
struct CellOffsets {
    int64_t weight_ih = -1;       // (4H,I)
    int64_t weight_hh = -1;       // (4H,P)
    int64_t bias_ih = -1;         // (4H)
    int64_t bias_hh = -1;         // (4H)
    int64_t weight_hr = -1;       // (P,H)
    int64_t weight_peephole = -1; // (3,H) rows i, f, o
};

// PyTorch's order: per layer, per direction: weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
// then our weight_peephole. Offsets are padded to 16 elements so every tensor is 64-byte aligned.
std::vector<ParamEntry> param_layout(const Config& config, std::vector<CellOffsets>* cells,
                                     int64_t* total_size);

// What forward keeps for backward, for one cell. Indexed by time position t (not step order).
template <class T>
struct CellCache {
    AlignedVector<T> gates;   // (T,B,4H) activated i,f,g,o
    AlignedVector<T> c_prev;  // (T,B,H) cell state entering the step at t
    AlignedVector<T> c;       // (T,B,H) cell state after the step at t (after cell_clip)
    AlignedVector<T> h_prev;  // (T,B,P) output state entering the step at t
    AlignedVector<T> m;       // (T,B,H) o*tanh(c), kept only when projecting
};

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
    std::vector<AlignedVector<T>> outputs;     // per layer: (T,B,D*P) before dropout
    std::vector<AlignedVector<T>> dropped;     // per layer l < L-1 when dropout ran: (T,B,D*P)
    std::vector<AlignedVector<T>> dropout_masks;  // per layer l < L-1 or empty: (T,B,D*P) 0 or 1/(1-p)
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
    // dropout_masks: L-1 pointers to (T,B,D*P) masks, or empty for no dropout. tokens: layer 0's
    // input as ids into an embedding instead of x (x is then unused), or null.
    // Outputs y (T,B,D*P), h_n (D*L,B,P), c_n (D*L,B,H). cache may be null (inference).
    void forward(T* y, T* h_n, T* c_n, Cache<T>* cache,
                 const T* x, const T* h0, const T* c0, const int32_t* lengths,
                 const std::vector<const T*>& dropout_masks,
                 int64_t steps, int64_t batch, const TokenInput<T>* tokens = nullptr) const;

    // dy (T,B,D*P); dh_n (D*L,B,P) or null; dc_n (D*L,B,H) or null. Writes dx (T,B,I) (for token
    // input: the embedding's gradient (V,I) instead), dh0 (D*L,B,P), dc0 (D*L,B,H); adds every
    // parameter gradient into grads(). forward may run
    // in any number of threads at once; backward on one model in one thread at a time (a second
    // concurrent call throws std::runtime_error rather than race on the gradients).
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

// Threads used by the core (OpenMP). Default: omp_get_max_threads() at first use.
void set_num_threads(int n);
int get_num_threads();
// Testing switch: the per-step work (multiply-adds) each thread of a time loop needs before
// another thread joins. 1 puts the whole team on even the smallest cell.
void set_min_work_per_thread(int64_t macs);
// Testing switch: the fewest rows (steps x batch) for which a call's per-step products pack
// their weights (default 128); 1 packs in every call that can, a huge value in none.
void set_pack_min_rows(int64_t rows);

}  // namespace lstmcpp
