// The thread team: how many threads, how work is split among them, the workers that run it
// (team.cpp), and the per-thread floating-point state while they run.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define LSTMCPP_HAS_MXCSR 1
#endif

namespace lstmcpp {

// Threads used by the core. Default: what OpenMP would use (OMP_NUM_THREADS, else the CPUs this
// process may run on), read at first use.
void set_num_threads(int n);
int get_num_threads();
// Testing switch: the per-step work (multiply-adds) each thread of a time loop needs before
// another thread joins. 1 puts the whole team on even the smallest cell; negative restores the
// default (kMinWorkPerThread).
void set_min_work_per_thread(int64_t macs);
// Testing switch: a time loop's threads count their team starved after waiting this long at a
// step's barrier (0: at any wait at all); negative restores the default (StepBarrier).
void set_starvation_patience(int64_t nanoseconds);
int64_t starvation_patience();  // the switch, or -1
// A team is starved when one of its threads comes late, by far more than waking takes: another
// process holds that thread's core (NumPy's BLAS threads spin for tens of milliseconds after each
// product). A team that must meet is no faster than its slowest member, so for a while after that
// (10 ms, longer when starved again soon after: team.cpp) every team runs on the calling thread
// alone, and then tries again.
void note_team_starved();
bool team_recently_starved();
double team_starved_for();  // seconds: how long teams run alone after the latest starvation (0: none yet)
// Idle workers go to sleep at once, not spinning for the next team, for this long (a stream's
// steps that run on their calling thread by choice say so at each call: a spinning worker takes
// from the calling thread's core when the two virtual CPUs share one).
void rest_workers(std::chrono::microseconds for_);
bool workers_told_to_rest();
int64_t worker_rests();  // calls of rest_workers, since the process started
// Time loops that found their team starved and finished on one thread, since the process started.
int64_t starved_calls();
void count_starved_call();

// One-step calls (a stream's steps: one shape again and again, a few microseconds each) choose
// between their team and the calling thread alone by timing both. Each calling thread keeps, for
// its last few shapes, a moving average of each way's time; a call takes the faster way, and
// now and then three run the other way (the last timed: the first wake the worker and move the
// weights between the cores' caches): every 1024 calls while the team is the faster, every 256
// while one thread is. Why: this VM's two virtual CPUs at times share one physical core
// for seconds, and a step of H = 128 then takes 8.6 us on two threads (the calling thread's half
// alone 4.4 us, as long as one thread's whole step) against 6.1 us on one, instead of 4.6 on two.
// The results are the same either way (no sum depends on the split).
struct StepTiming {
    void* shape = nullptr;  // null: not timed
    int way = 0;            // 0: the team, 1: alone
    bool counts = false;    // whether the time goes into the shape's average
    bool probe = false;     // a call of the way not taken, timed now and then
    int64_t started = 0;    // a time stamp (team.cpp)
};
// The threads for a one-step call of this shape (key) whose team would be `team`: team or 1.
int choose_step_team(int64_t key, int team, StepTiming& timing);
// The call chosen for has returned.
void step_team_finished(const StepTiming& timing);
// Testing switch: whether one-step calls choose (true, the default) or always take their team;
// either forgets every time measured so far.
void set_step_tuning(bool on);
// One-step calls that ran alone by that choice, since the process started.
int64_t steps_alone();
// Testing switch: the worker waits this long before each share it runs (0: none), as one whose
// core is busy would.
void set_worker_delay(int64_t nanoseconds);
// Threads worth waking for a time loop with this much work per step: a thread for each 32k
// multiply-adds a step (kMinWorkPerThread), so small cells run on one thread. Measured on the Zen
// 4 (one sequence, T200, two threads against one): float32 H128 and H160 0.70x the time, int8
// H192 0.84x, int8 CIFG H256 0.75x; H96 (37k) 0.78x but one-step calls of H64 (33k) 1.12x, so
// not below 32k. (64k, this constant before our own worker threads, left those on one thread.)
constexpr int64_t kMinWorkPerThread = 32768;
int threads_for_step(int64_t macs_per_step);

struct Range {
    int64_t begin, end;
    int64_t size() const { return end - begin; }
};

// Part k of `parts` near-equal parts of [0, n), each boundary a multiple of `align`
// (except n itself), so SIMD loops over a part start aligned.
inline Range split(int64_t n, int parts, int k, int64_t align) {
    int64_t blocks = (n + align - 1) / align;
    int64_t b0 = blocks * k / parts, b1 = blocks * (k + 1) / parts;
    int64_t begin = b0 * align, end = b1 * align;
    if (begin > n) begin = n;
    if (end > n) end = n;
    return {begin, end};
}

// Work of `extent` rows (or columns) cut by its shape alone, never by the number of threads, so
// that no result depends on it: at most 4 chunks, each a multiple of 16 and at least 32 (the
// last one may be shorter). The size of a chunk.
inline int64_t shape_chunk(int64_t extent) {
    constexpr int64_t kChunks = 4, kMinChunk = 32;
    const int64_t chunk = (extent + kChunks * 16 - 1) / (kChunks * 16) * 16;
    return chunk > kMinChunk ? chunk : kMinChunk;
}

// Flushes denormals to zero (FTZ and DAZ) on this thread while alive; restores after.
// Denormal arithmetic is 100x slower and never matters to an LSTM's result.
class DenormalsAreZero {
public:
#ifdef LSTMCPP_HAS_MXCSR
    DenormalsAreZero() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }
    ~DenormalsAreZero() { _mm_setcsr(saved_); }
private:
    unsigned saved_;
#endif
};

