// rtdefer/llist.hpp: intrusive lock-free singly linked list, the userspace twin of the kernel's
// include/linux/llist.h. Nodes are the caller's memory (embed an llist_node); nothing allocates.
//
// Producers push with one CAS; consumers take the whole list with one exchange. add() reports whether
// the list was empty, which is the rule everything built on it relies on: only the add that makes a
// list non-empty raises an interrupt or wakes a worker; later adds ride on that wake.
//
// Concurrency table (as in llist.h). A row's operation may run concurrently with a column's
// operation on the same list: "-" needs no lock, "L" needs the caller's mutual exclusion.
//
//             |   add    | del_first |  del_all
//   add       |    -     |     -     |     -
//   del_first |          |     L     |     L
//   del_all   |          |           |     -
//
// del_first needs exclusion because it reads first->next and then CASes first→next: if another
// consumer meanwhile does del_first, add, add (or del_all, add, add) and the same node is first
// again, the CAS succeeds with a stale next (ABA). add and del_all never read a node they do not own.
//
// All operations are async-signal-safe: a signal handler may add to a list whose del_all it
// interrupted, since every operation is a single atomic instruction on the head plus private work.
//
// The list is LIFO: del_all returns the newest node first. Callers that need FIFO order per producer
// reverse the chain (llist_reverse_order) after taking it, as the kernel's users do.
#pragma once

#include <rtdefer/config.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace rtdefer {

/// A list link, embedded in the caller's item. `next` is a plain pointer: it is written only while
/// the node is private (before the publishing CAS) and read only after the acquiring del_all/del_first.
struct llist_node {
    llist_node* next = nullptr;
};

/// Intrusive lock-free list head. `Atom` lets tests substitute an instrumented atomic type.
template <template <class> class Atom = std::atomic> class basic_llist_head {
public:
    constexpr basic_llist_head() noexcept = default;
    basic_llist_head(const basic_llist_head&) = delete;
    basic_llist_head& operator=(const basic_llist_head&) = delete;

    /// Effects: pushes `n` (which must not be on any list).
    /// Returns: true if the list was empty before this add (the caller should raise/wake).
    /// Progress: lock-free (a CAS loop that fails only when another add or del succeeded).
    /// Real-time safety: no allocation, no syscall; async-signal-safe.
    [[nodiscard]] bool add(llist_node& n) noexcept RTDEFER_NONBLOCKING { return add_batch(n, n); }

    /// Effects: pushes the chain first→…→last (already linked through `next`) in one step.
    /// Returns: true if the list was empty before. Progress, safety: as add().
    [[nodiscard]] bool add_batch(llist_node& first, llist_node& last) noexcept RTDEFER_NONBLOCKING {
        // relaxed: the value only seeds the CAS; a stale value makes the CAS fail and reload.
        llist_node* head = first_.load(std::memory_order_relaxed);
        do {
            last.next = head;
            // (LL1) release on success: publishes the nodes' contents and `last.next` to the consumer;
            //     pairs with acquire (LL2) in del_all() and acquire (LL3)/(LL4) in del_first().
            //     relaxed on failure: nothing was published, we only retry with the fresh head.
        } while (!first_.compare_exchange_weak(head, &first, std::memory_order_release,
                                               std::memory_order_relaxed));
        return head == nullptr;
    }

    /// Effects: detaches and returns the whole chain, newest first; the list is empty afterwards.
    /// Returns: the first node of the chain, or nullptr.
    /// Progress: wait-free (one exchange). Safety: no allocation, async-signal-safe.
    [[nodiscard]] llist_node* del_all() noexcept RTDEFER_NONBLOCKING {
        // Cheap test first: an exchange dirties the cache line even when the list is empty, and
        // consumers poll empty lists often. relaxed: an empty answer needs no ordering; a non-empty
        // one is followed by the acquiring exchange below.
        if (first_.load(std::memory_order_relaxed) == nullptr)
            return nullptr;
        // (LL2) acquire: pairs with release (LL1) in add_batch(): every node in the chain and its next
        //     pointer are visible before we walk them.
        return first_.exchange(nullptr, std::memory_order_acquire);
    }

    /// Effects: removes and returns the newest node. Needs the caller's exclusion against other
    /// del_first/del_all callers (see the table above); concurrent add() is fine.
    /// Returns: the node, or nullptr if empty. Progress: lock-free. Safety: as add().
    [[nodiscard]] llist_node* del_first() noexcept RTDEFER_NONBLOCKING {
        // (LL3) acquire: pairs with release (LL1): we read entry->next below.
        llist_node* entry = first_.load(std::memory_order_acquire);
        do {
            if (entry == nullptr)
                return nullptr;
            // entry->next is stable: only add() writes next, and only on nodes it has not published;
            // the exclusion the table demands rules out entry being taken and re-added meanwhile.
            // (LL4) acquire on both paths: a failure hands us a new entry whose next we read next.
        } while (!first_.compare_exchange_weak(entry, entry->next, std::memory_order_acquire,
                                               std::memory_order_acquire));
        entry->next = nullptr;
        return entry;
    }

    /// Returns: whether the list is empty right now (a racy snapshot, as llist_empty()).
    /// relaxed: a snapshot for heuristics; acting on items goes through del_all's acquire.
    [[nodiscard]] bool empty() const noexcept RTDEFER_NONBLOCKING {
        return first_.load(std::memory_order_relaxed) == nullptr;
    }

    /// Returns: the newest node without removing it (racy; only for the owner's diagnostics).
    [[nodiscard]] llist_node* first() const noexcept RTDEFER_NONBLOCKING {
        // relaxed: diagnostics only; never dereferenced by the library.
        return first_.load(std::memory_order_relaxed);
    }

private:
    // Own cache line: producers on other CPUs hammer this word; keep it away from neighbours.
    alignas(cacheline_size) Atom<llist_node*> first_{nullptr};
};

