// rtdefer/detail/irq_work_percpu.hpp: the per-CPU state of an irq_work_domain and the process-wide
// table that lets the interrupt hook find "which CPU's raised list belongs to this worker thread".
// Internals of irq_work.hpp; no public API here.
//
// Also here: the producer side of a CPU (irq_work_enqueue: list add, backlog stamp, raise).
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/cpu_clock.hpp>
#include <rtdefer/detail/irq_work_tick.hpp>
#include <rtdefer/detail/syscall.hpp>
#include <rtdefer/interrupt.hpp>
#include <rtdefer/thread.hpp>
#include <rtdefer/llist.hpp>
#include <rtdefer/park.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include <sys/types.h>

namespace rtdefer {

struct thread_ctx;
struct irq_work;

namespace detail {

/// One run in progress: lives on the runner's stack for the duration of one callback.
struct irq_work_run_frame {
    const irq_work* item;
    const irq_work_run_frame* outer;
};

/// The runs in progress on one thread, innermost first: irq_work_sync() walks it to see that it is
/// called from inside a run of the item it would wait for (directly, or from a hard callback that
/// interrupted that run). Written only by its thread and that thread's signal handler, which pushes
/// and pops its own frames (LIFO) and so leaves `top` as it found it.
struct irq_work_run_stack {
    // relaxed everywhere: one thread and its own signal handler; the callback between push and pop
    // is an opaque call, so the push is done before it runs.
    std::atomic<const irq_work_run_frame*> top{nullptr};
};

/// The three lists of a CPU, indexing irq_work_cpu::list() and its backlog stamps.
enum class irq_work_list : std::uint8_t {
    raised = 0, ///< HARD_IRQ items: run by the interrupt hook on the worker thread
    lazy = 1,   ///< other non-LAZY items: run by the worker, woken on empty→non-empty
    tick = 2,   ///< LAZY items: run by the worker at its next tick (no wake at all)
};
inline constexpr std::size_t irq_work_nlists = 3;

/// One CPU of an irq_work_domain: the kernel's per-CPU raised_list / lazy_list, plus a tick list that
/// the kernel does not have (see irq_work.hpp: a non-LAZY item queued behind a LAZY one must still
/// wake the worker). Each llist_head sits on its own cache line (llist.hpp aligns it).
struct irq_work_cpu {
    llist_head raised; ///< irq_work_list::raised
    llist_head lazy;   ///< irq_work_list::lazy
    llist_head tick;   ///< irq_work_list::tick

    [[nodiscard]] llist_head& list(irq_work_list l) noexcept RTDEFER_NONBLOCKING {
        return l == irq_work_list::raised ? raised : l == irq_work_list::lazy ? lazy : tick;
    }

    /// The worker's ctx. Written by the worker's setup before the domain constructor returns (the
    /// constructor waits for it, acquire), never written again while the domain lives: every reader
    /// got its domain reference after construction, so a plain field suffices.
    thread_ctx* worker = nullptr;
    int cpu = -1;

    /// The worker thread's runs in progress: every run on the worker (its lists, the interrupt
    /// hook's hard list, irq_work_sync's helping) pushes here, so the hot loops need no TLS.
    irq_work_run_stack running;

    /// The LAZY tick and its nohz state (the word producers read is inside).
    irq_work_tick nohz;

    // Backlog, producer side (its own line: written by every enqueue, never by the runner).
    // relaxed: statistics; `queued` is bumped before the list add, so the runner's count of the
    // item (`started`) follows it (the add's release, the runner's del_all acquire).
    alignas(cacheline_size) std::atomic<std::uint64_t> queued{0}; ///< items added to any list
    /// CLOCK_MONOTONIC ns of the add that last made each list non-empty (irq_work_list index);
    /// meaningful only while that list is non-empty.
    std::array<std::atomic<std::uint64_t>, irq_work_nlists> since_ns{};

