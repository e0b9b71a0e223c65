// Buffers for one call of the core, from this thread's reusable scratch when the call needs
// little (a streaming call then allocates nothing), else from one heap block for this call.
#pragma once

#include <atomic>
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

// One call that steps several batches with the same weights (a pool's chunks: pool.h): while a
// PackingCall is alive on a thread, a product that would pack the same columns of the same matrix
// the same way takes the copy made earlier in that call on that thread (weights/dense.h's
// PackedCopies) instead of packing again. Keyed by the call (a number no other call has), so a
// copy never outlives the weights it was made from.
class PackingCall {
public:
    explicit PackingCall(uint64_t call) : saved_(current()) { current() = call; }
    ~PackingCall() { current() = saved_; }
    PackingCall(const PackingCall&) = delete;
    PackingCall& operator=(const PackingCall&) = delete;
    static uint64_t next() {
        static std::atomic<uint64_t> calls{0};
        return calls.fetch_add(1, std::memory_order_relaxed) + 1;
    }
    static uint64_t& current() {  // 0: none
        thread_local uint64_t call = 0;
        return call;
    }

private:
    uint64_t saved_;
};

}  // namespace lstmcpp
