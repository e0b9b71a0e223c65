// A pool of streams' states (SPEC §6): the listed streams' rows gathered into one batch, stepped,
// and scattered back. all (L, capacity, W) holds every stream's state; batch (L, n, W) the n
// listed ones, in the order of ids (each in 0..capacity-1, none twice: the caller checks).
#pragma once

#include <algorithm>
#include <cstdint>

namespace lstmcpp {

template <class T>
void gather_states(T* batch, const T* all, const int64_t* ids, int64_t n, int64_t layers, int64_t capacity, int64_t W) {
    for (int64_t l = 0; l < layers; ++l)
        for (int64_t k = 0; k < n; ++k) {
            const T* row = all + (l * capacity + ids[k]) * W;
            std::copy(row, row + W, batch + (l * n + k) * W);
        }
}

template <class T>
void scatter_states(T* all, const T* batch, const int64_t* ids, int64_t n, int64_t layers, int64_t capacity, int64_t W) {
    for (int64_t l = 0; l < layers; ++l)
        for (int64_t k = 0; k < n; ++k) {
            const T* row = batch + (l * n + k) * W;
            std::copy(row, row + W, all + (l * capacity + ids[k]) * W);
        }
}

}  // namespace lstmcpp
