// The cell variants (SPEC §7), and the one place that picks a model's: each is a type with the
// members cells/lstm_cell.h lists, and the driver is instantiated once per type.
#pragma once

#include "cells/cifg_cell.h"
#include "cells/layer_norm_cell.h"
#include "cells/lstm_cell.h"
#include "core/config.h"

namespace lstmcpp {

// Calls f(Cell{}) with the cell type the configuration names (every branch returns void). (The
// Mogrifier is not a cell type: it comes with the weights, before any cell.)
template <class T, class F>
void with_cell(const Config& c, F&& f) {
    if (c.layer_norm) {
        if (c.coupled_input_forget) f(LayerNormCell<T, CifgCell<T>>{});
        else f(LayerNormCell<T, LstmCell<T>>{});
        return;
    }
    if (c.coupled_input_forget) f(CifgCell<T>{});
    else f(LstmCell<T>{});
}

}  // namespace lstmcpp