// The time loop's per-step barrier: the team's threads meet on cache lines of their own (OpenMP's
// barrier costs more at a few microseconds a step). A thread that arrives early spins, pausing,
// for 20 us, then yields its core at every check, so a teammate that has lost its core (to another
// process, or to NumPy's BLAS threads, which spin for tens of milliseconds after each product)
// gets one back sooner. A thread that has spent half of the loop so far waiting (and more than
// kWasted) marks the team starved; every thread then learns it together from a later wait's
// return (the last to arrive decides, once for all), and the time loop finishes the call on one
// thread rather than meet a starved team every step.
class StepBarrier {
public:
    using clock = std::chrono::steady_clock;
    static constexpr std::chrono::microseconds kWasted{300};

    // One thread's waits in one time loop, from its first meeting on (the first absorbs the
    // threads' start, which a sleeping thread's wake can make late: run_team judges starts).
    struct Waits {
        bool met = false;
        clock::time_point began{};
        clock::duration total{};
    };

    // Every thread of a team of `team` calls this at each meeting. True: the team is starved.
    // `judge`: whether this thread's waits count towards starving the team.
    bool wait(int team, Waits& mine, bool judge = true) {
        const int generation = generation_.load(std::memory_order_acquire);
        if (arrived_.fetch_add(1, std::memory_order_acq_rel) == team - 1) {
            arrived_.store(0, std::memory_order_relaxed);
            if (starving_.load(std::memory_order_relaxed)) starved_.store(true, std::memory_order_relaxed);
            generation_.store(generation + 1, std::memory_order_release);
            count(mine, clock::duration::zero());
            return starved_.load(std::memory_order_relaxed);
        }
        const int64_t forced = starvation_patience();
        const clock::time_point since = clock::now();
        for (int spin = 0; generation_.load(std::memory_order_acquire) == generation; ++spin) {
            if (spin % 64 != 0) {
                pause();
                continue;
            }
            const clock::time_point now = clock::now();
            const clock::duration waited = now - since, wasted = mine.total + waited;
            if (judge && (forced >= 0 ? waited >= std::chrono::nanoseconds(forced)
                                      : mine.met && wasted > kWasted && 2 * wasted > now - mine.began))
                starving_.store(true, std::memory_order_relaxed);
            if (waited > std::chrono::microseconds(20)) std::this_thread::yield();
            else pause();
        }
        count(mine, clock::now() - since);
        return starved_.load(std::memory_order_relaxed);
    }

