// The team's handshakes (core/team.cpp: the published word, the gate of optional teams, sleeping
// and waking, a worker told to rest, a worker held out) under ThreadSanitizer, with no Python
// around them:
//
//     g++ -std=c++17 -O1 -g -fsanitize=thread -fopenmp -Icpp tools/team_tsan.cpp cpp/core/team.cpp
//
// Each round runs a team whose pieces any thread may take, a team of fixed members, and an optional
// team of two whose caller asks whether its worker came; every few rounds the worker is let sleep,
// and for a quarter of the run it is held out of optional teams. Exits 1 on a wrong result
// (ThreadSanitizer itself fails the run on a race: TSAN_OPTIONS=halt_on_error=1).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "core/team.h"

using namespace lstmcpp;

int main() {
    set_num_threads(2);
    const std::vector<double> data(64 * 1024, 1.0);
    long wrong = 0, pairs = 0, alone = 0;
    for (int round = 0; round < 20000; ++round) {
        set_starvation_patience(-1);  // forget a starvation: every round tries its teams
        set_workers_absent(round % 4000 < 1000);
        if (round % 1000 == 500) std::this_thread::sleep_for(std::chrono::milliseconds(3));  // the worker sleeps
        if (round % 7 == 3) rest_workers(std::chrono::microseconds(100));  // an idle worker sleeps at once

        std::vector<double> sums(64, 0.0);
        run_team_chunks(2, 64, [&](int64_t q) {
            double s = 0;
            for (int k = 0; k < 1024; ++k) s += data[q * 1024 + k];
            sums[q] = s;
        });
        for (double s : sums) wrong += s != 1024.0;

        std::vector<int> seen(2, -1);
        run_team(2, [&](int team, int me) { seen[me] = team; });
        wrong += seen[0] == 2 ? seen[1] != 2 : (seen[0] != 1 || seen[1] != -1);
        pairs += seen[0] == 2;

        std::vector<int> share(2, 0);  // 1: done by its member; 2: the worker's, done by the caller
        run_team(2, [&](int team, int me) {
            share[me] = 1;
            if (me == 0 && (team == 1 || worker_absent(std::chrono::microseconds(round % 3 == 0 ? 0 : 50)))) share[1] = 2;
        }, true);
        wrong += share[0] != 1 || share[1] == 0;
        alone += share[1] == 2;
    }
    set_workers_absent(false);
    std::printf("team_tsan: %ld wrong results; %ld rounds with a team of two, %ld with the worker absent\n", wrong, pairs, alone);
    return wrong == 0 ? 0 : 1;
}
