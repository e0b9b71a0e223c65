// An LSTM whose matrices (W_ih, W_hh, W_hr) are stored in a quantized weight format (int8, bf16, codebook),
// for inference (SPEC §5). Biases, peepholes, layer norm's gains, the Mogrifier's matrices and the whole of
// the gate math stay float32. Its forward is the float model's layer loop and time loop (core/layers.h),
// over the format's products, for every cell type (cells/cells.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/aligned.h"
#include "core/config.h"
#include "core/model.h"
#include "weights/bf16.h"
#include "weights/codebook.h"
#include "weights/int8.h"

namespace lstmcpp {

// Storage: a weight format's stored matrix (Int8Weights, Bf16Weights, CodebookWeights), whose view() is the
// Matrix the time loop multiplies by.
template <class Storage>
class QuantizedModel {
public:
    explicit QuantizedModel(const Config& config);

    const Config& config() const { return config_; }

    // The storage of cell `cell`'s (layer * D + direction) matrix `name` (weight_ih, weight_hh or
    // weight_hr), for the caller to fill, once checked to be (N,K) in this model; throws
    // std::invalid_argument for a name the model has not or a wrong shape.
    Storage& matrix(int64_t cell, const std::string& name, int64_t N, int64_t K);
    // bias_ih, bias_hh, weight_peephole, layer norm's ln_weight_ih, ln_weight_hh, ln_weight_c, ln_bias_c,
    // or the Mogrifier's round j matrix weight_mogrify_{j} (or its factors weight_mogrify_{j}_a, _b),
    // row-major, as float values.
    void set_vector(int64_t cell, const std::string& name, const float* values, int64_t n);

    // As Model<float>::forward for inference (no cache, no dropout); throws std::logic_error if a
    // matrix was never set.
    void forward(float* y, float* h_n, float* c_n, const float* x, const float* h0, const float* c0,
                 const int32_t* lengths, int64_t steps, int64_t batch, const TokenInput<float>* tokens = nullptr) const;

    // Bytes of the stored matrices (what the format saves), the Mogrifier's float32 ones included;
    // biases, peepholes and gains not.
    int64_t nbytes() const;

private:
    struct Cell {
        Storage weight_ih, weight_hh, weight_hr;
        AlignedVector<float> bias_ih, bias_hh, weight_peephole;
        AlignedVector<float> ln_weight_ih, ln_weight_hh, ln_weight_c, ln_bias_c;
        std::vector<AlignedVector<float>> mogrify_a, mogrify_b;  // round j at [j - 1]: Q_j / R_j or factor a; factor b
    };
    // A parameter's storage in cell `cell` and its size (0 when this model has no such parameter).
    AlignedVector<float>* vector_of(int64_t cell, const std::string& name, int64_t* size);
    Config config_;
    std::vector<Cell> cells_;
    AlignedVector<float> zero_peepholes_;  // (3,H)
};

extern template class QuantizedModel<Int8Weights>;
extern template class QuantizedModel<Bf16Weights>;
extern template class QuantizedModel<CodebookWeights>;

}  // namespace lstmcpp
