// A pool of streams' states (SPEC §6): the listed streams' rows gathered into one batch, stepped,
// and scattered back. all (L, capacity, W) holds every stream's state; a batch (L, rows, W) some
// of the listed ones, in the order of ids (each in 0..capacity-1, none twice: the caller checks).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/scratch.h"
#include "core/team.h"

namespace lstmcpp {

// One array of states of the streams ids[listed], gathered into batch (layers, listed.size(), W)
// (to_batch) or scattered from it.
template <class T>
void move_states(bool to_batch, T* batch, T* all, const int64_t* ids, Range listed, int64_t layers, int64_t capacity,
                 int64_t W) {
    for (int64_t l = 0; l < layers; ++l)
        for (int64_t k = listed.begin; k < listed.end; ++k) {
            T* row = all + (l * capacity + ids[k]) * W;
            T* slot = batch + (l * listed.size() + k - listed.begin) * W;
            if (to_batch) std::copy(row, row + W, slot);
            else std::copy(slot, slot + W, row);
        }
}

// One step of a pool's n listed streams: their states gathered from h_all (layers, capacity, P)
// and c_all (layers, capacity, H), stepped by step(y, h, c, x, rows) (one batch of rows, in place:
// h (layers, rows, P), c (layers, rows, H)), and scattered back. The streams are cut into chunks
// by their number alone, as gemm_parallel cuts a product (so no result depends on the number of
// threads), and each thread of the team takes whole chunks as they come and gathers, steps and
// scatters each on its own: the team meets once a call, not after each phase, and a chunk's
// states stay in its thread's cache between the phases. A single chunk steps on the calling
// thread, and the step splits itself.
// (A chunk of 32 streams or more steps as one batch: with packed weights, or two BLAS products;
// packed, a thread packs them once a call, for its first chunk.)
template <class T, class Step>
void pool_step_in_chunks(int64_t n, int64_t layers, int64_t capacity, int64_t P, int64_t H, int64_t I, const int64_t* ids,
                         T* h_all, T* c_all, const T* x, T* y, const Step& step) {
    const int64_t chunk = shape_chunk(n);
    const int64_t chunks = (n + chunk - 1) / chunk;
    const uint64_t call = PackingCall::next();  // a thread's chunks share the weights it packs
    run_team_chunks(get_num_threads(), chunks, [&](int64_t q) {
        const PackingCall packing(call);
        thread_local std::vector<T> hs, cs;  // this thread's gathered states: grown once, then reused
        const int64_t begin = q * chunk, rows = std::min(chunk, n - begin);
        hs.resize(layers * rows * P);
        cs.resize(layers * rows * H);
        const Range listed{begin, begin + rows};
        move_states(true, hs.data(), h_all, ids, listed, layers, capacity, P);
        move_states(true, cs.data(), c_all, ids, listed, layers, capacity, H);
        step(y + begin * P, hs.data(), cs.data(), x + begin * I, rows);
        move_states(false, hs.data(), h_all, ids, listed, layers, capacity, P);
        move_states(false, cs.data(), c_all, ids, listed, layers, capacity, H);
    });
}

}  // namespace lstmcpp
