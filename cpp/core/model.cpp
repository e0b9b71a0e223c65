#include "core/model.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

#include "cells/cells.h"
#include "core/blas.h"
#include "core/layers.h"

namespace lstmcpp {

namespace {

std::atomic<uint64_t> g_next_model_id{1};

template <class T>
T* at(T* base, int64_t offset) {
    return offset < 0 ? nullptr : base + offset;
}

// One cell's parameters, as the time loop reads them (grads null: for inference).
template <class T, class Cell>
CellWeights<T, Cell> cell_weights(const Config& c, const T* params, T* grads, const CellOffsets& o,
                                  int64_t layer, const T* zero_peepholes) {
    const int64_t H = c.hidden_size, P = c.output_size(), G = c.gates() * H, I = c.layer_input_size(layer);
    const T* peephole = at(params, o.weight_peephole);
    Cell cell;
    cell.H = H;
    cell.peephole = peephole ? peephole : zero_peepholes;
    cell.peephole_grad = grads ? at(grads, o.weight_peephole) : nullptr;
    cell.cell_clip = clip_or_inf<T>(c.cell_clip);
    if constexpr (Cell::kLayerNorm) {
        cell.gain_ih = at(params, o.ln_weight_ih);
        cell.gain_hh = at(params, o.ln_weight_hh);
        cell.gain_c = at(params, o.ln_weight_c);
        cell.bias_c = at(params, o.ln_bias_c);
        if (grads) {
            cell.gain_ih_grad = at(grads, o.ln_weight_ih);
            cell.gain_hh_grad = at(grads, o.ln_weight_hh);
            cell.gain_c_grad = at(grads, o.ln_weight_c);
            cell.bias_c_grad = at(grads, o.ln_bias_c);
        }
    }
    Mogrifier<T> mogrifier;
    mogrifier.rounds = c.mogrify_rounds;
    mogrifier.rank = c.mogrify_rank;
    mogrifier.I = I;
    mogrifier.P = P;
    for (size_t j = 0; j < o.mogrify.size(); ++j) {
        mogrifier.a.push_back(params + o.mogrify[j]);
        mogrifier.a_grad.push_back(grads ? grads + o.mogrify[j] : nullptr);
        if (!o.mogrify_b.empty()) {
            mogrifier.b.push_back(params + o.mogrify_b[j]);
            mogrifier.b_grad.push_back(grads ? grads + o.mogrify_b[j] : nullptr);
        }
    }
    return {DenseMatrix<T>{at(params, o.weight_ih), G, I},
            DenseMatrix<T>{at(params, o.weight_hh), G, P},
            at(params, o.bias_ih),
            at(params, o.bias_hh),
            DenseMatrix<T>{at(params, o.weight_hr), o.weight_hr < 0 ? 0 : P, o.weight_hr < 0 ? 0 : H},
            cell,
            std::move(mogrifier)};
}

template <class T>
CellGradients<T> cell_gradients(T* grads, const CellOffsets& o) {
    return {at(grads, o.weight_ih), at(grads, o.weight_hh), at(grads, o.bias_ih), at(grads, o.bias_hh),
            at(grads, o.weight_hr)};
}

}  // namespace

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
    with_cell<T>(config_, [&](auto kind) {
        auto weights_of = [this](int64_t layer, int64_t direction) {
            return cell_weights<T, decltype(kind)>(config_, params_.data(), nullptr,
                                                   cells_[layer * config_.directions() + direction], layer,
                                                   zero_peepholes_.data());
        };
        forward_layers(config_, weights_of, id_, y, h_n, c_n, cache, x, h0, c0, lengths, dropout_masks, steps, batch,
                       tokens);
    });
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
    const T proj_clip = clip_or_inf<T>(c.proj_clip);
    const bool projecting = c.proj_size > 0;

    const T* d_out = dy;             // (T,B,DP) gradient of this layer's output
    AlignedVector<T> d_in, d_above;  // (T,B,I) gradient of this layer's input; the layer above's
    const bool tokens = !cache.ids.empty();
    const int64_t V = cache.vocab, G = c.gates() * H;
    AlignedVector<T> d_table(tokens ? V * G : 0);  // (V,G) for token input, per direction in turn
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
        for (int64_t d = 0; d < D; ++d) {
            const int64_t cell = layer * D + d;
            const CellShape<T> shape{steps, B, I, H, P, projecting, d == 1 || c.reverse, proj_clip};
            const CellGradients<T> grad = cell_gradients<T>(grads_.data(), cells_[cell]);
            const T* w_ih = params_.data() + cells_[cell].weight_ih;
            if (by_token) std::fill(d_table.begin(), d_table.end(), T(0));
            with_cell<T>(c, [&](auto kind) {
                const auto w = cell_weights<T, decltype(kind)>(c, params_.data(), grads_.data(), cells_[cell], layer,
                                                               zero_peepholes_.data());
                backward_through_time<T>(d_input, dh0 + cell * B * P, dc0 + cell * B * H, grad, cache.cells[cell],
                                         input, by_token ? cache.ids.data() : nullptr, d_table.data(), V,
                                         projecting ? cache.outputs[layer].data() + d * P : nullptr, DP,
                                         d_out + d * P, dh_n ? dh_n + cell * B * P : nullptr,
                                         dc_n ? dc_n + cell * B * H : nullptr, lengths, w, shape);
            });
            if (by_token) {
                // forward was: table = embedding W_ih^T + b_ih + b_hh
                // so: dW_ih += d_table^T embedding; d_embedding += d_table W_ih
                const int threads = get_num_threads();
                gemm_parallel<T>(threads, true, false, G, I, V, T(1), d_table.data(), G, input, I, T(1),
                                 grad.weight_ih, I);
                gemm_parallel<T>(threads, false, false, V, I, G, T(1), d_table.data(), G, w_ih, I, T(1), d_input, I);
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
