// The driver's layer loop, written once for every weight format: layers, directions, dropout
// between layers, token input's tables, the cache for backward; each cell through time by
// time_loop.h. Model<T> (dense weights) and QuantizedModel (int8) run their forward through it.
#pragma once

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/blas.h"
#include "core/model.h"
#include "core/scratch.h"
#include "core/time_loop.h"

namespace lstmcpp {

template <class T>
T clip_or_inf(double clip) {
    return clip > 0 ? static_cast<T>(clip) : std::numeric_limits<T>::infinity();
}

// Checks the call's arguments (throwing std::invalid_argument), then runs it: x (T,B,I) or token
// input; h0, c0, lengths may be null; cache null for inference. weights_of(layer, direction)
// gives that cell's CellWeights (in any weight format); model_id marks the cache.
template <class T, class WeightsOf>
void forward_layers(const Config& c, const WeightsOf& weights_of, uint64_t model_id, T* y, T* h_n, T* c_n,
                    Cache<T>* cache, const T* x, const T* h0, const T* c0, const int32_t* lengths,
                    const std::vector<const T*>& dropout_masks, int64_t steps, int64_t batch,
                    const TokenInput<T>* tokens) {
    blas_single_threaded();
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
        cache->model_id = model_id;
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
    const T proj_clip = clip_or_inf<T>(c.proj_clip);
    // inference: layers alternate between two buffers (a stream's step: this thread's reusable
    // scratch, a slot apart from the time loop's)
    const int64_t between = !cache && L > 1 ? TB * DP : 0;
    Scratch<T, 1> scratch({between, L > 2 ? between : 0, dropout_masks.empty() ? 0 : between});
    T* const outputs[2] = {scratch.take(between), scratch.take(L > 2 ? between : 0)};
    T* const dropped = scratch.take(dropout_masks.empty() ? 0 : between);
    const T* input = tokens ? nullptr : cache ? cache->input.data() : x;
    // Token input: per direction, table (V,G) = embedding W_ih^T + b_ih + b_hh, each token's
    // input projection made once.
    std::vector<AlignedVector<T>> tables(tokens ? D : 0);
    for (int64_t d = 0; d < static_cast<int64_t>(tables.size()); ++d) {
        tables[d].resize(tokens->vocab * c.gates() * H);
        project_inputs(tables[d].data(), tokens->embedding, tokens->vocab, weights_of(0, d));
    }
    for (int64_t layer = 0; layer < L; ++layer) {
        // (T,B,DP). The cache keeps every layer's output but the last's, which is y itself;
        // backward reads it too only when projecting (for proj_clip), so then it keeps a copy.
        T* out;
        if (layer == L - 1) {
            out = y;
        } else if (cache) {
            cache->outputs[layer].resize(TB * DP);
            out = cache->outputs[layer].data();
        } else {
            out = outputs[layer % 2];
        }
        for (int64_t d = 0; d < D; ++d) {
            const int64_t cell = layer * D + d;
            const CellShape<T> shape{steps, B, c.layer_input_size(layer), H, P, c.proj_size > 0, d == 1 || c.reverse, proj_clip};
            const bool by_token = tokens && layer == 0;
            forward_through_time<T>(out + d * P, DP, h_n + cell * B * P, c_n + cell * B * H,
                                    cache ? &cache->cells[cell] : nullptr, input,
                                    by_token ? tokens->ids : nullptr, by_token ? tables[d].data() : nullptr,
                                    h0 ? h0 + cell * B * P : nullptr, c0 ? c0 + cell * B * H : nullptr, lengths,
                                    weights_of(layer, d), shape);
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
                next = dropped;
            }
            for (int64_t k = 0; k < TB * DP; ++k) next[k] = out[k] * mask[k];
            input = next;
        }
    }
    if (cache && c.proj_size > 0) cache->outputs[L - 1].assign(y, y + TB * DP);
}


}  // namespace lstmcpp
