#include "core/team.h"

#include <omp.h>
#include <pthread.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>

namespace lstmcpp {

namespace {
std::atomic<int> g_num_threads{0};
std::atomic<int64_t> g_min_macs_per_thread{kMinWorkPerThread};
std::atomic<int64_t> g_starvation_patience{-1};
std::atomic<int64_t> g_starved_calls{0};
std::atomic<int64_t> g_starved_until{0};  // steady_clock nanoseconds
std::atomic<bool> g_workers_absent{false};
std::atomic<int64_t> g_worker_delay{0};
std::atomic<int64_t> g_rest_until{0};  // steady_clock nanoseconds: idle workers sleep at once until then
std::atomic<int64_t> g_rests{0};       // calls of rest_workers, since the process started
// How long teams run alone once starved: kStarvedFirst, twice as long each time a team is starved
// again within one such while of the last one's end, up to kStarvedAtMost. A vCPU's brief loss of
// its core (the host's business, a millisecond or so, now and then) costs 10 ms on one thread;
// NumPy's BLAS threads, which spin for about 0.1 s after each product, soon keep the calls alone
// for 160 ms at a time, each try of the team (a worker that does not join within 250 us, or a
// barrier that waits too long) costing a few hundred microseconds.
constexpr std::chrono::milliseconds kStarvedFirst{10}, kStarvedAtMost{160};
std::atomic<int64_t> g_starved_for{0};  // nanoseconds: the last time teams ran alone
constexpr std::chrono::milliseconds kLateAgainWithin{50};

int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

thread_local bool t_in_team = false;

void pause() {
#ifdef LSTMCPP_HAS_MXCSR
    _mm_pause();
#endif
}

// The body of one team member, flagged as in a team and with denormals flushed (a body that
// throws ends the process, as in an OpenMP region).
void run_member(TeamJob job, int team, int me) noexcept {
    t_in_team = true;
    {
        DenormalsAreZero daz;
        job.fn(job.body, team, me);
    }
    t_in_team = false;
}

// The process's workers: threads started as teams first need them and kept for later teams. A
// team is one word (its generation, whether its workers are optional, its size) published by the
// caller; each worker it names runs its share and counts itself done. Between teams a worker
// spins, pausing, for kIdleSpin, so that calls in a row (a stream's steps) find it awake: about
// 0.35 us from the caller's word to its done, against 1.2 us for an OpenMP parallel region on the
// Zen 4. Then it sleeps until the next team (waking one takes 6-40 us here). While teams are
// starved (another process, or NumPy's BLAS threads, holding a core) it sleeps at once instead:
// the calls run on the caller's thread alone, and a worker spinning beside them would take half
// of a core from it.
//
// A team whose workers are optional (run_team_chunks: any member may do any part of the work)
// does not wait for a worker that has not started by the time the caller has finished: the worker
// joins through a gate that the caller closes when its own share is done, and only those that
// joined are waited for. So a worker whose core is held elsewhere never holds up a product.
class Workers {
public:
    static constexpr std::chrono::microseconds kIdleSpin{2000};

    bool run(int threads, TeamJob job, bool optional) {
        std::unique_lock<std::mutex> lock(run_mutex_, std::try_to_lock);
        if (!lock.owns_lock()) return false;
        while (started_ < threads - 1) start(++started_);
        team_.job = job;
        team_.opened = std::chrono::steady_clock::now();
        done_.store(0, std::memory_order_relaxed);
        const uint64_t generation = (team_.word.load(std::memory_order_relaxed) >> 9) + 1;
        team_.gate.store(generation << 16, std::memory_order_relaxed);
        team_.word.store(generation << 9 | uint64_t(optional) << 8 | static_cast<uint64_t>(threads));
        if (sleepers_.load() > 0) {
            caller_cpu_.store(sched_getcpu(), std::memory_order_relaxed);
            { std::lock_guard<std::mutex> guard(sleep_mutex_); }
            wake_.notify_all();
        }
        run_member(job, threads, 0);
        const int joined = optional ? static_cast<int>(team_.gate.fetch_or(kClosed) & kJoined) : threads - 1;
        // wait for the workers: spinning, then (past 20 us: one of them has lost its core) yielding
        const auto since = std::chrono::steady_clock::now();
        for (int spin = 1; done_.load(std::memory_order_acquire) != joined; ++spin) {
            pause();
            if (spin % 64 == 0 && std::chrono::steady_clock::now() - since > std::chrono::microseconds(20))
                std::this_thread::yield();
        }
        return true;
    }

