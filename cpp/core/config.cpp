#include "core/config.h"

#include <stdexcept>

namespace lstmcpp {

void Config::validate() const {
    auto fail = [](const std::string& m) { throw std::invalid_argument(m); };
    if (input_size < 1) fail("input_size must be >= 1, got " + std::to_string(input_size));
    if (hidden_size < 1) fail("hidden_size must be >= 1, got " + std::to_string(hidden_size));
    if (num_layers < 1) fail("num_layers must be >= 1, got " + std::to_string(num_layers));
    if (proj_size < 0 || (proj_size > 0 && proj_size >= hidden_size))
        fail("proj_size must be 0 or in 1..hidden_size-1 (" + std::to_string(hidden_size - 1) +
             "), got " + std::to_string(proj_size));
    if (!(cell_clip >= 0)) fail("cell_clip must be > 0 or None");
    if (!(proj_clip >= 0)) fail("proj_clip must be > 0 or None");
    if (proj_clip > 0 && proj_size == 0) fail("proj_clip needs proj_size > 0");
    if (reverse && bidirectional) fail("reverse is for a one-direction model (bidirectional runs both ways already)");
    if (mogrify_rounds < 0) fail("mogrify_rounds must be >= 0, got " + std::to_string(mogrify_rounds));
    if (mogrify_rank < 0) fail("mogrify_rank must be >= 0, got " + std::to_string(mogrify_rank));
    if (mogrify_rank > 0 && mogrify_rounds == 0) fail("mogrify_rank needs mogrify_rounds > 0");
}

std::vector<ParamEntry> param_layout(const Config& c, std::vector<CellOffsets>* cells,
                                     int64_t* total_size) {
    c.validate();
    const int64_t H = c.hidden_size, P = c.output_size(), D = c.directions(), G = c.gates() * H;
    std::vector<ParamEntry> entries;
    std::vector<CellOffsets> offsets;
    int64_t offset = 0;
    auto add = [&](const std::string& name, std::vector<int64_t> shape) {
        int64_t size = 1;
        for (int64_t d : shape) size *= d;
        entries.push_back({name, std::move(shape), offset, size});
        int64_t at = offset;
        offset += (size + 15) / 16 * 16;
        return at;
    };
    for (int64_t layer = 0; layer < c.num_layers; ++layer) {
        const int64_t I = c.layer_input_size(layer);
        for (int64_t d = 0; d < D; ++d) {
            const std::string sfx = "_l" + std::to_string(layer) + (d == 1 ? "_reverse" : "");
            CellOffsets o;
            o.weight_ih = add("weight_ih" + sfx, {G, I});
            o.weight_hh = add("weight_hh" + sfx, {G, P});
            if (c.bias) {
                o.bias_ih = add("bias_ih" + sfx, {G});
                o.bias_hh = add("bias_hh" + sfx, {G});
            }
            if (c.proj_size > 0) o.weight_hr = add("weight_hr" + sfx, {P, H});
            offsets.push_back(o);
        }
    }
    // Peepholes last, so the entries before them are exactly PyTorch's flat-weight order.
    if (c.peepholes) {
        for (int64_t layer = 0; layer < c.num_layers; ++layer)
            for (int64_t d = 0; d < D; ++d)
                offsets[layer * D + d].weight_peephole = add(
                    "weight_peephole_l" + std::to_string(layer) + (d == 1 ? "_reverse" : ""), {c.peephole_rows(), H});
    }
    auto each_cell = [&](auto&& f) {
        for (int64_t layer = 0; layer < c.num_layers; ++layer)
            for (int64_t d = 0; d < D; ++d) f(layer, d, "_l" + std::to_string(layer), d == 1 ? "_reverse" : "");
    };
    if (c.layer_norm) {
        each_cell([&](int64_t layer, int64_t d, const std::string& l, const std::string& r) {
            CellOffsets& o = offsets[layer * D + d];
            o.ln_weight_ih = add("ln_weight_ih" + l + r, {G});
            o.ln_weight_hh = add("ln_weight_hh" + l + r, {G});
            o.ln_weight_c = add("ln_weight_c" + l + r, {H});
            o.ln_bias_c = add("ln_bias_c" + l + r, {H});
        });
    }
    each_cell([&](int64_t layer, int64_t d, const std::string& l, const std::string& r) {
        CellOffsets& o = offsets[layer * D + d];
        const int64_t I = c.layer_input_size(layer), q = c.mogrify_rank;
        for (int64_t j = 1; j <= c.mogrify_rounds; ++j) {
            const int64_t rows = j % 2 ? I : P, cols = j % 2 ? P : I;
            const std::string name = "weight_mogrify" + l + "_" + std::to_string(j);
            if (q > 0) {
                o.mogrify.push_back(add(name + "_a" + r, {rows, q}));
                o.mogrify_b.push_back(add(name + "_b" + r, {q, cols}));
            } else {
                o.mogrify.push_back(add(name + r, {rows, cols}));
            }
        }
    });
    if (cells) *cells = std::move(offsets);
    if (total_size) *total_size = offset;
    return entries;
}

}  // namespace lstmcpp
