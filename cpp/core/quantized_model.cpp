#include "core/quantized_model.h"

#include <algorithm>
#include <stdexcept>

#include "cells/cells.h"
#include "core/layers.h"

namespace lstmcpp {

template <class Storage>
QuantizedModel<Storage>::QuantizedModel(const Config& config) : config_(config) {
    config_.validate();
    cells_.resize(config_.num_layers * config_.directions());
    for (Cell& cell : cells_) {
        cell.mogrify_a.resize(config_.mogrify_rounds);
        cell.mogrify_b.resize(config_.mogrify_rank > 0 ? config_.mogrify_rounds : 0);
    }
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
AlignedVector<float>* QuantizedModel<Storage>::vector_of(int64_t index, const std::string& name, int64_t* size) {
    const Config& c = config_;
    Cell& cell = cells_[index];
    const int64_t H = c.hidden_size, G = c.gates() * H;
    *size = 0;
    if ((name == "bias_ih" || name == "bias_hh") && c.bias) {
        *size = G;
        return name == "bias_ih" ? &cell.bias_ih : &cell.bias_hh;
    }
    if (name == "weight_peephole" && c.peepholes) {
        *size = c.peephole_rows() * H;
        return &cell.weight_peephole;
    }
    if (c.layer_norm) {
        if (name == "ln_weight_ih" || name == "ln_weight_hh") {
            *size = G;
            return name == "ln_weight_ih" ? &cell.ln_weight_ih : &cell.ln_weight_hh;
        }
        if (name == "ln_weight_c" || name == "ln_bias_c") {
            *size = H;
            return name == "ln_weight_c" ? &cell.ln_weight_c : &cell.ln_bias_c;
        }
    }
    const std::string mogrify = "weight_mogrify_";
    if (c.mogrify_rounds > 0 && name.compare(0, mogrify.size(), mogrify) == 0) {
        // weight_mogrify_{j}, or with a rank weight_mogrify_{j}_a and _b: Q_j (I,P) for odd j, R_j (P,I) for even
        const std::string rest = name.substr(mogrify.size());
        const size_t digits = rest.find_first_not_of("0123456789");
        if (digits == 0 || std::min(digits, rest.size()) > 9) return nullptr;
        const std::string suffix = digits == std::string::npos ? "" : rest.substr(digits);
        const int64_t j = std::stoll(rest.substr(0, digits)), q = c.mogrify_rank;
        if (j < 1 || j > c.mogrify_rounds || (q > 0 ? suffix != "_a" && suffix != "_b" : !suffix.empty())) return nullptr;
        const int64_t I = c.layer_input_size(index / c.directions()), P = c.output_size();
        const int64_t rows = j % 2 ? I : P, cols = j % 2 ? P : I;
        *size = q == 0 ? rows * cols : suffix == "_a" ? rows * q : q * cols;
        return suffix == "_b" ? &cell.mogrify_b[j - 1] : &cell.mogrify_a[j - 1];
    }
    return nullptr;
}

template <class Storage>
void QuantizedModel<Storage>::set_vector(int64_t cell, const std::string& name, const float* values, int64_t n) {
    if (cell < 0 || cell >= static_cast<int64_t>(cells_.size()))
        throw std::invalid_argument("cell: expected 0.." + std::to_string(cells_.size() - 1) + ", got " + std::to_string(cell));
    int64_t size;
    AlignedVector<float>* target = vector_of(cell, name, &size);
    if (!target) throw std::invalid_argument(name + ": not a parameter of this model");
    if (n != size) throw std::invalid_argument(name + ": expected " + std::to_string(size) + " values, got " + std::to_string(n));
    target->assign(values, values + n);
}

template <class Storage>
void QuantizedModel<Storage>::forward(float* y, float* h_n, float* c_n, const float* x, const float* h0, const float* c0,
                             const int32_t* lengths, int64_t steps, int64_t batch,
                             const TokenInput<float>* tokens) const {
    const Config& c = config_;
    for (const Cell& cell : cells_) {
        bool unset = cell.weight_ih.empty() || cell.weight_hh.empty() || (c.proj_size > 0 && cell.weight_hr.empty()) ||
                     (c.layer_norm && (cell.ln_weight_ih.empty() || cell.ln_weight_hh.empty() ||
                                       cell.ln_weight_c.empty() || cell.ln_bias_c.empty()));
        for (const auto& m : cell.mogrify_a) unset = unset || m.empty();
        for (const auto& m : cell.mogrify_b) unset = unset || m.empty();
        if (unset) throw std::logic_error("lstmcpp: a quantized model's parameter was never set");
    }
    with_cell<float>(c, [&](auto kind) {
        using CellType = decltype(kind);
        auto weights_of = [this, &c](int64_t layer, int64_t direction) {
            const Cell& w = cells_[layer * c.directions() + direction];
            CellType cell;
            cell.H = c.hidden_size;
            cell.peephole = w.weight_peephole.empty() ? zero_peepholes_.data() : w.weight_peephole.data();
            cell.cell_clip = clip_or_inf<float>(c.cell_clip);
            if constexpr (CellType::kLayerNorm) {
                cell.gain_ih = w.ln_weight_ih.data();
                cell.gain_hh = w.ln_weight_hh.data();
                cell.gain_c = w.ln_weight_c.data();
                cell.bias_c = w.ln_bias_c.data();
            }
            Mogrifier<float> mogrifier;
            mogrifier.rounds = c.mogrify_rounds;
            mogrifier.rank = c.mogrify_rank;
            mogrifier.I = c.layer_input_size(layer);
            mogrifier.P = c.output_size();
            for (const auto& m : w.mogrify_a) mogrifier.a.push_back(m.data());
            for (const auto& m : w.mogrify_b) mogrifier.b.push_back(m.data());
            return CellWeights<float, CellType, typename Storage::Matrix>{
                w.weight_ih.view(), w.weight_hh.view(), w.bias_ih.empty() ? nullptr : w.bias_ih.data(),
                w.bias_hh.empty() ? nullptr : w.bias_hh.data(), w.weight_hr.view(), cell, std::move(mogrifier)};
        };
        forward_layers<float>(c, weights_of, 0, y, h_n, c_n, nullptr, x, h0, c0, lengths, {}, steps, batch, tokens);
    });
}

template <class Storage>
int64_t QuantizedModel<Storage>::nbytes() const {
    int64_t total = 0;
    for (const Cell& cell : cells_) {
        total += cell.weight_ih.nbytes() + cell.weight_hh.nbytes() + cell.weight_hr.nbytes();
        for (const auto& m : cell.mogrify_a) total += static_cast<int64_t>(m.size() * sizeof(float));
        for (const auto& m : cell.mogrify_b) total += static_cast<int64_t>(m.size() * sizeof(float));
    }
    return total;
}

template class QuantizedModel<Int8Weights>;
template class QuantizedModel<Bf16Weights>;
template class QuantizedModel<CodebookWeights>;

}  // namespace lstmcpp
