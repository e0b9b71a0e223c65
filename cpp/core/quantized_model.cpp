#include "core/quantized_model.h"

#include <stdexcept>

#include "cells/cells.h"
#include "core/layers.h"

namespace lstmcpp {

template <class Storage>
QuantizedModel<Storage>::QuantizedModel(const Config& config) : config_(config) {
    config_.validate();
    if (config_.layer_norm || config_.mogrify_rounds > 0)
        throw std::invalid_argument("a layer-normalised or Mogrifier model cannot be quantized yet");
    cells_.resize(config_.num_layers * config_.directions());
    zero_peepholes_.assign(3 * config_.hidden_size, 0.0f);
}

namespace {

std::string dims(int64_t N, int64_t K) { return "(" + std::to_string(N) + ", " + std::to_string(K) + ")"; }

}  // namespace

template <class Storage>
Storage& QuantizedModel<Storage>::matrix(int64_t cell, const std::string& name, int64_t N, int64_t K) {
    const Config& c = config_;
    if (cell < 0 || cell >= static_cast<int64_t>(cells_.size()))
        throw std::invalid_argument("cell: expected 0.." + std::to_string(cells_.size() - 1) + ", got " + std::to_string(cell));
    const int64_t layer = cell / c.directions(), H = c.hidden_size, P = c.output_size(), G = c.gates() * H;
    Storage* target;
    int64_t rows, cols;
    if (name == "weight_ih") {
        target = &cells_[cell].weight_ih, rows = G, cols = c.layer_input_size(layer);
    } else if (name == "weight_hh") {
        target = &cells_[cell].weight_hh, rows = G, cols = P;
    } else if (name == "weight_hr" && c.proj_size > 0) {
        target = &cells_[cell].weight_hr, rows = P, cols = H;
    } else {
        throw std::invalid_argument(name + ": not a quantized matrix of this model");
    }
    if (N != rows || K != cols) throw std::invalid_argument(name + ": expected shape " + dims(rows, cols) + ", got " + dims(N, K));
    return *target;
}

template <class Storage>
void QuantizedModel<Storage>::set_vector(int64_t cell, const std::string& name, const float* values, int64_t n) {
    const Config& c = config_;
    if (cell < 0 || cell >= static_cast<int64_t>(cells_.size()))
        throw std::invalid_argument("cell: expected 0.." + std::to_string(cells_.size() - 1) + ", got " + std::to_string(cell));
    const int64_t G = c.gates() * c.hidden_size;
    AlignedVector<float>* target;
    int64_t size;
    if ((name == "bias_ih" || name == "bias_hh") && c.bias) {
        target = name == "bias_ih" ? &cells_[cell].bias_ih : &cells_[cell].bias_hh, size = G;
    } else if (name == "weight_peephole" && c.peepholes) {
        target = &cells_[cell].weight_peephole, size = c.peephole_rows() * c.hidden_size;
    } else {
        throw std::invalid_argument(name + ": not a parameter of this model");
    }
    if (n != size) throw std::invalid_argument(name + ": expected " + std::to_string(size) + " values, got " + std::to_string(n));
    target->assign(values, values + n);
}

template <class Storage>
void QuantizedModel<Storage>::forward(float* y, float* h_n, float* c_n, const float* x, const float* h0, const float* c0,
                             const int32_t* lengths, int64_t steps, int64_t batch,
                             const TokenInput<float>* tokens) const {
    const Config& c = config_;
    for (const Cell& cell : cells_)
        if (cell.weight_ih.empty() || cell.weight_hh.empty() || (c.proj_size > 0 && cell.weight_hr.empty()))
            throw std::logic_error("lstmcpp: a quantized model's matrix was never set");
    with_cell<float, false>(c, [&](auto kind) {  // (the constructor refused layer norm)
        using CellType = decltype(kind);
        auto weights_of = [this, &c](int64_t layer, int64_t direction) {
            const Cell& w = cells_[layer * c.directions() + direction];
            CellType cell;
            cell.H = c.hidden_size;
            cell.peephole = w.weight_peephole.empty() ? zero_peepholes_.data() : w.weight_peephole.data();
            cell.cell_clip = clip_or_inf<float>(c.cell_clip);
            return CellWeights<float, CellType, typename Storage::Matrix>{
                w.weight_ih.view(), w.weight_hh.view(), w.bias_ih.empty() ? nullptr : w.bias_ih.data(),
                w.bias_hh.empty() ? nullptr : w.bias_hh.data(), w.weight_hr.view(), cell};
        };
        forward_layers<float>(c, weights_of, 0, y, h_n, c_n, nullptr, x, h0, c0, lengths, {}, steps, batch, tokens);
    });
}

template <class Storage>
int64_t QuantizedModel<Storage>::nbytes() const {
    int64_t total = 0;
    for (const Cell& cell : cells_) total += cell.weight_ih.nbytes() + cell.weight_hh.nbytes() + cell.weight_hr.nbytes();
    return total;
}

template class QuantizedModel<Int8Weights>;
template class QuantizedModel<Bf16Weights>;
template class QuantizedModel<CodebookWeights>;

}  // namespace lstmcpp
