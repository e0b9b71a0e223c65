// A model's architecture (Config) and where each parameter lives in its flat buffer (the layout).
//
// Size legend used in every shape comment of the core:
//   T = time steps, B = batch, I = input features of a layer, H = hidden (cell) units,
//   P = output size (proj_size when projecting, else H), D = directions, L = layers,
//   G = gates x H (the rows of W_ih and W_hh: 4H for the LSTM cell, i, f, g, o),
//   V = vocabulary (token input's embedding rows), TB = T x B, DP = D x P.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lstmcpp {

struct Config {
    int64_t input_size = 1;
    int64_t hidden_size = 1;
    int64_t num_layers = 1;
    int64_t proj_size = 0;  // 0: no projection
    bool bias = true;
    bool bidirectional = false;
    bool reverse = false;  // one direction reading each sequence from its end (ONNX's direction="reverse")
    bool peepholes = false;
    double cell_clip = 0.0;  // 0: off
    double proj_clip = 0.0;  // 0: off (needs proj_size > 0)
    // The cell variants (SPEC §7): CIFG (f = 1 - i, no forget block); layer normalisation of the
    // two products and of the cell's output; the Mogrifier's rounds before each step (rank 0:
    // whole matrices, else each the product of two rank-q factors).
    bool coupled_input_forget = false;
    bool layer_norm = false;
    int64_t mogrify_rounds = 0;
    int64_t mogrify_rank = 0;

    int64_t gates() const { return coupled_input_forget ? 3 : 4; }                  // i, f, g, o or i, g, o
    int64_t peephole_rows() const { return coupled_input_forget ? 2 : 3; }          // i, f, o or i, o
    int64_t output_size() const { return proj_size > 0 ? proj_size : hidden_size; }  // P
    int64_t directions() const { return bidirectional ? 2 : 1; }                     // D
    int64_t layer_input_size(int64_t layer) const {
        return layer == 0 ? input_size : directions() * output_size();
    }
    // Throws std::invalid_argument naming the offending field.
    void validate() const;
};

// One parameter tensor inside the model's flat buffer, named as PyTorch names it.
struct ParamEntry {
    std::string name;
    std::vector<int64_t> shape;
    int64_t offset;  // in elements, from the start of the flat buffer
    int64_t size;
};

// Offsets (or -1 when absent) of one cell's (one layer, one direction) parameters.
struct CellOffsets {
    int64_t weight_ih = -1;       // (G,I)
    int64_t weight_hh = -1;       // (G,P)
    int64_t bias_ih = -1;         // (G)
    int64_t bias_hh = -1;         // (G)
    int64_t weight_hr = -1;       // (P,H)
    int64_t weight_peephole = -1; // (3,H) rows i, f, o; CIFG (2,H) rows i, o
    int64_t ln_weight_ih = -1;    // (G) layer_norm's gains and bias
    int64_t ln_weight_hh = -1;    // (G)
    int64_t ln_weight_c = -1;     // (H)
    int64_t ln_bias_c = -1;       // (H)
    // The Mogrifier's round j (1-based) at [j - 1]: Q_j (I,P) for odd j, R_j (P,I) for even j, or
    // with a rank its factors a (rows,q) and b (q,cols) (then mogrify holds a's offset).
    std::vector<int64_t> mogrify, mogrify_b;
};

// PyTorch's order: per layer, per direction: weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
// then ours, each kind for every cell in turn: weight_peephole, the ln_ parameters, weight_mogrify. Offsets are padded to 16 elements so every tensor is 64-byte aligned.
std::vector<ParamEntry> param_layout(const Config& config, std::vector<CellOffsets>* cells,
                                     int64_t* total_size);

}  // namespace lstmcpp
