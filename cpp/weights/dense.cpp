#include "weights/dense.h"

#include <algorithm>
#include <atomic>

namespace lstmcpp {

namespace {
std::atomic<int64_t> g_pack_min_rows{128};
}  // namespace

void set_pack_min_rows(int64_t rows) { g_pack_min_rows.store(std::max<int64_t>(1, rows)); }

bool packs_weights(int64_t batch, int64_t steps, bool forward) {
    return steps * batch >= g_pack_min_rows.load() && (batch >= 2 || !forward);
}

}  // namespace lstmcpp
