#include "training/training.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "core/team.h"

namespace lstmcpp {

template <class T>
double softmax_cross_entropy(T* dlogits, const T* logits, const int32_t* targets, const T* weights,
                             int64_t N, int64_t V, double scale) {
    for (int64_t n = 0; n < N; ++n)
        if (targets[n] < 0 || targets[n] >= V)
            throw std::invalid_argument("targets[" + std::to_string(n) + "] = " + std::to_string(targets[n]) +
                                        " is outside 0.." + std::to_string(V - 1));
    const Kernels<T>& K = kernels<T>();
    // rows split among the team; each member's sum of its rows, added in the members' order
    std::vector<double> totals(static_cast<size_t>(get_num_threads()), 0.0);
    run_team(N * V >= (1 << 16) ? get_num_threads() : 1, [&](int team, int me) {
        const Range rows = split(N, team, me, 1);
        double total = 0.0;
        for (int64_t n = rows.begin; n < rows.end; ++n) {
            const T* x = logits + n * V;
            T* d = dlogits + n * V;
            const T top = *std::max_element(x, x + V);
            for (int64_t k = 0; k < V; ++k) d[k] = x[k] - top;
            const T picked = d[targets[n]];
            K.exp(d, d, V);  // e = exp(x - max)
            double sum = 0.0;
            for (int64_t k = 0; k < V; ++k) sum += d[k];
            const double w = weights ? static_cast<double>(weights[n]) : 1.0;
            // -log softmax(x)[t] = log(sum e) - (x[t] - max)
            total += w * (std::log(sum) - static_cast<double>(picked));
            const T a = static_cast<T>(scale * w / sum);
            for (int64_t k = 0; k < V; ++k) d[k] *= a;
            d[targets[n]] -= static_cast<T>(scale * w);
        }
        totals[me] = total;
    });
    double total = 0.0;
    for (double t : totals) total += t;
    return total;
}

template <class T>
void adam_update(T* param, const T* grad, T* m, T* v, int64_t n, const AdamStep& s) {
    const double bias1 = 1.0 - std::pow(s.beta1, static_cast<double>(s.step));
    const double bias2 = 1.0 - std::pow(s.beta2, static_cast<double>(s.step));
    const T beta1 = static_cast<T>(s.beta1), beta2 = static_cast<T>(s.beta2);
    const T one_minus_beta1 = static_cast<T>(1.0 - s.beta1), one_minus_beta2 = static_cast<T>(1.0 - s.beta2);
    const T step_size = static_cast<T>(s.lr * std::sqrt(bias2) / bias1);
    const T eps = static_cast<T>(s.eps * std::sqrt(bias2));
    const T decay = static_cast<T>(s.decoupled ? 1.0 - s.lr * s.weight_decay : s.weight_decay);
    const bool l2 = s.weight_decay != 0.0 && !s.decoupled, shrink = s.weight_decay != 0.0 && s.decoupled;
    run_team(n >= (1 << 18) ? get_num_threads() : 1, [&](int team, int me) {
        const Range part = split(n, team, me, 16);
        for (int64_t k = part.begin; k < part.end; ++k) {
            T p = param[k];
            T g = grad[k];
            if (shrink) p *= decay;
            if (l2) g += decay * p;
            const T mk = beta1 * m[k] + one_minus_beta1 * g;
            const T vk = beta2 * v[k] + one_minus_beta2 * g * g;
            m[k] = mk;
            v[k] = vk;
            param[k] = p - step_size * mk / (std::sqrt(vk) + eps);
        }
    });
}

template double softmax_cross_entropy<float>(float*, const float*, const int32_t*, const float*, int64_t,
                                             int64_t, double);
template double softmax_cross_entropy<double>(double*, const double*, const int32_t*, const double*, int64_t,
                                              int64_t, double);
template void adam_update<float>(float*, const float*, float*, float*, int64_t, const AdamStep&);
template void adam_update<double>(double*, const double*, double*, double*, int64_t, const AdamStep&);

}  // namespace lstmcpp