    // See worker_absent (team.h); called by the thread in run().
    bool close_if_absent(std::chrono::microseconds grace) {
        const auto since = std::chrono::steady_clock::now();
        for (int spin = 1; (team_.gate.load(std::memory_order_relaxed) & (kClosed | kJoined)) == 0; ++spin) {
            if (spin % 64 == 0 && std::chrono::steady_clock::now() - since >= grace) {
                uint64_t gate = team_.gate.load();
                while ((gate & (kClosed | kJoined)) == 0)
                    if (team_.gate.compare_exchange_weak(gate, gate | kClosed)) return true;
                return (gate & kJoined) == 0;
            }
            pause();
        }
        return (team_.gate.load() & kJoined) == 0;
    }

    // A forked child has none of its parent's threads: it starts its own.
    static Workers* instance;

private:
    static constexpr uint64_t kClosed = 1u << 15, kJoined = kClosed - 1;

    void start(int me) {
        const uint64_t seen = team_.word.load();
        std::thread([this, me, seen] { serve(me, seen); }).detach();
    }

    void serve(int me, uint64_t seen) {
        for (;;) {
            bool slept = false;
            seen = wait_for_team(seen, slept);
            const int team = static_cast<int>(seen & 0xFF);
            if (me >= team) continue;  // not in this team
            if (slept) step_aside(caller_cpu_.load(std::memory_order_relaxed));
            if ((seen >> 8 & 1) && (g_workers_absent.load(std::memory_order_relaxed) || !join(seen >> 9)))
                continue;  // too late: the caller has done the work
            if (std::chrono::steady_clock::now() - team_.opened > kLateStart) note_late_start();
            if (const int64_t delay = g_worker_delay.load(std::memory_order_relaxed)) {
                const int64_t until = now_ns() + delay;
                while (now_ns() < until) pause();
            }
            run_member(team_.job, team, me);
            done_.fetch_add(1, std::memory_order_release);
        }
    }

    // Joins an optional team of this generation unless its caller has closed the gate.
    bool join(uint64_t generation) {
        uint64_t gate = team_.gate.load();
        do {
            if (gate >> 16 != (generation & 0xFFFFFFFFFFFF) || (gate & kClosed)) return false;
        } while (!team_.gate.compare_exchange_weak(gate, gate + 1));
        return true;
    }

    // A worker woken onto its caller's CPU moves to another of its CPUs. Linux places a woken
    // thread beside its waker when it sees no idle CPU, and on a virtual machine an idle virtual
    // CPU may not count as one: the team then shares one CPU until the scheduler balances them,
    // milliseconds later (seen on the Zen 4 VM: the first call after an idle while, 3x its time).
    static void step_aside(int cpu) {
        if (cpu < 0 || sched_getcpu() != cpu) return;
        cpu_set_t mine;
        if (sched_getaffinity(0, sizeof mine, &mine) != 0 || !CPU_ISSET(cpu, &mine) || CPU_COUNT(&mine) < 2) return;
        cpu_set_t others = mine;
        CPU_CLR(cpu, &others);
        if (sched_setaffinity(0, sizeof others, &others) == 0) sched_setaffinity(0, sizeof mine, &mine);
    }

    uint64_t wait_for_team(uint64_t seen, bool& slept) {
        const auto since = std::chrono::steady_clock::now();
        for (int spin = 1;; ++spin) {
            const uint64_t word = team_.word.load(std::memory_order_acquire);
            if (word != seen) return word;
            pause();
            if (spin % 256 == 0 &&
                (team_recently_starved() || workers_told_to_rest() || std::chrono::steady_clock::now() - since > kIdleSpin))
                break;
        }
        sleepers_.fetch_add(1);
        slept = true;
        uint64_t word;
        {
            std::unique_lock<std::mutex> lock(sleep_mutex_);
            wake_.wait(lock, [&] { return (word = team_.word.load()) != seen; });
        }
        sleepers_.fetch_sub(1);
        return word;
    }

