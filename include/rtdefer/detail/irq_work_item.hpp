// rtdefer/detail/irq_work_item.hpp: the item state machine of irq_work.hpp's table in one place:
// claim (IQ1), run begin (IQ3) and end (IQ4), and the one list runner every context uses (interrupt
// hook, worker, irq_work_run(), irq_work_sync()'s helping, teardown). Internals of irq_work.hpp,
// which includes this after struct irq_work; not meant to be included on its own.
//
// The transitions are templates over the flag word's atomic type (`Atom`, as llist's head): the item
// keeps std::atomic, and tests instantiate them with an atomic that runs a competing transition
// between a load and the CAS it seeds (tests/irq_work_test.cpp). Deduced from the word, so the
// item's callers name no template argument and the instantiation for std::atomic is the code a
// plain function would be.
#pragma once

#ifndef RTDEFER_IRQ_WORK_CONTRACT
#error "include <rtdefer/irq_work.hpp>, not this detail header"
#endif

#include <rtdefer/config.hpp>
#include <rtdefer/detail/irq_work_percpu.hpp>
#include <rtdefer/detail/wait_var.hpp>
#include <rtdefer/llist.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace rtdefer::detail {

/// Claims the item whose flag word is `flags` (irq_work_claim): free → claimed.
/// Returns: the previous flags, or ~0u if it was already pending (nothing changed but CLAIMED
/// bits that were set already). Progress: wait-free (one RMW). Async-signal-safe.
template <template <class> class Atom>
inline std::uint32_t irq_work_flags_claim(Atom<std::uint32_t>& flags) noexcept RTDEFER_NONBLOCKING {
    // (IQ1) acq_rel fetch_or(CLAIMED):
    //     release: on failure, publishes what the caller wrote before; the pending run's acquire (IQ3)
    //              reads from this RMW's release sequence (the ordering argument in irq_work.hpp).
    //     acquire: on success, pairs with the previous runner's release (IQ4): its last accesses to
    //              the item (func, node) happen-before we relink the node.
    const std::uint32_t old = flags.fetch_or(irq_work_flags::claimed, std::memory_order_acq_rel);
    return (old & irq_work_flags::pending) != 0 ? ~std::uint32_t{0} : old;
}

/// Claims `w`: irq_work_flags_claim on its flag word.
inline std::uint32_t irq_work_claim(irq_work& w) noexcept RTDEFER_NONBLOCKING { return irq_work_flags_claim(w.flags); }

/// Returns: the list of `pc` that an item of kind bits `kind` goes on. LAZY items go on the tick
/// list only while the domain has a tick; with it off they wake the worker like normal ones.
inline irq_work_list irq_work_target(const irq_work_cpu& pc, std::uint32_t kind) noexcept RTDEFER_NONBLOCKING {
    if ((kind & irq_work_flags::hard_irq) != 0)
        return irq_work_list::raised;
    return (kind & irq_work_flags::lazy) != 0 && pc.nohz.on() ? irq_work_list::tick : irq_work_list::lazy;
}

/// Effects: queues `w` on `pc` unless it is already pending: the whole of irq_work_queue_on once
/// the CPU is known. Returns: ok, or already_queued (the item is untouched).
inline status irq_work_queue_cpu(irq_work_cpu& pc, irq_work& w) noexcept RTDEFER_NONBLOCKING {
    RTDEFER_ASSERT(w.func != nullptr, "irq_work_queue: item without a callback");
    const std::uint32_t old = irq_work_claim(w);
    if (old == ~std::uint32_t{0})
        return status::already_queued;
    irq_work_enqueue(pc, w.node, irq_work_target(pc, old & irq_work_flags::kind_mask));
    return status::ok;
}

/// Runs outside any worker: irq_work_run() and the domain destructor's drain. Those callers have
/// no per-CPU stack of their own, so their frames go on a per-thread one. Constant-initialised and
/// trivially destructible, like detail::tls_ctx: a plain TLS access in an executable, no allocation.
/// The worker's loops and its interrupt hook never touch it (they push on irq_work_cpu::running).
inline thread_local irq_work_run_stack irq_work_thread_runs;

