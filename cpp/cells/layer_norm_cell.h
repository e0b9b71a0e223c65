// The layer-normalised cell (SPEC §7, Ba et al. 2016), over the LSTM or the CIFG cell (Base):
//   z = LN(a)*g_ih + LN(r)*g_hh + b_ih + b_hh    a = x W_ih^T, r = h W_hh^T, each LN over its whole row
//   the gates, peepholes and c as Base's;  m = o*tanh(LN(c)*g_c + b_c)   (the state keeps c itself)
// LN(v) = (v - mean(v)) / sqrt(var(v) + 1e-5). Forward beside backward; Base's gate kernels do the
// gate math. Every statistic is over a whole row: the time loop gives this cell the two products
// separately (combine), and either whole rows (its threads split the batch) or, for fewer rows than
// threads (a stream), a share of every row's units, with the team meeting once the products are
// made and once c is (forward's `meet`): each thread then reads the whole row's statistics and
// writes its own units, so the results are those of whole rows.
//
// Beyond Base's members, what the time loop asks of a layer-normalised cell (kLayerNorm):
//   extra_size(H)        values kept per row and step for backward: a_hat (G), r_hat (G),
//                        c_hat (H), and the three 1/std
//   combine(z, a, r, b_ih, b_hh, extra)         z from the two raw products
//   forward / backward   Base's, with the row's extra (and backward's d_extra: da (G), dr (G), du (H),
//                        the gradients of a and r, which the products read, and of LN(c)*g_c + b_c)
//   add_gradients(..., extra, d_extra, rows)    the gains' and bias's gradients
#pragma once

#include <cmath>
#include <cstdint>

#include "core/team.h"
#include "kernels/kernels.h"

namespace lstmcpp {

constexpr double kLayerNormEpsilon = 1e-5;

// The mean of n values and 1/sqrt(var + eps). (The sums run in SIMD lanes, `omp simd`: the same
// order on every thread count, and every thread of a team that splits a row gets the same.)
template <class T>
struct RowStats {
    T mean, rstd;
};
template <class T>
RowStats<T> row_stats(const T* v, int64_t n) {
    T mean = T(0);
#pragma omp simd reduction(+ : mean)
    for (int64_t k = 0; k < n; ++k) mean += v[k];
    mean /= T(n);
    T var = T(0);
#pragma omp simd reduction(+ : var)
    for (int64_t k = 0; k < n; ++k) var += (v[k] - mean) * (v[k] - mean);
    return {mean, T(1) / std::sqrt(var / T(n) + T(kLayerNormEpsilon))};
}

// v_hat[k] = (v[k] - mean) / sqrt(var + eps) for k in part, the statistics over all n values.
template <class T>
RowStats<T> normalize_part(T* v_hat, const T* v, int64_t n, Range part) {
    const RowStats<T> st = row_stats(v, n);
#pragma omp simd
    for (int64_t k = part.begin; k < part.end; ++k) v_hat[k] = (v[k] - st.mean) * st.rstd;
    return st;
}

// d (n): the gradient of v_hat in, of v out (in place): rstd * (d - mean(d) - v_hat * mean(d * v_hat)).
template <class T>
void normalize_row_backward(T* d, const T* v_hat, T rstd, int64_t n) {
    T mean_d = T(0), mean_dv = T(0);
#pragma omp simd reduction(+ : mean_d, mean_dv)
    for (int64_t k = 0; k < n; ++k) {
        mean_d += d[k];
        mean_dv += d[k] * v_hat[k];
    }
    mean_d /= T(n);
    mean_dv /= T(n);
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) d[k] = rstd * (d[k] - mean_d - v_hat[k] * mean_dv);
}

template <class T, class Base>
struct LayerNormCell : Base {
    static constexpr bool kLayerNorm = true;
    static constexpr int kGates = Base::kGates;

    const T* gain_ih = nullptr;  // (G)
    const T* gain_hh = nullptr;  // (G)
    const T* gain_c = nullptr;   // (H)
    const T* bias_c = nullptr;   // (H)
    T* gain_ih_grad = nullptr;   // and their gradients (null for inference)
    T* gain_hh_grad = nullptr;
    T* gain_c_grad = nullptr;
    T* bias_c_grad = nullptr;

    static int64_t extra_size(int64_t H) { return 2 * kGates * H + H + 3; }
    static int64_t d_extra_size(int64_t H) { return 2 * kGates * H + H; }

    // z (G) = LN(a)*g_ih + LN(r)*g_hh + b_ih + b_hh (either bias null: none) for the units of each
    // gate block; extra gets their a_hat, r_hat and (the share from unit 0) the two 1/std.
    void combine(T* z, const T* a, const T* r, const T* b_ih, const T* b_hh, T* extra, Range units) const {
        const int64_t H = this->H, G = kGates * H;
        T* a_hat = extra;
        T* r_hat = extra + G;
        T* rstd = extra + 2 * G + H;  // a's, r's, c's
        const RowStats<T> sa = row_stats(a, G), sr = row_stats(r, G);
        if (units.begin == 0) rstd[0] = sa.rstd, rstd[1] = sr.rstd;
        for (int64_t q = 0; q < kGates; ++q) {
            const Range part{q * H + units.begin, q * H + units.end};
#pragma omp simd
            for (int64_t k = part.begin; k < part.end; ++k) {
                a_hat[k] = (a[k] - sa.mean) * sa.rstd;
                r_hat[k] = (r[k] - sr.mean) * sr.rstd;
            }
            for (int64_t k = part.begin; k < part.end; ++k)
                z[k] = a_hat[k] * gain_ih[k] + r_hat[k] * gain_hh[k] + (b_ih ? b_ih[k] : T(0)) + (b_hh ? b_hh[k] : T(0));
        }
    }

