// An LSTM whose matrices (W_ih, W_hh, W_hr) are stored in a quantized weight format, for inference
// (SPEC §5). Biases, peepholes and the whole of the gate math stay float32. Its forward is the
// float model's layer loop and time loop (core/layers.h), over the format's products.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/aligned.h"
#include "core/config.h"
#include "core/model.h"
#include "weights/int8.h"

namespace lstmcpp {

class QuantizedModel {
public:
    explicit QuantizedModel(const Config& config);

    const Config& config() const { return config_; }

    // Cell `cell` (layer * D + direction): `name` is weight_ih, weight_hh or weight_hr, given as
    // int8 rows q (N,K) with per-row scales (N); or bias_ih, bias_hh or weight_peephole, given as
    // float values. Each throws std::invalid_argument for a name the model has not or a wrong size.
    void set_matrix(int64_t cell, const std::string& name, const int8_t* q, const float* scales, int64_t N, int64_t K);
    void set_vector(int64_t cell, const std::string& name, const float* values, int64_t n);

    // As Model<float>::forward for inference (no cache, no dropout); throws std::logic_error if a
    // matrix was never set.
    void forward(float* y, float* h_n, float* c_n, const float* x, const float* h0, const float* c0,
                 const int32_t* lengths, int64_t steps, int64_t batch, const TokenInput<float>* tokens = nullptr) const;

    // Bytes of the stored matrices, scales included (what the format saves); biases and peepholes not.
    int64_t nbytes() const;

private:
    struct Cell {
        Int8Weights weight_ih, weight_hh, weight_hr;
        AlignedVector<float> bias_ih, bias_hh, weight_peephole;
    };
    Config config_;
    std::vector<Cell> cells_;
    AlignedVector<float> zero_peepholes_;  // (3,H)
};

}  // namespace lstmcpp