using llist_head = basic_llist_head<>;

/// Effects: reverses a detached chain (newest-first becomes oldest-first, i.e. FIFO).
/// Returns: the new first node. Progress: O(n), wait-free. Safety: touches only the chain.
[[nodiscard]] inline llist_node* llist_reverse_order(llist_node* head) noexcept RTDEFER_NONBLOCKING {
    llist_node* reversed = nullptr;
    while (head != nullptr) {
        llist_node* next = head->next;
        head->next = reversed;
        reversed = head;
        head = next;
    }
    return reversed;
}

/// Effects: calls `fn(node&)` for each node of a detached chain, reading `next` before the call so
/// `fn` may free or re-queue the node (llist_for_each_safe).
template <class F> inline void llist_for_each_safe(llist_node* head, F&& fn) noexcept(noexcept(fn(*head))) {
    while (head != nullptr) {
        llist_node* next = head->next;
        fn(*head);
        head = next;
    }
}

/// Returns: the number of nodes in a detached chain. O(n).
[[nodiscard]] inline std::size_t llist_count(const llist_node* head) noexcept RTDEFER_NONBLOCKING {
    std::size_t n = 0;
    for (; head != nullptr; head = head->next)
        ++n;
    return n;
}

namespace detail {
template <class T> alignas(T) inline unsigned char llist_probe[sizeof(T)];
} // namespace detail

/// Returns: the item containing node `n` at member `M` (container_of). T must be standard-layout,
/// which is what makes the member offset well defined.
template <class T, llist_node T::*M> [[nodiscard]] inline T* llist_entry(llist_node* n) noexcept RTDEFER_NONBLOCKING {
    static_assert(std::is_standard_layout_v<T>, "llist_entry needs a standard-layout item type");
    // Offset of M measured on static storage of T's size and alignment; no T is ever accessed.
    const T* base = reinterpret_cast<const T*>(detail::llist_probe<T>);
    const auto offset = reinterpret_cast<const unsigned char*>(&(base->*M)) - detail::llist_probe<T>;
    return reinterpret_cast<T*>(reinterpret_cast<unsigned char*>(n) - offset);
}

} // namespace rtdefer
