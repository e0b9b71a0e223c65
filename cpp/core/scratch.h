// Buffers for one call of the core, from this thread's reusable scratch when the call needs
// little (a streaming call then allocates nothing), else from one heap block for this call.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <stdexcept>

#include "core/aligned.h"

namespace lstmcpp {

// Scratch s({n0, n1, ...}) holds pieces of those sizes, each 16-element (64-byte) aligned;
// s.take(n) hands them out in order. Taking more than was declared throws rather than overrun.
// Each Slot is its own reusable buffer: scratches alive at once on one thread (the layers' and,
// inside them, each time loop's) take different slots.
template <class T, int Slot = 0>
class Scratch {
public:
    static constexpr int64_t kReusable = 1 << 16;  // elements of each thread's reusable scratch

    explicit Scratch(std::initializer_list<int64_t> pieces) {
        for (int64_t n : pieces) capacity_ += rounded(n);
        if (capacity_ <= kReusable) {
            thread_local AlignedVector<T> reused(kReusable);
            base_ = reused.data();
        } else {
            own_.resize(capacity_);
            base_ = own_.data();
        }
    }
    T* take(int64_t n) {
        if (used_ + rounded(n) > capacity_)
            throw std::logic_error("lstmcpp: Scratch::take past the pieces it was declared with");
        T* p = base_ + used_;
        used_ += rounded(n);
        return p;
    }

private:
    static int64_t rounded(int64_t n) { return (n + 15) / 16 * 16; }

    AlignedVector<T> own_;
    T* base_ = nullptr;
    int64_t capacity_ = 0, used_ = 0;
};

}  // namespace lstmcpp
