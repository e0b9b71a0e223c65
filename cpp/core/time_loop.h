// One cell (one layer, one direction) through time, forward and backward: the driver's time
// loop, written once for every cell type (cells/) over the dense weight format (weights/).
//
// Forward is one product for the input projection of all T steps, then per step one recurrent
// product and the cell's elementwise pass. One team of threads runs the whole loop, split by hidden
// units (thread k owns units [j0, j1) of every gate block, and outputs [p0, p1) of the
// projection, so its rows of W_hh stay in its own cache; one barrier per step, two when
// projecting) or by batch rows (each thread runs whole steps for its rows; no barrier). Backward
// mirrors it, and computes the weight gradients as large products after its reverse-time loop.
// A cell that needs whole rows at every step (layer norm's statistics, the Mogrifier's rounds)
// always runs split by batch rows, its input projected inside each step.
#pragma once

#include <cstdint>

#include "cells/mogrifier.h"
#include "core/aligned.h"
#include "weights/bf16.h"
#include "weights/codebook.h"
#include "weights/dense.h"
#include "weights/int8.h"

namespace lstmcpp {

// What forward keeps for backward, for one cell. Indexed by time position t (not step order).
template <class T>
struct CellCache {
    AlignedVector<T> gates;   // (T,B,G) the cell's activated gates
    AlignedVector<T> c_prev;  // (T,B,H) cell state entering the step at t
    AlignedVector<T> c;       // (T,B,H) cell state after the step at t (after cell_clip)
    AlignedVector<T> h_prev;  // (T,B,P) output state entering the step at t
    AlignedVector<T> m;       // (T,B,H) the cell's output before the projection, kept only when projecting
    AlignedVector<T> extra;   // (T,B,E) what a layer-normalised cell keeps of each row (Cell::extra_size)
    AlignedVector<T> records; // (T,B,R) the Mogrifier's rounds of each row (Mogrifier::record_size)
};

// One cell's parameters as the time loop reads them: the matrices in a weight format (weights/:
// DenseMatrix, Int8Matrix, Bf16Matrix, CodebookMatrix), the biases, and the cell type's own parameters.
template <class T, class Cell, class Matrix = DenseMatrix<T>>
struct CellWeights {
    Matrix weight_ih;     // (G,I)
    Matrix weight_hh;     // (G,P)
    const T* bias_ih;     // (G) or null
    const T* bias_hh;     // (G) or null
    Matrix weight_hr;     // (P,H); data null when not projecting
    Cell cell;
    Mogrifier<T> mogrifier{};  // rounds 0: none
};

// Where backward adds one cell's gradients (the cell type's own go through Cell).
template <class T>
struct CellGradients {
    T* weight_ih;  // (G,I)
    T* weight_hh;  // (G,P)
    T* bias_ih;    // (G) or null
    T* bias_hh;    // (G) or null
    T* weight_hr;  // (P,H) or null
};

template <class T>
struct CellShape {
    int64_t steps, batch, I, H, P;  // T, B, I, H, P
    bool projecting, reverse;
    T proj_clip;  // +inf when off
};

// Testing switch: a thread whose step reads more than `bytes` of weights alternates the
// direction it reads them in, step to step (negative: half of a core's L2, the default; 0: always).
void set_sweep_from_bytes(int64_t bytes);

// out (rows,G) = x (rows,I) W_ih^T + b_ih + b_hh, all rows in one product; x null: the biases
// only (a one-step call projects its input inside the step).
template <class T, class Cell, class Matrix>
void project_inputs(T* out, const T* x, int64_t rows, const CellWeights<T, Cell, Matrix>& w);

// x (T,B,I) is the input, or, when ids (T,B) is given, row ids[t,b] of table (V,G) is step t's
// x W_ih^T + b_ih + b_hh for element b (token input, layer 0). Writes y (T,B,*) with row stride
// ldy, h_n (B,P), c_n (B,H); fills cache when given. h0, c0, lengths may be null.
template <class T, class Cell, class Matrix>
void forward_through_time(T* y, int64_t ldy, T* h_n, T* c_n, CellCache<T>* cache,
                          const T* x, const int32_t* ids, const T* table, const T* h0, const T* c0,
                          const int32_t* lengths, const CellWeights<T, Cell, Matrix>& w, const CellShape<T>& s);

// Writes dx (T,B,I) for the input x (T,B,I); or, for token input (ids given), adds the gradient
// of the table forward gathered from into d_table (V,G) instead, and leaves W_ih's gradient to
// the caller (it comes from d_table). y (T,B,*) with stride ldy is forward's output (read only
// when projecting); dy likewise; dh_n, dc_n may be null. Adds every parameter gradient. (Dense
// weights only: the quantized formats are for inference.)
template <class T, class Cell>
void backward_through_time(T* dx, T* dh0, T* dc0, const CellGradients<T>& grad,
                           const CellCache<T>& cache, const T* x, const int32_t* ids, T* d_table,
                           int64_t vocab, const T* y, int64_t ldy, const T* dy,
                           const T* dh_n, const T* dc_n, const int32_t* lengths,
                           const CellWeights<T, Cell>& w, const CellShape<T>& s);

}  // namespace lstmcpp