    std::mutex run_mutex_;  // one team at a time
    int started_ = 0;
    // What a worker reads to start, on one cache line: the line that tells it a team has begun
    // brings the job with it (on lines of their own, its start waited for three transfers from
    // the calling thread's core, not one). Zen 4, processes alternating: a float32 stream step of
    // H = 128 took 3.81-3.92 us against 3.87-3.99.
    struct alignas(64) Team {
        std::atomic<uint64_t> word{0};  // generation << 9 | optional << 8 | team size
        std::atomic<uint64_t> gate{0};  // an optional team's: generation << 16 | closed | joined
        TeamJob job{};
        std::chrono::steady_clock::time_point opened{};
    } team_;
    alignas(64) std::atomic<int> done_{0};       // workers of the team that have finished
    alignas(64) std::atomic<int> sleepers_{0};
    std::atomic<int> caller_cpu_{-1};  // where the caller that woke sleeping workers runs
    std::mutex sleep_mutex_;
    std::condition_variable wake_;
};

Workers* Workers::instance = [] {
    pthread_atfork(nullptr, nullptr, [] { Workers::instance = new Workers(); });  // (the parent's is left as it was)
    return new Workers();
}();
}  // namespace

bool run_on_workers(int threads, TeamJob job, bool optional) {
    if (threads > 0xFF) threads = 0xFF;
    return Workers::instance->run(threads, job, optional);
}

bool in_team() { return t_in_team; }

void set_workers_absent(bool absent) { g_workers_absent.store(absent); }

bool worker_absent(std::chrono::microseconds grace) { return Workers::instance->close_if_absent(grace); }

void note_team_starved() {
    using std::chrono::nanoseconds;
    const int64_t now = now_ns(), last_until = g_starved_until.load(), last_for = g_starved_for.load();
    const int64_t first = std::chrono::duration_cast<nanoseconds>(kStarvedFirst).count();
    const int64_t most = std::chrono::duration_cast<nanoseconds>(kStarvedAtMost).count();
    const int64_t starved_for = last_for > 0 && now < last_until + last_for ? std::min(2 * last_for, most) : first;
    g_starved_for.store(starved_for);
    g_starved_until.store(now + starved_for);
}
void note_late_start() {
    static std::atomic<int64_t> last{INT64_MIN / 2};
    const int64_t now = now_ns(), before = last.exchange(now);
    if (now - before < std::chrono::duration_cast<std::chrono::nanoseconds>(kLateAgainWithin).count()) note_team_starved();
}

double team_starved_for() { return static_cast<double>(g_starved_for.load()) * 1e-9; }

bool team_recently_starved() { return now_ns() < g_starved_until.load(std::memory_order_relaxed); }

void rest_workers(std::chrono::microseconds for_) {
    g_rest_until.store(now_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(for_).count(), std::memory_order_relaxed);
    g_rests.fetch_add(1, std::memory_order_relaxed);
}
int64_t worker_rests() { return g_rests.load(); }
bool workers_told_to_rest() { return now_ns() < g_rest_until.load(std::memory_order_relaxed); }

void set_starvation_patience(int64_t nanoseconds) {
    g_starvation_patience.store(nanoseconds < 0 ? -1 : nanoseconds);
    g_starved_until.store(0);  // and forget a starvation seen before
    g_starved_for.store(0);
}
int64_t starvation_patience() { return g_starvation_patience.load(std::memory_order_relaxed); }
int64_t starved_calls() { return g_starved_calls.load(); }
void count_starved_call() { g_starved_calls.fetch_add(1); }

void set_worker_delay(int64_t nanoseconds) { g_worker_delay.store(std::max<int64_t>(0, nanoseconds)); }

// ---------------------------------------------------------------------------------------------
// One-step calls' choice between their team and one thread (team.h)

namespace {

// calls between two probes of the other way: of one thread, while the team is the faster (the
// usual case: rarely, since each costs a slower call); of the team, while one thread is (soon: a
// burst of slow team calls that has passed should not keep the calls on one thread for long)
constexpr int64_t kProbeAloneEvery = 1024;
constexpr int64_t kProbeTeamEvery = 256;
constexpr int64_t kFirstProbe = 16;   // team calls before the first probe of running alone
constexpr int kProbeCalls = 3;        // calls a probe runs, the last one timed (the others wake the
                                      // worker and move the weights between the cores' caches)
constexpr int kShapes = 4;            // shapes a calling thread remembers
// how long the workers rest from the start and from the end of a call that ran alone by choice
constexpr std::chrono::microseconds kRestWorkers{1000};

// a call that runs on one thread because that has lately been the faster way (not a probe)
bool alone_by_choice(const StepTiming& timing) { return timing.shape && timing.way == 1 && !timing.probe; }

std::atomic<bool> g_step_tuning{true};
std::atomic<int64_t> g_step_tuning_generation{0};
std::atomic<int64_t> g_steps_alone{0};

struct StepShape {
    int64_t key = -1;
    double ns[2] = {0, 0};  // moving averages of the team's and one thread's times, 0: not timed yet
    int64_t calls = 0;      // since the last probe
    int probe = 0;          // calls left in the probe under way
    int probe_way = 0;
};

struct StepShapes {
    int64_t generation = -1;
    StepShape shapes[kShapes];
    int next = 0;
};

// A time stamp for comparing calls' durations: the time-stamp counter where there is one (a few
// nanoseconds to read, against 20 for the clock; only ratios of its differences are used).
int64_t stamp() {
#if defined(__x86_64__)
    return static_cast<int64_t>(__rdtsc());
#else
    return now_ns();
#endif
}

}  // namespace

int choose_step_team(int64_t key, int team, StepTiming& timing) {
    timing = StepTiming{};
    if (team < 2 || !g_step_tuning.load(std::memory_order_relaxed)) return team;
    thread_local StepShapes mine;
    const int64_t generation = g_step_tuning_generation.load(std::memory_order_relaxed);
    if (mine.generation != generation) {
        mine = StepShapes{};
        mine.generation = generation;
    }
    StepShape* shape = nullptr;
    for (StepShape& known : mine.shapes)
        if (known.key == key) shape = &known;
    if (!shape) {  // a new shape: its first call is not timed (it may wake the worker, fill caches)
        shape = &mine.shapes[mine.next];
        mine.next = (mine.next + 1) % kShapes;
        *shape = StepShape{};
        shape->key = key;
        return team;
    }
    const int best = shape->ns[1] > 0 && shape->ns[1] < shape->ns[0] ? 1 : 0;
    const int64_t every = shape->ns[1] == 0 ? kFirstProbe : best == 0 ? kProbeAloneEvery : kProbeTeamEvery;
    if (shape->probe == 0 && shape->ns[0] > 0 && shape->calls >= every) {
        shape->probe = kProbeCalls;
        shape->probe_way = 1 - best;
        shape->calls = 0;
    }
    timing.shape = shape;
    if (shape->probe > 0) {
        timing.way = shape->probe_way;
        timing.counts = --shape->probe == 0;
        timing.probe = true;
    } else {
        timing.way = best;
        timing.counts = true;
        ++shape->calls;
    }
    timing.started = stamp();
    // one thread by choice: the worker sleeps rather than spin beside it; a team (a probe too, whose
    // first call wakes the worker) keeps it spinning between calls
    if (alone_by_choice(timing)) {
        rest_workers(kRestWorkers);
    } else if (timing.way == 0 && g_rest_until.load(std::memory_order_relaxed) != 0) {
        g_rest_until.store(0, std::memory_order_relaxed);
    }
    if (timing.way == 1) g_steps_alone.fetch_add(1, std::memory_order_relaxed);
    return timing.way == 1 ? 1 : team;
}

void step_team_finished(const StepTiming& timing) {
    if (alone_by_choice(timing)) rest_workers(kRestWorkers);  // from its end too (a call may outlast it)
    if (!timing.shape || !timing.counts) return;
    StepShape& shape = *static_cast<StepShape*>(timing.shape);
    double& average = shape.ns[timing.way];
    double took = static_cast<double>(stamp() - timing.started);
    // The average follows the usual time, not the outliers: a faster call moves it half way (it is
    // what the machine can do: the first calls of a shape are slow while the caches fill), a slower
    // one an eighth (a quarter for a probe, which is rare), by at most its own value (one
    // preempted call moves it little; a run of slow ones, as when the two virtual CPUs come to
    // share a core, within a dozen calls).
    if (average == 0) {
        average = took;
        return;
    }
    took = std::min(took, 2 * average);
    average += (took < average ? 0.5 : timing.probe ? 0.25 : 0.125) * (took - average);
}

void set_step_tuning(bool on) {
    g_step_tuning.store(on);
    g_step_tuning_generation.fetch_add(1);
}

int64_t steps_alone() { return g_steps_alone.load(); }

void set_num_threads(int n) {
    if (n < 1) throw std::invalid_argument("num_threads must be >= 1, got " + std::to_string(n));
    g_num_threads.store(n);
}

int get_num_threads() {
    int n = g_num_threads.load();
    return n > 0 ? n : std::max(1, omp_get_max_threads());
}

void set_min_work_per_thread(int64_t macs) { g_min_macs_per_thread.store(macs < 0 ? kMinWorkPerThread : std::max<int64_t>(1, macs)); }

int threads_for_step(int64_t macs_per_step) {
    int64_t wanted = std::max<int64_t>(1, macs_per_step / g_min_macs_per_thread.load());
    return static_cast<int>(std::min<int64_t>(get_num_threads(), wanted));
}

}  // namespace lstmcpp
