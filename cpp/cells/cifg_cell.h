// The CIFG cell (SPEC §7, ONNX's input_forget=1): the LSTM cell with the forget gate coupled to
// the input gate, f = 1 - i, so there is no forget block and every product is 3H rows wide.
// Forward beside backward, with the parameters only this cell reads (peepholes i and o, cell_clip).
// The members the time loop asks of a cell are listed in cells/lstm_cell.h.
//
// The transcendental functions run through the kernels (K.sigmoid, K.tanh: the instruction set's
// vector code), a chunk of units at a time; the rest are plain loops over the chunk.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cells/lstm_cell.h"
#include "core/team.h"
#include "kernels/kernels.h"

namespace lstmcpp {

template <class T>
struct CifgCell {
    static constexpr int kGates = 3;  // z (3H): i, g, o
    static constexpr int kPeepholeRows = 2;
    static constexpr bool kLayerNorm = false;  // (cells/layer_norm_cell.h)

    int64_t H = 0;
    const T* peephole = nullptr;  // (2,H) rows i, o; zeros when the model has none
    T* peephole_grad = nullptr;   // (2,H), or null when the model has no peepholes
    T cell_clip = T(0);           // +inf when off

    // Units at a time: the chunk's activations sit in registers and L1 between the passes.
    static constexpr int64_t kChunk = 64;

    // i = sigmoid(z_i + w_ci*c_prev); f = 1 - i; g = tanh(z_g)
    // c = clip(f*c_prev + i*g); o = sigmoid(z_o + w_co*c); m = o*tanh(c)
    void forward(const Kernels<T>& K, T* z, T* c, T* m, const T* c_prev, Range units) const {
        const T* w_ci = peephole;
        const T* w_co = peephole + H;
        for (int64_t j0 = units.begin; j0 < units.end; j0 += kChunk) {
            const int64_t n = std::min(kChunk, units.end - j0);
            T* zi = z + j0;
            T* zg = z + H + j0;
            T* zo = z + 2 * H + j0;
            for (int64_t k = 0; k < n; ++k) zi[k] += w_ci[j0 + k] * c_prev[j0 + k];
            K.sigmoid(zi, zi, n);
            K.tanh(zg, zg, n);
            for (int64_t k = 0; k < n; ++k) {
                const T cp = c_prev[j0 + k];
                const T cn = clip(cp + zi[k] * (zg[k] - cp));  // (1 - i)*c_prev + i*g
                c[j0 + k] = cn;
                zo[k] += w_co[j0 + k] * cn;  // the output peephole sees the new cell
            }
            K.sigmoid(zo, zo, n);
            K.tanh(m + j0, c + j0, n);
            for (int64_t k = 0; k < n; ++k) m[j0 + k] *= zo[k];
        }
    }

    // z holds the activated gates forward left; dm (H) the gradient of m, dc (H) of c from the
    // step after.
    void backward(const Kernels<T>& K, T* dz, T* dc_prev, const T* z, const T* c_prev, const T* c,
                  const T* dm, const T* dc, Range units) const {
        const T* w_ci = peephole;
        const T* w_co = peephole + H;
        T tc[kChunk];
        for (int64_t j0 = units.begin; j0 < units.end; j0 += kChunk) {
            const int64_t n = std::min(kChunk, units.end - j0);
            K.tanh(tc, c + j0, n);
            for (int64_t k = 0; k < n; ++k) {
                const int64_t j = j0 + k;
                const T i = z[j], g = z[H + j], o = z[2 * H + j], cp = c_prev[j], cn = c[j];
                // forward was: m = o*tanh(c), o = sigmoid(zo + wco*c)
                const T dzo = dm[j] * tc[k] * o * (T(1) - o);
                T dct = dc[j] + dm[j] * o * (T(1) - tc[k] * tc[k]) + dzo * w_co[j];
                // forward was: c = clip(c_raw)   so: a clipped element passes no gradient
                if (!(std::abs(cn) < cell_clip)) dct = T(0);
                // forward was: c_raw = (1 - i)*c_prev + i*g, i = sigmoid(zi + wci*c_prev), g = tanh(zg)
                const T dzi = dct * (g - cp) * i * (T(1) - i);
                dz[j] = dzi;
                dz[H + j] = dct * i * (T(1) - g * g);
                dz[2 * H + j] = dzo;
                dc_prev[j] = dct * (T(1) - i) + dzi * w_ci[j];
            }
        }
    }

    // dz (rows,3H), c_prev and c (rows,H): every step's, after the loop.
    void add_gradients(const T* dz, const T* c_prev, const T* c, int64_t rows) const {
        if (!peephole_grad) return;
        // forward was: i = sigmoid(zi + wci*c_prev), o = sigmoid(zo + wco*c)
        const int64_t G = kGates * H;
        add_peephole_gradient(peephole_grad, dz, 0, c_prev, rows, G, H);
        add_peephole_gradient(peephole_grad + H, dz, 2, c, rows, G, H);
    }

private:
    // cell_clip's clip, letting a NaN through (as the LSTM cell's kernels do)
    T clip(T v) const { return v > cell_clip ? cell_clip : (v < -cell_clip ? -cell_clip : v); }
};

}  // namespace lstmcpp
