// rtdefer/detail/task_work_transitions.hpp: task_work's lock-free list transitions on `works`
// (the add's claim and push, the run's detach, the canceller's unlink walk, the exit's close), each a
// template over the list head's atomic type `Atom` so that a test can change the head between a load
// and the CAS it seeds (tests/support/injecting_atomic.hpp). Items keep their std::atomic `next`.
// task_work.hpp calls them on task_work_state's std::atomic head (Atom deduced: the same code as a
// plain function, no extra cost); its header holds the state table, the run-vs-cancel argument and
// the memory-order numbering (A*, R*, C*, X*) used here. Internals of task_work.hpp, which includes
// this after struct callback_head; not meant to be included on its own.
#pragma once

#ifndef RTDEFER_TASK_WORK_CONTRACT
#error "include <rtdefer/task_work.hpp>, not this detail header"
#endif

#include <rtdefer/config.hpp>
#include <rtdefer/status.hpp>

#include <atomic>

namespace rtdefer::detail {

/// task_work_add's list part: claims `w` (A1) and pushes it (A2), unless `works` is closed (A4).
/// Returns: ok, already_queued (w is queued: nothing changed), exited (w untouched, still idle).
/// Progress: lock-free: the push retries only when another add, the run or a cancel moved the head.
template <template <class> class Atom>
inline status task_work_push(Atom<callback_head*>& works, callback_head& w) noexcept RTDEFER_NONBLOCKING {
    // relaxed: only seeds the CAS below, which validates it.
    callback_head* head = works.load(std::memory_order_relaxed);
    if (RTDEFER_UNLIKELY(head == task_work_exited()))
        return status::exited;
    // (A1) claim the item: DEQUEUED→head. acquire: pairs with the release that made it DEQUEUED
    // ((R6) run, (C6) cancel, (A4) failed add), so this add happens after that party's last access.
    // Exactly one of several concurrent adds of `w` can win; the others see a link and back off
    // without touching the list (the kernel's plain `next` check could corrupt it here).
    callback_head* expected = task_work_dequeued();
    if (RTDEFER_UNLIKELY(!w.next.compare_exchange_strong(expected, head, std::memory_order_acquire,
                                                         std::memory_order_relaxed)))
        return status::already_queued;
    // (A2) release: publishes w (func, next, the caller's data) to the acquire of (R2)/(X1)/(C2).
    // relaxed on failure: the fresh head only seeds the retry.
    while (RTDEFER_UNLIKELY(!works.compare_exchange_weak(head, &w, std::memory_order_release,
                                                         std::memory_order_relaxed))) {
        if (head == task_work_exited()) {
            // (A4) release: give the item back; pairs with (A1) of the caller's next add.
            w.next.store(task_work_dequeued(), std::memory_order_release);
            return status::exited;
        }
        // relaxed: w is claimed and unpublished; only (A2) publishes it.
        w.next.store(head, std::memory_order_relaxed);
    }
    return status::ok;
}

/// The run's detach (owner only): the whole list, newest first, or nullptr if a canceller emptied
/// it. Progress: wait-free (an exchange, not a CAS: only this thread's exit closes the list).
template <template <class> class Atom>
inline callback_head* task_work_detach(Atom<callback_head*>& works) noexcept RTDEFER_NONBLOCKING {
    // (R2) seq_cst exchange. Acquire: pairs with (A2) (and, through the release sequence of RMWs
    // on works, with every earlier add). Seq_cst: orders it before (R3), Dekker with (C1)→(C2).
    return works.exchange(nullptr, std::memory_order_seq_cst);
}

/// One unlink try at `slot` (the head, or the link of the item before `work`). Returns: true if
/// `work` was removed and marked dequeued; false if `slot` had moved, and `work` is its new value.
template <class Slot> inline bool task_work_unlink_at(Slot& slot, callback_head*& work) noexcept {
    // relaxed: work->next is stable while we are inside: adders do not touch published items,
    // the runner defers anything we may see, other cancellers wait for the lock.
    callback_head* after = work->next.load(std::memory_order_relaxed);
    // (C3) acq_rel: unlink; acquire on failure, as the walk's loads.
    if (!slot.compare_exchange_strong(work, after, std::memory_order_acq_rel, std::memory_order_acquire))
        return false;
    // (C6) release: the item is the caller's again; pairs with (A1) of its next add.
    work->next.store(task_work_dequeued(), std::memory_order_release);
    return true;
}

/// The canceller's walk (inside cancel_lock, cancel_seq odd): removes the newest item that
/// `match` accepts. Returns: it, or nullptr. Progress: bounded by the list plus concurrent adds.
template <template <class> class Atom, class Match>
inline callback_head* task_work_unlink_match(Atom<callback_head*>& works, Match& match) noexcept {
    // (C2) seq_cst: see (C1). Acquire part pairs with (A2).
    callback_head* work = works.load(std::memory_order_seq_cst);
    // At the head an add or the runner's exchange may move it under us: a failed CAS goes on from
    // what it read (kernel: "either we raced with task_work_add() which added the new entry before
    // this work, we will find it again, or we raced with task_work_run(), *pprev == NULL/exited").
    while (work != nullptr && work != task_work_exited() && match(*work)) {
        if (task_work_unlink_at(works, work))
            return work;
    }
    if (work == nullptr || work == task_work_exited())
        return nullptr;
    std::atomic<callback_head*>* pprev = &work->next;
    // (C3) acquire (and in the loop): pairs with (A2) via the release sequence on works; links
    // changed by an earlier canceller are ordered by the lock.
    work = pprev->load(std::memory_order_acquire);
    while (work != nullptr && work != task_work_exited()) {
        if (!match(*work)) {
            pprev = &work->next;
            work = pprev->load(std::memory_order_acquire);
        } else if (task_work_unlink_at(*pprev, work)) {
            return work;
        }
    }
    return nullptr;
}

/// The exit's close: detaches what is queued, or, if nothing is (and nothing is `held_back`),
/// installs the exited sentinel. Returns: the chain taken; nullptr when the sentinel is installed
/// or when only the held-back chain is there (the caller runs it first: its callbacks may add).
/// Progress: lock-free: the CAS fails only when an add (or a canceller) moved the head.
template <template <class> class Atom>
inline callback_head* task_work_close(Atom<callback_head*>& works, bool held_back) noexcept {
    // (X1) acquire: pairs with (A2). The CAS installs the sentinel only on an empty list and with
    // no held-back chain; an add racing with it makes it fail and we take that add's item instead.
    callback_head* w = works.load(std::memory_order_acquire);
    callback_head* head;
    do {
        if (w == nullptr && held_back)
            return nullptr;
        head = w == nullptr ? task_work_exited() : nullptr;
    } while (!works.compare_exchange_weak(w, head, std::memory_order_acq_rel, std::memory_order_acquire));
    return w;
}

} // namespace rtdefer::detail
