#include "core/aligned.h"

#include <cstdlib>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

namespace lstmcpp {

namespace {

constexpr std::size_t kAlignment = 64;
constexpr std::size_t kSmallestKept = std::size_t(256) << 10, kMostKept = std::size_t(256) << 20;

std::size_t rounded(std::size_t bytes) {
    return bytes ? (bytes + kAlignment - 1) / kAlignment * kAlignment : kAlignment;
}

// The kept blocks: (size, block), at most kMostKept bytes in all.
class Spares {
public:
    void* take(std::size_t bytes) {
        std::lock_guard<std::mutex> lock(mutex_);
        for (std::size_t k = 0; k < blocks_.size(); ++k) {
            if (blocks_[k].first == bytes) {
                void* p = blocks_[k].second;
                blocks_.erase(blocks_.begin() + k);
                held_ -= bytes;
                return p;
            }
        }
        return nullptr;
    }
    bool keep(void* p, std::size_t bytes) {
        std::lock_guard<std::mutex> lock(mutex_);
        while (!blocks_.empty() && held_ + bytes > kMostKept) {  // make room: drop the oldest
            std::free(blocks_.front().second);
            held_ -= blocks_.front().first;
            blocks_.erase(blocks_.begin());
        }
        if (held_ + bytes > kMostKept) return false;
        blocks_.emplace_back(bytes, p);
        held_ += bytes;
        return true;
    }

private:
    std::mutex mutex_;
    std::vector<std::pair<std::size_t, void*>> blocks_;
    std::size_t held_ = 0;
};

// Never destroyed: blocks freed during the interpreter's exit still find it.
Spares& spares() {
    static Spares* instance = new Spares();
    return *instance;
}

// Under AddressSanitizer every block goes back to the allocator, so a use after free is caught.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kKeepBlocks = false;
#else
constexpr bool kKeepBlocks = true;
#endif

}  // namespace

void* allocate_aligned(std::size_t bytes) {
    bytes = rounded(bytes);
    if (kKeepBlocks && bytes >= kSmallestKept) {
        if (void* p = spares().take(bytes)) return p;
    }
    void* p = std::aligned_alloc(kAlignment, bytes);
    if (!p) throw std::bad_alloc();
    return p;
}

void free_aligned(void* p, std::size_t bytes) noexcept {
    if (!p) return;
    bytes = rounded(bytes);
    if (kKeepBlocks && bytes >= kSmallestKept) {
        try {
            if (spares().keep(p, bytes)) return;
        } catch (...) {  // no room for the bookkeeping: just free it
        }
    }
    std::free(p);
}

}  // namespace lstmcpp
