#include "core/cpu_caches.h"

#include <algorithm>
#include <fstream>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace lstmcpp {

namespace {

// "32K", "1024K", "2M" or "32768" (bytes) -> bytes; 0 if unreadable.
int64_t parse_size(const std::string& text) {
    size_t used = 0;
    int64_t value = 0;
    try {
        value = std::stoll(text, &used);
    } catch (...) {
        return 0;
    }
    const char unit = used < text.size() ? text[used] : ' ';
    if (unit == 'K' || unit == 'k') return value << 10;
    if (unit == 'M' || unit == 'm') return value << 20;
    if (unit == 'G' || unit == 'g') return value << 30;
    return value;
}

std::string read_line(const std::string& path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
}

CacheSizes read_cache_sizes() {
    CacheSizes sizes;
    for (int index = 0; index < 8; ++index) {
        const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
        const std::string level = read_line(dir + "level"), type = read_line(dir + "type");
        if (level.empty()) break;
        if (type == "Instruction") continue;
        const int64_t bytes = parse_size(read_line(dir + "size"));
        if (level == "1") sizes.l1d = bytes;
        if (level == "2") sizes.l2 = bytes;
        if (level == "3") sizes.l3 = bytes;
    }
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
    // glibc's sysconf (CPUID) where sysfs said nothing
    if (sizes.l1d <= 0) sizes.l1d = std::max<long>(0, sysconf(_SC_LEVEL1_DCACHE_SIZE));
    if (sizes.l2 <= 0) sizes.l2 = std::max<long>(0, sysconf(_SC_LEVEL2_CACHE_SIZE));
    if (sizes.l3 <= 0) sizes.l3 = std::max<long>(0, sysconf(_SC_LEVEL3_CACHE_SIZE));
#endif
    return sizes;
}

}  // namespace

const CacheSizes& cache_sizes() {
    static const CacheSizes sizes = read_cache_sizes();
    return sizes;
}

}  // namespace lstmcpp
