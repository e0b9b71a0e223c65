#include "core/team.h"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>

namespace lstmcpp {

namespace {
std::atomic<int> g_num_threads{0};
std::atomic<int64_t> g_min_macs_per_thread{65536};
std::atomic<int64_t> g_starvation_patience{-1};
std::atomic<int64_t> g_starved_calls{0};
std::atomic<int64_t> g_starved_until{0};  // steady_clock nanoseconds
constexpr std::chrono::milliseconds kStarvedFor{100};
constexpr std::chrono::milliseconds kLateAgainWithin{50};

int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

void note_team_starved() {
    g_starved_until.store(now_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(kStarvedFor).count(),
                          std::memory_order_relaxed);
}
void note_late_start() {
    static std::atomic<int64_t> last{INT64_MIN / 2};
    const int64_t now = now_ns(), before = last.exchange(now);
    if (now - before < std::chrono::duration_cast<std::chrono::nanoseconds>(kLateAgainWithin).count()) note_team_starved();
}

bool team_recently_starved() { return now_ns() < g_starved_until.load(std::memory_order_relaxed); }

void set_starvation_patience(int64_t nanoseconds) {
    g_starvation_patience.store(nanoseconds < 0 ? -1 : nanoseconds);
    g_starved_until.store(0);  // and forget a starvation seen before
}
int64_t starvation_patience() { return g_starvation_patience.load(std::memory_order_relaxed); }
int64_t starved_calls() { return g_starved_calls.load(); }
void count_starved_call() { g_starved_calls.fetch_add(1); }

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
