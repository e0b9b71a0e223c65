// A pool of streams' states (SPEC §6): the listed streams' rows gathered into one batch, stepped,
// and scattered back. all (L, capacity, W) holds every stream's state; batch (L, n, W) the n
// listed ones, in the order of ids (each in 0..capacity-1, none twice: the caller checks).
#pragma once

#include <algorithm>
#include <cstdint>

#include "core/team.h"

namespace lstmcpp {

// One array of states, gathered (to_batch) or scattered, for the listed rows [begin, end) of ids.
template <class T>
void move_states(bool to_batch, T* batch, T* all, const int64_t* ids, Range listed, int64_t n, int64_t layers,
                 int64_t capacity, int64_t W) {
    for (int64_t l = 0; l < layers; ++l)
        for (int64_t k = listed.begin; k < listed.end; ++k) {
            T* row = all + (l * capacity + ids[k]) * W;
            T* slot = batch + (l * n + k) * W;
            if (to_batch) std::copy(row, row + W, slot);
            else std::copy(slot, slot + W, row);
        }
}

// Both states (h rows of width P, c rows of width H) gathered into the batch (to_batch) or
// scattered back, the listed streams split over the team when there are enough of them (256
// streams of H = 128 moved by one thread took a tenth of a pool's step).
template <class T>
void move_pool_states(bool to_batch, T* h_batch, T* h_all, int64_t P, T* c_batch, T* c_all, int64_t H,
                      const int64_t* ids, int64_t n, int64_t layers, int64_t capacity) {
    constexpr int64_t kValuesPerThread = 1 << 14;
    const int64_t values = layers * n * (P + H);
    run_team(values >= 2 * kValuesPerThread ? get_num_threads() : 1, [&](int team, int me) {
        const Range listed = split(n, team, me, 1);
        move_states(to_batch, h_batch, h_all, ids, listed, n, layers, capacity, P);
        move_states(to_batch, c_batch, c_all, ids, listed, n, layers, capacity, H);
    });
}

}  // namespace lstmcpp