// -Wfunction-effects rejects every thread_local access in nonblocking code, because a dynamically
// initialised one may allocate on first use; this one is constant-initialised (as tls_ctx, which
// thread.hpp trusts the same way), so its access is trusted here, once.
inline irq_work_run_stack& irq_work_thread_stack() noexcept RTDEFER_NONBLOCKING {
    RTDEFER_EFFECTS_TRUST_BEGIN
    return irq_work_thread_runs;
    RTDEFER_EFFECTS_TRUST_END
}

/// Counts one run (or tick) in `counter` BEFORE the run's BUSY clear (IQ4): a thread whose
/// irq_work_sync() returned, or that read BUSY clear, reads statistics that include this run.
/// relaxed: sequenced before the release (IQ4), which the syncer's acquire (IQ7)/(IQS5) reads, so
/// the syncer's later load of the counter sees this increment (write-read coherence); no other order.
inline void irq_work_count(std::atomic<std::uint64_t>& counter) noexcept RTDEFER_NONBLOCKING {
    counter.fetch_add(1, std::memory_order_relaxed);
}

/// irq_work_single, first half, on the flag word of a pending item taken off a list: pending →
/// busy (PENDING off, one more run in progress). Progress: wait-free (one RMW).
template <template <class> class Atom>
inline void irq_work_flags_begin(Atom<std::uint32_t>& flags) noexcept RTDEFER_NONBLOCKING {
    // (IQ3) acq_rel fetch_add(ACTIVE_ONE - PENDING): PENDING is set (we took the item off a list and
    //     only a runner clears it), so adding 0xFF clears bit 0 and adds one to ACTIVE in one RMW. From
    //     here on the item may be claimed again (re-queued, even by its own callback) and runs again.
    //     acquire: pairs with release (IQ1) of every claim, failed ones included, that precedes this in
    //              the flag word's modification order: func sees what those claimers wrote.
    //     release: orders our del_all of the node before a new claimer's relink of it.
    //     (The kernel writes PENDING off with atomic_set and adds smp_mb(); an RMW makes that implicit.)
    (void)flags.fetch_add(irq_work_flags::active_one - irq_work_flags::pending, std::memory_order_acq_rel);
}

/// irq_work_single, second half, on the flag word of a running item: one run fewer; the last one
/// out with nothing pending clears BUSY (busy → free) and wakes the syncers of `flags`
/// (wake_up_var: the word's address is hashed, never dereferenced after the CAS).
/// Returns: whether this call cleared BUSY. Progress: lock-free (a CAS loop that fails only when a
/// claim or another run's end changed the word meanwhile). Real-time safety: one futex_wake only
/// when BUSY was cleared and a syncer waits in the bucket; async-signal-safe.
template <template <class> class Atom>
inline bool irq_work_flags_end(Atom<std::uint32_t>& flags) noexcept RTDEFER_NONBLOCKING {
    const volatile void* const var = &flags; // the wake needs the address, not the word
    // relaxed: only seeds the CAS.
    std::uint32_t old = flags.load(std::memory_order_relaxed);
    std::uint32_t next;
    do {
        next = old - irq_work_flags::active_one;
        if ((next & (irq_work_flags::pending | irq_work_flags::active_mask)) == 0)
            next &= ~irq_work_flags::busy;
        // (IQ4) = (IQS1) seq_cst CAS, this runner's LAST access to the item:
        //     release: everything this run did with the item happens-before a syncer's acquire
        //              (IQ7)/(IQS5) that reads BUSY clear (other runs' decrements are earlier RMWs of
        //              the same release sequence), and before the next claimer's acquire (IQ1).
        //     seq_cst: the waker's store of wait_var.hpp's store→load pair: before (WV3) in
        //              wake_up_var, against the syncer's (WV1)→(IQS5).
        //     relaxed on failure: we only retry with the fresh value.
    } while (!flags.compare_exchange_weak(old, next, std::memory_order_seq_cst, std::memory_order_relaxed));
    if ((next & irq_work_flags::busy) != 0)
        return false;
    wake_up_var(var);
    return true;
}

