// What bounds a stream's step on this CPU: the rate at which one core reads its L2, and the rate of
// each weight format's one-row product (the kernels the core dispatches to here) on one thread's
// share of a step's weights, kept in L2 between calls as a stream's are. With no Python around it,
// against a build tree's core library (pip install . -Cbuild-dir=BUILD):
//
//     g++ -std=c++17 -O2 -mavx2 -Icpp tools/bounds.cpp BUILD/liblstmcpp_core.a -fopenmp -o /tmp/bounds && /tmp/bounds
//
// Rates are per cycle of the time-stamp counter (its frequency printed), best of many calls: what
// the hardware allows, not what a call gets. Measured on the Zen 4 VM (TSC 2.6 GHz), before the
// weights here were aligned: L2 46 B a cycle, float32 rows 34-45 B a cycle (L2-bound), int8 VNNI
// 40-44 B a cycle (L2-bound), bfloat16 11-11.6 multiply-adds a cycle (bound by widening the
// weights, not by L2). On an Intel Xeon with AMX (TSC 2.1 GHz), aligned: L2 47-49 B a cycle
// (32-byte loads), float32 rows 58-61 B a cycle where they fit L2, bfloat16 11-13 multiply-adds
// a cycle, int8 VNNI 56-82 B a cycle.
#include <immintrin.h>
#include <x86intrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "core/aligned.h"
#include "kernels/kernels.h"
#include "weights/int8.h"

using namespace lstmcpp;

namespace {

template <class F>
double best_cycles(F f, int calls) {
    double best = 1e300;
    for (int i = 0; i < calls; ++i) {
        const uint64_t t0 = __rdtsc();
        f();
        best = std::min(best, static_cast<double>(__rdtsc() - t0));
    }
    return best;
}

double tsc_hz() {
    const auto t0 = std::chrono::steady_clock::now();
    const uint64_t c0 = __rdtsc();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    return static_cast<double>(__rdtsc() - c0) / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// bytes read a cycle from a buffer of `bytes` kept in cache (eight 32-byte loads in flight)
double read_rate(size_t bytes) {
    char* data = static_cast<char*>(std::aligned_alloc(64, bytes));
    std::fill(data, data + bytes, 1);
    __m256i sink = _mm256_setzero_si256();
    const double cycles = best_cycles([&] {
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (size_t i = 0; i < bytes; i += 256) {
            const __m256i* p = reinterpret_cast<const __m256i*>(data + i);
            a0 = _mm256_or_si256(a0, _mm256_load_si256(p));
            a1 = _mm256_or_si256(a1, _mm256_load_si256(p + 1));
            a2 = _mm256_or_si256(a2, _mm256_load_si256(p + 2));
            a3 = _mm256_or_si256(a3, _mm256_load_si256(p + 3));
            a4 = _mm256_or_si256(a4, _mm256_load_si256(p + 4));
            a5 = _mm256_or_si256(a5, _mm256_load_si256(p + 5));
            a6 = _mm256_or_si256(a6, _mm256_load_si256(p + 6));
            a7 = _mm256_or_si256(a7, _mm256_load_si256(p + 7));
        }
        sink = _mm256_or_si256(sink, _mm256_or_si256(_mm256_or_si256(_mm256_or_si256(a0, a1), _mm256_or_si256(a2, a3)),
                                                      _mm256_or_si256(_mm256_or_si256(a4, a5), _mm256_or_si256(a6, a7))));
    }, 2000);
    std::free(data);
    volatile int keep = _mm256_extract_epi32(sink, 0);
    (void)keep;
    return static_cast<double>(bytes) / cycles;
}

}  // namespace

int main() {
    const Kernels<float>& K = kernels_f32();
    std::printf("kernels: %s; time-stamp counter %.2f GHz\n", K.name, tsc_hz() / 1e9);
    for (size_t kib : {16, 256, 512, 4096})
        std::printf("read %4zu KiB from cache: %5.1f B/cycle\n", kib, read_rate(kib * 1024));
    std::printf("\none row times one thread's share of a step (4H/2 rows of H; int8 H128's 32 KiB fit L1, float32 H512's 2 MiB only L3, the rest L2):\n");
    std::printf("%6s %9s %22s %22s %22s\n", "H", "", "float32", "bfloat16", "int8");
    for (int64_t H : {128, 256, 512}) {
        const int64_t N = 2 * H, depth = H;
        // 64-byte aligned, as the model's own weights are (core/aligned.h): from a plain vector's
        // 16-byte alignment every 64-byte load spans two lines, which halved the float32 and
        // bfloat16 rates on an Intel Xeon (27-29 against 60 B a cycle for float32)
        AlignedVector<float> x(depth, 0.5f), out(N);
        AlignedVector<float> w32(N * depth, 0.01f);
        AlignedVector<uint16_t> w16(N * depth, 0x3c00);
        std::vector<int8_t> w8(N * depth, 3);
        std::vector<float> scales(N, 0.01f);
        Int8Weights q;
        q.assign(w8.data(), scales.data(), N, depth);
        const Int8Matrix m = q.view();
        const int64_t ldq = (depth + 15) / 16 * 16;
        std::vector<uint8_t> xq(ldq);
        float x_scale = 0;
        K.quantize_rows(xq.data(), ldq, &x_scale, x.data(), depth, 1, depth);

        const double f = best_cycles([&] { K.gemm_nt(out.data(), N, x.data(), depth, w32.data(), depth, 1, N, depth, 0.0f); }, 3000);
        const double b = best_cycles([&] { K.gemm_nt_bf16(out.data(), N, x.data(), depth, w16.data(), depth, 1, N, depth, 0.0f); }, 3000);
        const double i = best_cycles([&] { K.gemm_nt_s8(out.data(), N, xq.data(), ldq, &x_scale, m.view, 0, 1, N, 0.0f); }, 3000);
        const double macs = static_cast<double>(N * depth);
        std::printf("%6lld %9s %5.1f B %5.1f MAC/cycle %5.1f B %5.1f MAC/cycle %5.1f B %5.1f MAC/cycle\n",
                    static_cast<long long>(H), "", 4 * macs / f, macs / f, 2 * macs / b, macs / b, macs / i, macs / i);
    }
    return 0;
}