    // Once starved: the threads left out sleep here (not spinning at the team's closing wait,
    // on the cores the thread that carries on needs) until it calls finished().
    void sleep_until_finished() {
        std::unique_lock<std::mutex> lock(mutex_);
        finished_cv_.wait(lock, [&] { return finished_; });
    }
    void finished() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            finished_ = true;
        }
        finished_cv_.notify_all();
    }

private:
    // A meeting's wait into mine: the first starts the count, the rest add to it.
    static void count(Waits& mine, clock::duration waited) {
        if (mine.met) {
            mine.total += waited;
        } else {
            mine.met = true;
            mine.began = clock::now();
        }
    }
    static void pause() {
#ifdef LSTMCPP_HAS_MXCSR
        _mm_pause();
#endif
    }
    alignas(64) std::atomic<int> arrived_{0};
    alignas(64) std::atomic<int> generation_{0};
    std::atomic<bool> starving_{false};  // a waiter's report
    std::atomic<bool> starved_{false};   // the decision, published with a release of the team
    std::mutex mutex_;
    std::condition_variable finished_cv_;
    bool finished_ = false;
};

// A thread of a team that starts this late may have lost its core: it waits for the scheduler's
// next turn (milliseconds). Or it slept long, and its virtual CPU with it (waking one can take as
// long). note_late_start counts the team starved at the second late start in a short while.
constexpr std::chrono::microseconds kLateStart{1000};
void note_late_start();

// A team's body, its type erased: fn(body, team, me).
struct TeamJob {
    void (*fn)(const void* body, int team, int me);
    const void* body;
};
// Runs job on `threads` threads, this one (me = 0) and threads - 1 of the process's workers
// (team.cpp). False, having run nothing, when another thread's team holds the workers.
// `optional`: the workers may not run at all (the job's me = 0 finishes whatever they leave).
bool run_on_workers(int threads, TeamJob job, bool optional);
// Whether this thread is running a team's body (a team's thread runs any team of its own alone).
bool in_team();
// Testing switch: while true, workers join no optional team (as when another process holds their
// cores): the calling thread does all of the work of products, pools and time loops.
void set_workers_absent(bool absent);
// For the calling thread (me = 0) of an optional team of two: waits up to `grace` for the worker
// to join; true when it has not, the team now closed to it (this thread does its share).
bool worker_absent(std::chrono::microseconds grace);

// Runs body(team, me) on a team of `threads` threads, or directly on this thread when the team
// would be one, was recently starved, this thread is already one of a team's (a pool's chunk
// steps on its thread), or another thread's team holds the workers (two callers at once: each
// runs on its own thread).
template <class Body>
void run_team(int threads, const Body& body, bool optional = false) {
    if (threads > 1 && !team_recently_starved() && !in_team()) {
        const TeamJob job{[](const void* b, int team, int me) { (*static_cast<const Body*>(b))(team, me); }, &body};
        if (run_on_workers(threads, job, optional)) return;
    }
    DenormalsAreZero daz;
    body(1, 0);
}

// Runs fn(q) for every q in [0, chunks) on a team of up to `threads`, each member taking the
// next chunk not yet taken, the calling thread until none is left: a worker that starts late (its
// core held by another process, or by NumPy's BLAS threads) finds the work done and is not waited
// for. Which thread runs a chunk must not change its result: cut the chunks by shape alone.
template <class Fn>
void run_team_chunks(int threads, int64_t chunks, const Fn& fn) {
    if (chunks <= 1) threads = 1;
    std::atomic<int64_t> next{0};
    run_team(static_cast<int>(std::min<int64_t>(threads, chunks)), [&](int, int) {
        for (int64_t q; (q = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) fn(q);
    }, true);
}

}  // namespace lstmcpp
