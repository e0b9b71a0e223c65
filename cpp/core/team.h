// The OpenMP thread team: how many threads, how work is split among them, and the per-thread
// floating-point state while they run.
#pragma once

#include <omp.h>

#include <cstdint>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define LSTMCPP_HAS_MXCSR 1
#endif

namespace lstmcpp {

// Threads used by the core (OpenMP). Default: omp_get_max_threads() at first use.
void set_num_threads(int n);
int get_num_threads();
// Testing switch: the per-step work (multiply-adds) each thread of a time loop needs before
// another thread joins. 1 puts the whole team on even the smallest cell.
void set_min_work_per_thread(int64_t macs);
// Threads worth waking for a time loop with this much work per step: each barrier costs about as
// much as 64k multiply-adds, so small cells run on one thread.
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

// Runs body(team, me) on a team of `threads` OpenMP threads, or directly on this thread when
// the team would be one (entering a parallel region costs about a microsecond).
template <class Body>
void run_team(int threads, const Body& body) {
    if (threads <= 1) {
        DenormalsAreZero daz;
        body(1, 0);
        return;
    }
#pragma omp parallel num_threads(threads)
    {
        DenormalsAreZero daz;
        body(omp_get_num_threads(), omp_get_thread_num());
    }
}

}  // namespace lstmcpp