    // Base's forward on the units, then m = o*tanh(LN(c)*g_c + b_c) on them; extra gets their c_hat
    // and (the share from unit 0) its 1/std. meet(): the team's meeting between the two, after which
    // every unit of c is made (a no-op for whole rows).
    template <class Meet>
    void forward(const Kernels<T>& K, T* z, T* c, T* m, const T* c_prev, Range units, T* extra, const Meet& meet) const {
        const int64_t H = this->H, G = kGates * H;
        Base::forward(K, z, c, m, c_prev, units);
        meet();
        T* c_hat = extra + 2 * G;
        const T rstd = normalize_part(c_hat, c, H, units).rstd;
        if (units.begin == 0) extra[2 * G + H + 2] = rstd;
        const T* o = z + (kGates - 1) * H;  // the output gate's block is the last
        for (int64_t j = units.begin; j < units.end; ++j) m[j] = c_hat[j] * gain_c[j] + bias_c[j];
        K.tanh(m + units.begin, m + units.begin, units.size());
        for (int64_t j = units.begin; j < units.end; ++j) m[j] *= o[j];
    }

    // z holds the activated gates, extra what forward kept; dm (H) the gradient of m, dc (H) of c
    // from the step after. Writes dz (G), dc_prev (H) and d_extra: da (G), dr (G), du (H).
    void backward(const Kernels<T>& K, T* dz, T* dc_prev, const T* z, const T* c_prev, const T* c, const T* dm,
                  const T* dc, Range units, const T* extra, T* d_extra) const {
        const int64_t H = this->H, G = kGates * H;
        const T* a_hat = extra;
        const T* r_hat = extra + G;
        const T* c_hat = extra + 2 * G;
        const T* rstd = extra + 2 * G + H;
        T* da = d_extra;
        T* dr = d_extra + G;  // until the end, room for three H-sized temporaries (G >= 3H)
        T* du = d_extra + 2 * G;
        T* zeros = dr;
        T* dc_in = dr + H;
        T* tanh_u = dr + 2 * H;
        const T* o = z + (kGates - 1) * H;
        const T* w_co = this->peephole + (Base::kPeepholeRows - 1) * H;  // the output gate's peephole row
        for (int64_t j = 0; j < H; ++j) tanh_u[j] = c_hat[j] * gain_c[j] + bias_c[j];
        K.tanh(tanh_u, tanh_u, H);
        // forward was: m = o*tanh(u), u = c_hat*g_c + b_c, c_hat = LN(c), o = sigmoid(zo + wco*c)
        for (int64_t j = 0; j < H; ++j) {
            du[j] = dm[j] * o[j] * (T(1) - tanh_u[j] * tanh_u[j]);
            dc_in[j] = du[j] * gain_c[j];
        }
        normalize_row_backward(dc_in, c_hat, rstd[2], H);
        // Base's backward with no m (its tanh(c) path is replaced by ours) and the cell's gradient
        // carrying ours and the output peephole's; then the output gate's gradient, which is ours.
        for (int64_t j = 0; j < H; ++j) {
            const T dzo = dm[j] * tanh_u[j] * o[j] * (T(1) - o[j]);
            dc_in[j] += dc[j] + dzo * w_co[j];
            zeros[j] = T(0);
            tanh_u[j] = dzo;  // kept: Base writes its own (zero) output-gate gradient
        }
        Base::backward(K, dz, dc_prev, z, c_prev, c, zeros, dc_in, units);
        for (int64_t j = 0; j < H; ++j) dz[(kGates - 1) * H + j] = tanh_u[j];
        // forward was: z = LN(a)*g_ih + LN(r)*g_hh + b
        for (int64_t k = 0; k < G; ++k) {
            da[k] = dz[k] * gain_ih[k];
            dr[k] = dz[k] * gain_hh[k];
        }
        normalize_row_backward(da, a_hat, rstd[0], G);
        normalize_row_backward(dr, r_hat, rstd[1], G);
    }

    // After the loop: Base's gradients, then the gains' and the bias's, from every row (in row order).
    void add_gradients(const T* dz, const T* c_prev, const T* c, int64_t rows, const T* extra, const T* d_extra) const {
        Base::add_gradients(dz, c_prev, c, rows);
        if (!gain_ih_grad) return;
        const int64_t H = this->H, G = kGates * H, E = extra_size(H), DE = d_extra_size(H);
        for (int64_t r = 0; r < rows; ++r) {
            const T* d = dz + r * G;
            const T* e = extra + r * E;
            const T* du = d_extra + r * DE + 2 * G;
            for (int64_t k = 0; k < G; ++k) {
                gain_ih_grad[k] += d[k] * e[k];
                gain_hh_grad[k] += d[k] * e[G + k];
            }
            for (int64_t j = 0; j < H; ++j) {
                gain_c_grad[j] += du[j] * e[2 * G + j];
                bias_c_grad[j] += du[j];
            }
        }
    }
};

}  // namespace lstmcpp
