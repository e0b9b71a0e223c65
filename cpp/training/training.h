// The training steps around the LSTM that NumPy would run as many passes over memory: the
// softmax cross-entropy with its gradient, and the Adam update, each one pass. Plain C++.
#pragma once

#include <cstdint>

namespace lstmcpp {

// Rows n < N of logits (N,V) against targets (N) in [0, V), each weighted by weights[n] (null:
// 1). Returns the weighted sum of -log softmax(logits[n])[targets[n]] and writes
// dlogits (N,V) = scale * weights[n] * (softmax(logits[n]) - onehot(targets[n])), the gradient of
// scale times that sum. Throws std::invalid_argument for a target outside [0, V).
template <class T>
double softmax_cross_entropy(T* dlogits, const T* logits, const int32_t* targets, const T* weights,
                             int64_t N, int64_t V, double scale);

// One step (number `step`, from 1) of Adam on n values in place, as torch.optim.Adam and AdamW
// define it: weight_decay is added to the gradient (L2), or with `decoupled` shrinks the
// parameters directly.
struct AdamStep {
    double lr, beta1, beta2, eps, weight_decay;
    bool decoupled;
    int64_t step;
};
template <class T>
void adam_update(T* param, const T* grad, T* m, T* v, int64_t n, const AdamStep& s);

}  // namespace lstmcpp