    // Statistics. relaxed: counters only; readers want totals, not ordering with the lists. runs_*
    // and ticks are bumped before the run's BUSY clear (irq_work_count), so a syncer sees them.
    alignas(cacheline_size) std::atomic<std::uint64_t> hard_raises{0}; ///< empty→non-empty on raised
    std::atomic<std::uint64_t> lazy_raises{0};  ///< empty→non-empty on lazy (worker wake attempted)
    std::atomic<std::uint64_t> ipi_failures{0}; ///< send_ipi refused (worker falls back to a self-IPI)
    std::atomic<std::uint64_t> started{0};      ///< callbacks begun (PENDING cleared): backlog's other half
    std::atomic<std::uint64_t> runs_hard{0};    ///< hard callbacks run
    std::atomic<std::uint64_t> runs_lazy{0};    ///< lazy and LAZY callbacks run
    std::atomic<std::uint64_t> ticks{0};        ///< ticks that found LAZY items
    std::atomic<std::uint64_t> tick_restarts{0}; ///< LAZY adds that woke a worker whose tick had stopped
};

// ---------------------------------------------------------------------------------------------
// Producer side: add a claimed item to a list and raise (__irq_work_queue_local, irq_work_queue_on)
// ---------------------------------------------------------------------------------------------

/// IPI to the CPU's worker; only the add that made the raised list non-empty gets here.
[[gnu::noinline]] inline void irq_work_raise_hard(irq_work_cpu& pc) noexcept RTDEFER_NONBLOCKING {
    // relaxed: statistics.
    pc.hard_raises.fetch_add(1, std::memory_order_relaxed);
    if (RTDEFER_UNLIKELY(send_ipi(*pc.worker) != status::ok)) {
        // Only a full signal queue (no_space: RLIMIT_SIGPENDING) can refuse it while the domain
        // lives; the worker checks its raised list when woken and interrupts itself (or, refused
        // again, runs the list in thread context).
        pc.ipi_failures.fetch_add(1, std::memory_order_relaxed);
        (void)unpark(*pc.worker);
    }
}

/// Worker wake; only the add that made the lazy list non-empty gets here.
[[gnu::noinline]] inline void irq_work_wake_worker(irq_work_cpu& pc) noexcept RTDEFER_NONBLOCKING {
    // relaxed: statistics.
    pc.lazy_raises.fetch_add(1, std::memory_order_relaxed);
    // unpark's release exchange (PK2) orders our llist add before the worker's token consumption;
    // futex_wake only if the worker sleeps.
    (void)unpark(*pc.worker);
}

/// LAZY add to an empty tick list while the worker's tick is stopped: wake it to restart the tick.
[[gnu::noinline]] inline void irq_work_restart_tick(irq_work_cpu& pc) noexcept RTDEFER_NONBLOCKING {
    // relaxed: statistics.
    pc.tick_restarts.fetch_add(1, std::memory_order_relaxed);
    (void)unpark(*pc.worker);
}

/// Effects: adds the node of a claimed item to list `l` of `pc`; the add that makes the list
/// non-empty stamps the backlog clock and raises: an IPI (raised), a worker wake (lazy), or, for the
/// tick list, a wake only if the worker's tick is stopped (the kernel's `lazy_work &&
/// tick_nohz_tick_stopped()`). Progress: lock-free. Real-time safety: a vDSO clock read and at most
/// one syscall, both only on an empty→non-empty transition; async-signal-safe.
inline void irq_work_enqueue(irq_work_cpu& pc, llist_node& node, irq_work_list l) noexcept RTDEFER_NONBLOCKING {
    // relaxed: statistics; before the add, so the runner's `started` for this item follows it.
    pc.queued.fetch_add(1, std::memory_order_relaxed);
    // (IQ2) llist add: release CAS publishes the item to the runner's del_all (acquire).
    if (!pc.list(l).add(node))
        return;
    // relaxed: statistics (what a racing reader may see is described at irq_work_stats).
    pc.since_ns[static_cast<std::size_t>(l)].store(mono_ns(), std::memory_order_relaxed);
    switch (l) {
    case irq_work_list::raised: irq_work_raise_hard(pc); break;
    case irq_work_list::lazy: irq_work_wake_worker(pc); break;
    case irq_work_list::tick:
        if (pc.nohz.stopped_at_add())
            irq_work_restart_tick(pc);
        break;
    }
}

// ---------------------------------------------------------------------------------------------
// Worker registry: interrupt hook → per-CPU state
// ---------------------------------------------------------------------------------------------
//
// The interrupt hook is process-wide and receives only the interrupted thread's ctx. Each worker
// thread registers (its ctx, its irq_work_cpu) in a fixed table when it starts and removes itself
// before it exits. The hook compares ctx pointers only; it dereferences an entry's irq_work_cpu only
// when the entry's ctx is its own thread's, and that entry was written by this same thread (a signal
// handler sees its own thread's earlier writes), and is cleared by this same thread before its domain
// can go away. Entries of other threads are compared, never followed: no cross-thread lifetime issue.

struct irq_work_worker_entry {
    std::atomic<const thread_ctx*> worker{nullptr};
    std::atomic<irq_work_cpu*> pcpu{nullptr};
};

inline constexpr std::size_t irq_work_max_workers = 256;

struct irq_work_registry {
    std::array<irq_work_worker_entry, irq_work_max_workers> entries{};
    std::atomic<std::size_t> high_water{0}; ///< entries at or above this index were never used
};

/// Constant-initialised (atomics have constexpr constructors): no guard, usable from the handler.
inline irq_work_registry irq_work_workers;

/// Effects: registers the calling worker thread `self` as the runner of `pc`.
/// Returns: false when the table is full. Setup path (worker start); never from the hot path.
inline bool irq_work_register_worker(const thread_ctx& self, irq_work_cpu& pc) noexcept {
    auto& reg = irq_work_workers;
    for (std::size_t i = 0; i < irq_work_max_workers; ++i) {
        const thread_ctx* expected = nullptr;
        // relaxed (both): the CAS only arbitrates which worker owns the entry; the entry is read for
        // dereference only by this thread's own signal handler (see above).
        if (!reg.entries[i].worker.compare_exchange_strong(expected, &self, std::memory_order_relaxed,
                                                           std::memory_order_relaxed))
            continue;
        // relaxed: read back only by this thread (its interrupt hook). A signal between the CAS and
        // this store sees nullptr and skips; no hard item can target us before the domain exists.
        reg.entries[i].pcpu.store(&pc, std::memory_order_relaxed);
        // relaxed: a scan bound. Only this thread's own hook must see the entry, and it does
        // (program order); other threads' scans never act on our entry.
        std::size_t hw = reg.high_water.load(std::memory_order_relaxed);
        while (hw < i + 1 &&
               !reg.high_water.compare_exchange_weak(hw, i + 1, std::memory_order_relaxed, std::memory_order_relaxed)) {
        }
        return true;
    }
    return false;
}

/// Effects: removes the calling worker thread's entry (before the thread exits, so a later thread
/// whose ctx reuses the address never matches a stale entry).
inline void irq_work_unregister_worker(const thread_ctx& self) noexcept {
    auto& reg = irq_work_workers;
    // relaxed: see irq_work_register_worker; the exit of this thread and the freeing of its ctx are
    // ordered after these stores by thread join / the ctx refcount.
    const std::size_t n = reg.high_water.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < n; ++i) {
        if (reg.entries[i].worker.load(std::memory_order_relaxed) == &self) {
            reg.entries[i].pcpu.store(nullptr, std::memory_order_relaxed);
            reg.entries[i].worker.store(nullptr, std::memory_order_relaxed);
        }
    }
}

/// Returns: the irq_work_cpu whose worker is the calling thread `self`, or nullptr.
/// Progress: wait-free, O(high-water) loads. Async-signal-safe (the interrupt hook calls it).
inline irq_work_cpu* irq_work_worker_of(const thread_ctx* self) noexcept RTDEFER_NONBLOCKING {
    if (self == nullptr)
        return nullptr;
    auto& reg = irq_work_workers;
    // relaxed throughout: we act only on the entry naming `self`, which `self`'s thread (the caller)
    // wrote; all other entries are compared and skipped.
    const std::size_t n = reg.high_water.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < n; ++i)
        if (reg.entries[i].worker.load(std::memory_order_relaxed) == self)
            return reg.entries[i].pcpu.load(std::memory_order_relaxed);
    return nullptr;
}

} // namespace detail
} // namespace rtdefer
