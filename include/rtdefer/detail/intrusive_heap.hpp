// rtdefer/detail/intrusive_heap.hpp: the intrusive binary min-heap behind timer_service and
// cpu_timer (the kernel keeps its timers in a timerqueue, an rbtree; a heap in one preallocated
// array gives the same O(log n) arm/cancel/pop with no allocation after construction).
//
// Each node embeds a heap_hook: its index in the array (heap_npos when not queued) and an order
// stamp that breaks ties between equal keys first-in first-out. push() and update() stamp the node,
// so a moved timer queues behind the others with its new key, as a fresh arm would.
//
// Traits (static functions): `heap_hook& hook(Node&)`, `const heap_hook& hook(const Node&)`, and
// `key(const Node&)` returning something ordered by `<`. Not thread-safe: the owner's lock guards it.
#pragma once

#include <rtdefer/config.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace rtdefer::detail {

inline constexpr std::size_t heap_npos = ~std::size_t{0};

/// Embedded in every node of an intrusive_heap.
struct heap_hook {
    std::size_t index = heap_npos; ///< position in the heap array, heap_npos when not queued
    std::uint64_t order = 0;       ///< FIFO tie-break among equal keys (stamped by push/update)
    [[nodiscard]] bool queued() const noexcept RTDEFER_NONBLOCKING { return index != heap_npos; }
};

template <class Node, class Traits>
class intrusive_heap {
public:
    /// Effects: allocates room for `capacity` nodes (the only allocation). Throws: std::bad_alloc.
    explicit intrusive_heap(std::size_t capacity) : slots_(capacity, nullptr) {}
    intrusive_heap(const intrusive_heap&) = delete;
    intrusive_heap& operator=(const intrusive_heap&) = delete;

    [[nodiscard]] std::size_t size() const noexcept RTDEFER_NONBLOCKING { return size_; }
    [[nodiscard]] std::size_t capacity() const noexcept RTDEFER_NONBLOCKING { return slots_.size(); }
    [[nodiscard]] bool empty() const noexcept RTDEFER_NONBLOCKING { return size_ == 0; }
    [[nodiscard]] bool full() const noexcept RTDEFER_NONBLOCKING { return size_ == slots_.size(); }
    /// Returns: the next order stamp: nodes stamped from now on compare >= it (expiry passes use it
    /// to leave what was armed during the pass for the next one).
    [[nodiscard]] std::uint64_t next_order() const noexcept RTDEFER_NONBLOCKING { return next_order_; }
    /// Returns: the earliest node (smallest key, oldest stamp among equal keys), nullptr if empty.
    [[nodiscard]] Node* top() const noexcept RTDEFER_NONBLOCKING { return size_ == 0 ? nullptr : slots_[0]; }
    /// Returns: the i-th node of the array (i < size()), in no particular order (teardown walks).
    [[nodiscard]] Node* at(std::size_t i) const noexcept RTDEFER_NONBLOCKING { return slots_[i]; }

    /// Effects: queues `n` (not queued, heap not full: asserted) and stamps it. O(log n).
    void push(Node& n) noexcept RTDEFER_NONBLOCKING {
        RTDEFER_ASSERT(!Traits::hook(n).queued() && size_ < slots_.size(), "intrusive_heap: push of a queued node or into a full heap");
        Traits::hook(n).order = next_order_++;
        place(size_++, &n);
        sift_up(size_ - 1);
    }
    /// Effects: re-stamps queued `n` and restores the heap after its key changed. O(log n).
    void update(Node& n) noexcept RTDEFER_NONBLOCKING {
        Traits::hook(n).order = next_order_++;
        restore(Traits::hook(n).index);
    }
    /// Effects: unlinks queued `n` (its index becomes heap_npos). O(log n).
    void erase(Node& n) noexcept RTDEFER_NONBLOCKING {
        const std::size_t i = Traits::hook(n).index;
        RTDEFER_ASSERT(i < size_ && slots_[i] == &n, "intrusive_heap: erase of a node not queued here");
        Traits::hook(n).index = heap_npos;
        --size_;
        if (i != size_) {
            place(i, slots_[size_]);
            restore(i);
        }
        slots_[size_] = nullptr;
    }
    /// Effects: unlinks every node (each becomes not queued). O(n).
    void clear() noexcept RTDEFER_NONBLOCKING {
        for (std::size_t i = 0; i < size_; ++i) {
            Traits::hook(*slots_[i]).index = heap_npos;
            slots_[i] = nullptr;
        }
        size_ = 0;
    }

private:
    static bool before(const Node* a, const Node* b) noexcept RTDEFER_NONBLOCKING {
        const auto ka = Traits::key(*a);
        const auto kb = Traits::key(*b);
        return ka < kb || (!(kb < ka) && Traits::hook(*a).order < Traits::hook(*b).order);
    }
    void place(std::size_t i, Node* n) noexcept RTDEFER_NONBLOCKING {
        slots_[i] = n;
        Traits::hook(*n).index = i;
    }
    void restore(std::size_t i) noexcept RTDEFER_NONBLOCKING {
        if (i > 0 && before(slots_[i], slots_[(i - 1) / 2]))
            sift_up(i);
        else
            sift_down(i);
    }
    void sift_up(std::size_t i) noexcept RTDEFER_NONBLOCKING {
        Node* n = slots_[i];
        while (i > 0) {
            const std::size_t parent = (i - 1) / 2;
            if (!before(n, slots_[parent]))
                break;
            place(i, slots_[parent]);
            i = parent;
        }
        place(i, n);
    }
    void sift_down(std::size_t i) noexcept RTDEFER_NONBLOCKING {
        Node* n = slots_[i];
        for (;;) {
            std::size_t child = 2 * i + 1;
            if (child >= size_)
                break;
            if (child + 1 < size_ && before(slots_[child + 1], slots_[child]))
                ++child;
            if (!before(slots_[child], n))
                break;
            place(i, slots_[child]);
            i = child;
        }
        place(i, n);
    }

    std::vector<Node*> slots_; // allocated once; size_ entries used
    std::size_t size_ = 0;
    std::uint64_t next_order_ = 0;
};

} // namespace rtdefer::detail
