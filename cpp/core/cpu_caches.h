// The data caches of the CPU the process runs on, read at run time (for blocking choices and for
// lstmcpp.info()): the sizes a core sees, in bytes, 0 where unknown.
#pragma once

#include <cstdint>

namespace lstmcpp {

struct CacheSizes {
    int64_t l1d = 0;  // per core
    int64_t l2 = 0;   // per core on the CPUs seen (Zen 4: 1 MiB, the Xeon: 2 MiB)
    int64_t l3 = 0;   // shared by the cores of one cache domain
};

// Read once (Linux: /sys/devices/system/cpu/cpu0/cache, which a VM fills from what the
// hypervisor exposes; else sysconf), then cached.
const CacheSizes& cache_sizes();

}  // namespace lstmcpp
