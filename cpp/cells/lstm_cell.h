// The LSTM cell (SPEC §1): the elementwise work of one step once the products are done, forward
// beside backward, with the parameters only this cell reads (peepholes, cell_clip).
//
// What the time loop (core/time_loop.cpp) asks of a cell type:
//   kGates                    gate blocks in z, so G = kGates*H rows of W_ih, W_hh and the biases
//   kPeepholeRows             rows of the peephole matrix, the output gate's last
//   kLayerNorm                whether the cell normalises (cells/layer_norm_cell.h adds members)
//   forward(K, z, c, m, c_prev, units)
//                             one batch row, hidden units `units`: z (G) pre-activations in,
//                             activations out (kept for backward); c (H) the new cell state;
//                             m (H) the cell's output before the projection
//   backward(K, dz, dc_prev, z, c_prev, c, dm, dc, units)
//                             the same row and units backwards: dz (G), dc_prev (H) out
//   add_gradients(dz, c_prev, c, rows)
//                             after the loop: its own parameters' gradients from all TB rows
// A variant (CIFG, layer-norm) is another type with these members; the Mogrifier (cells/mogrifier.h)
// transforms a step's input and state before any cell's gates.
#pragma once

#include <cstdint>

#include "core/team.h"
#include "kernels/kernels.h"

namespace lstmcpp {

// A peephole row's gradient from every step, after the loop: dw (H) += sum over rows of
// dz[gate block] * seen, where the gate's pre-activation was z_gate + w * seen (seen: c_prev, or
// the new c for the output gate). dz (rows, G), seen (rows, H); rows in order, so the sums do not
// depend on the thread count.
template <class T>
void add_peephole_gradient(T* dw, const T* dz, int64_t gate_block, const T* seen, int64_t rows, int64_t G, int64_t H) {
    for (int64_t r = 0; r < rows; ++r) {
        const T* d = dz + r * G + gate_block * H;
        const T* s = seen + r * H;
        for (int64_t j = 0; j < H; ++j) dw[j] += d[j] * s[j];
    }
}

template <class T>
struct LstmCell {
    static constexpr int kGates = 4;  // z (4H): i, f, g, o
    static constexpr int kPeepholeRows = 3;
    static constexpr bool kLayerNorm = false;  // (cells/layer_norm_cell.h)

    int64_t H = 0;
    const T* peephole = nullptr;    // (3,H) rows i, f, o; zeros when the model has none
    T* peephole_grad = nullptr;     // (3,H), or null when the model has no peepholes
    T cell_clip = T(0);             // +inf when off

    // i = sigmoid(z_i + w_ci*c_prev); f = sigmoid(z_f + w_cf*c_prev); g = tanh(z_g)
    // c = clip(f*c_prev + i*g); o = sigmoid(z_o + w_co*c); m = o*tanh(c)
    // (the per-ISA kernels do the arithmetic: kernels_impl.h has the plain version)
    void forward(const Kernels<T>& K, T* z, T* c, T* m, const T* c_prev, Range units) const {
        K.gates_forward(z, c, m, c_prev, peephole, H, units.begin, units.end, cell_clip);
    }

    // z holds the activated gates forward left; dm (H) the gradient of m, dc (H) of c from the
    // step after.
    void backward(const Kernels<T>& K, T* dz, T* dc_prev, const T* z, const T* c_prev, const T* c,
                  const T* dm, const T* dc, Range units) const {
        K.gates_backward(dz, dc_prev, z, c_prev, c, dm, dc, peephole, H, units.begin, units.end, cell_clip);
    }

    // dz (rows,4H), c_prev and c (rows,H): every step's, after the loop.
    void add_gradients(const T* dz, const T* c_prev, const T* c, int64_t rows) const {
        if (!peephole_grad) return;
        // forward was: i = sigmoid(zi + wci*c_prev), f = sigmoid(zf + wcf*c_prev), o = sigmoid(zo + wco*c)
        const int64_t G = kGates * H;
        add_peephole_gradient(peephole_grad, dz, 0, c_prev, rows, G, H);
        add_peephole_gradient(peephole_grad + H, dz, 1, c_prev, rows, G, H);
        add_peephole_gradient(peephole_grad + 2 * H, dz, 3, c, rows, G, H);
    }
};

}  // namespace lstmcpp