/// Effects: waits until the flag word `flags` has BUSY clear or `deadline` passes (irq_work_sync's
/// wait, without its would_deadlock checks), calling `round()` before each check and re-checking
/// every `poll` (zero: only on wakes). Returns: ok or timed_out (wait_var_event_until).
/// Progress: blocking. Real-time safety: blocking (futex_wait in the static table).
template <template <class> class Atom, class Round>
[[nodiscard]] inline status irq_work_flags_wait_idle(const Atom<std::uint32_t>& flags,
                                                     std::chrono::steady_clock::time_point deadline, Round&& round,
                                                     std::chrono::nanoseconds poll) noexcept RTDEFER_BLOCKING {
    return wait_var_event_until(
        &flags,
        [&flags]() noexcept {
            // (IQS5) seq_cst: the condition's load of wait_var.hpp's pair (after (WV1), (WV2)); also
            //     acquire, pairing with (IQ4) as (IQ7) does.
            return (flags.load(std::memory_order_seq_cst) & irq_work_flags::busy) == 0;
        },
        deadline, round, poll);
}

/// irq_work_single: runs one item taken off a list of `pc`, its frame pushed on `runs`, counted in
/// `counter` before its BUSY clear. No effect attribute: lazy callbacks may lock and free; the hard
/// runner below vouches for hard ones.
inline void irq_work_single(irq_work_cpu& pc, irq_work& w, irq_work_run_stack& runs,
                            std::atomic<std::uint64_t>& counter) noexcept {
    irq_work_count(pc.started);
    irq_work_flags_begin(w.flags);
    // relaxed: see irq_work_run_stack (one thread; the call below is opaque, so the push is done).
    const irq_work_run_frame frame{&w, runs.top.load(std::memory_order_relaxed)};
    runs.top.store(&frame, std::memory_order_relaxed);
    w.func(w);
    runs.top.store(frame.outer, std::memory_order_relaxed); // relaxed: as above
    irq_work_count(counter);
    (void)irq_work_flags_end(w.flags);
}

/// irq_work_run_list: takes list `l` of `pc` and runs it oldest-first, frames on `runs` (the
/// calling thread's stack). Hard items count in runs_hard, others in runs_lazy; a non-empty list
/// also counts one in `batch` if given (the tick's `ticks`) before its first item's BUSY clear, so a
/// syncer of any of its items sees the batch counted.
/// Returns: callbacks run. Real-time safety: as the callbacks; use irq_work_run_hard for the raised
/// list from nonblocking code.
inline std::size_t irq_work_run_list(irq_work_cpu& pc, irq_work_list l, irq_work_run_stack& runs,
                                     std::atomic<std::uint64_t>* batch = nullptr) noexcept {
    // del_all (acquire, pairs with the adds' release (IQ2)); FIFO order per CPU (the kernel runs the
    // chain newest-first; oldest-first costs one pass and is what users expect).
    llist_node* n = llist_reverse_order(pc.list(l).del_all());
    if (n == nullptr)
        return 0;
    if (batch != nullptr)
        irq_work_count(*batch);
    std::atomic<std::uint64_t>& counter = l == irq_work_list::raised ? pc.runs_hard : pc.runs_lazy;
    std::size_t count = 0;
    while (n != nullptr) {
        llist_node* next = n->next; // read before the callback: it may re-queue the item
        irq_work_single(pc, *llist_entry<irq_work, &irq_work::node>(n), runs, counter);
        n = next;
        ++count;
    }
    return count;
}

/// irq_work_run_list for the raised list, from nonblocking code (the interrupt hook, irq_work_run).
/// Hard callbacks are called through the item's plain function pointer: one item type serves both
/// kinds, so the pointer cannot carry [[clang::nonblocking]]. The call is exempted from
/// -Wfunction-effects here, once; RealtimeSanitizer still checks hard callbacks at run time,
/// because their callers are real-time contexts. Async-signal-safe if the callbacks are.
inline std::size_t irq_work_run_hard(irq_work_cpu& pc, irq_work_run_stack& runs) noexcept RTDEFER_NONBLOCKING {
    RTDEFER_EFFECTS_TRUST_BEGIN
    return irq_work_run_list(pc, irq_work_list::raised, runs);
    RTDEFER_EFFECTS_TRUST_END
}

/// The interrupt hook: on a worker thread, run its CPU's raised list (the hard IRQ handler).
/// Every interrupt signal calls every hook, so the miss case (not a worker) is one short scan.
inline void irq_work_interrupt(thread_ctx* self) noexcept RTDEFER_NONBLOCKING {
    if (irq_work_cpu* pc = irq_work_worker_of(self))
        (void)irq_work_run_hard(*pc, pc->running); // we are pc's worker thread
}

} // namespace rtdefer::detail
