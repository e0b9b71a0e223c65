// Chooses the float32 kernels once: the best the CPU and OS support, unless LSTMCPP_ISA
// (portable|avx2|avx512|avx512_amx) or set_isa() forces one.
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels/kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace lstmcpp {

const Kernels<float>& kernels_f32_portable();
const Kernels<float>& kernels_f32_avx2();
const Kernels<float>& kernels_f32_avx512(bool vnni, bool amx);
bool amx_usable();

namespace {

struct CpuFeatures {
    bool avx2 = false;    // AVX2 + FMA, with the OS saving YMM state
    bool avx512 = false;  // AVX-512 F/BW/DQ/VL, with the OS saving ZMM state
    bool avx512_vnni = false;
    bool amx_int8 = false;  // AMX tiles with int8 products, the OS saving their state and granting it
};

CpuFeatures detect() {
    CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28);
    if (!(osxsave && avx)) return f;
    unsigned xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    bool ymm_saved = (xcr0_lo & 0x6) == 0x6;
    bool zmm_saved = (xcr0_lo & 0xe6) == 0xe6;
    if (__get_cpuid_max(0, nullptr) < 7) return f;
    __cpuid_count(7, 0, a, b, c, d);
    bool avx2 = b & (1u << 5);
    bool avx512f = b & (1u << 16), avx512dq = b & (1u << 17), avx512bw = b & (1u << 30),
         avx512vl = b & (1u << 31);
    f.avx2 = ymm_saved && avx2 && fma;
    f.avx512 = f.avx2 && zmm_saved && avx512f && avx512dq && avx512bw && avx512vl;
    f.avx512_vnni = f.avx512 && (c & (1u << 11));
    const bool amx_tile = d & (1u << 24), amx_int8 = d & (1u << 25);
    const bool tiles_saved = (xcr0_lo & 0x60000) == 0x60000;  // XTILECFG and XTILEDATA
    f.amx_int8 = f.avx512_vnni && amx_tile && amx_int8 && tiles_saved && amx_usable();
#endif
    return f;
}

const CpuFeatures& features() {
    static const CpuFeatures f = detect();
    return f;
}

const Kernels<float>* table_for(const char* name) {
    if (std::strcmp(name, "avx512_amx") == 0) return features().amx_int8 ? &kernels_f32_avx512(true, true) : nullptr;
    if (std::strcmp(name, "avx512") == 0)
        return features().avx512 ? &kernels_f32_avx512(features().avx512_vnni, false) : nullptr;
    if (std::strcmp(name, "avx2") == 0) return features().avx2 ? &kernels_f32_avx2() : nullptr;
    if (std::strcmp(name, "portable") == 0) return &kernels_f32_portable();
    return nullptr;
}

const Kernels<float>* best() {
    if (const char* forced = std::getenv("LSTMCPP_ISA"); forced && *forced) {
        if (const Kernels<float>* t = table_for(forced)) return t;
    }
    if (features().amx_int8) return &kernels_f32_avx512(true, true);
    if (features().avx512) return &kernels_f32_avx512(features().avx512_vnni, false);
    if (features().avx2) return &kernels_f32_avx2();
    return &kernels_f32_portable();
}

std::atomic<const Kernels<float>*>& current() {
    static std::atomic<const Kernels<float>*> table{best()};
    return table;
}

}  // namespace

const Kernels<float>& kernels_f32() { return *current().load(std::memory_order_relaxed); }

const char* isa_in_use() { return kernels_f32().name; }

bool isa_supported(const char* name) { return table_for(name) != nullptr; }

const char* const* isa_names() {
    static const char* const names[] = {"portable", "avx2", "avx512", "avx512_amx", nullptr};
    return names;
}

bool set_isa(const char* name) {
    const Kernels<float>* t = table_for(name);
    if (!t) return false;
    current().store(t, std::memory_order_relaxed);
    return true;
}

}  // namespace lstmcpp
