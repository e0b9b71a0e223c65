#include "core/team.h"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>

namespace lstmcpp {

namespace {
std::atomic<int> g_num_threads{0};
std::atomic<int64_t> g_min_macs_per_thread{65536};
}  // namespace

void set_num_threads(int n) {
    if (n < 1) throw std::invalid_argument("num_threads must be >= 1, got " + std::to_string(n));
    g_num_threads.store(n);
}

int get_num_threads() {
    int n = g_num_threads.load();
    return n > 0 ? n : std::max(1, omp_get_max_threads());
}

void set_min_work_per_thread(int64_t macs) { g_min_macs_per_thread.store(std::max<int64_t>(1, macs)); }

int threads_for_step(int64_t macs_per_step) {
    int64_t wanted = std::max<int64_t>(1, macs_per_step / g_min_macs_per_thread.load());
    return static_cast<int>(std::min<int64_t>(get_num_threads(), wanted));
}

}  // namespace lstmcpp
