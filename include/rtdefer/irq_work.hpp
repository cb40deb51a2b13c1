// rtdefer/irq_work.hpp: hand work from a real-time thread (or a signal handler) to a per-CPU worker,
// the userspace analogue of the kernel's irq_work with the PREEMPT_RT per-CPU irq_work/N threads
// ("irq_work: Handle some irq_work in a per-CPU thread on PREEMPT_RT", kernel/irq_work.c).
//
//   kernel                                    rtdefer
//   struct irq_work, IRQ_WORK_INIT{,_LAZY,_HARD}  irq_work, irq_work_init{,_lazy,_hard}, irq_work_fn<F>
//   per-CPU raised_list (hard IRQ)            irq_work_cpu::raised, run by the interrupt hook on the
//                                             CPU's worker thread (signal context: async-signal-safe)
//   per-CPU lazy_list + irq_workd thread      irq_work_cpu::lazy, run by the worker `irq_work/N`
//                                             (SCHED_FIFO 1 by default, pinned): may lock and free
//   IRQ_WORK_LAZY, run from the tick          irq_work_cpu::tick, run at the worker's periodic tick,
//   tick_nohz_tick_stopped()                  which stops after idle periods (irq_work_cpu::tick_stopped)
//   arch_irq_work_raise / IPI                 send_ipi(worker) (tgkill with the interrupt signal)
//   wake_up_process(irq_workd)                unpark(worker) (futex_wake only if it sleeps)
//   irq_work_sync + rcuwait                   irq_work_sync: futex in a static hashed table
//
// Flag word of an item (as the kernel's table, plus a count of runs in progress; LAZY and HARD_IRQ
// are constant kind bits):
//
//   state     on a list  PENDING BUSY ACTIVE  transitions
//   free      no            0     0     0     → claimed  queue: fetch_or(CLAIMED) saw !PENDING    (1)
//   claimed   no            1     1     n     → pending  queue: llist add to one per-CPU list
//   pending   yes           1     1     n     → busy     runner: PENDING off, ACTIVE+1, one RMW   (3)
//   busy      no            0     1    n>0    → free     the last runner out (ACTIVE 1→0, no
//                                                        PENDING) clears BUSY in the same CAS     (4)
//                                             → claimed  queue during func (re-queue): runs again
//
// ACTIVE is where rtdefer departs from the kernel, whose runner clears BUSY with
// cmpxchg(flags, flags & ~BUSY) "if no one else claimed it meanwhile". If a callback re-queues its item
// to another CPU and that second run finishes first, its cmpxchg clears BUSY while the first callback
// still runs, and irq_work_sync() returns early (tests/model/irq_work_cmpxchg_flawed.pml is spin's
// counterexample). Counting runs makes "BUSY clear" mean "nobody is inside func and nothing is
// pending" however runs overlap; with one run at a time it is exactly the kernel's protocol.
//
// A failed claim (fetch_or saw PENDING) still guarantees that the pending run sees everything the
// failed claimer wrote before its claim: its fetch_or precedes the runner's PENDING clear (3) in the
// flag word's modification order (else it would have seen PENDING clear and won the claim), it is a
// release RMW, and (3) is an acquire RMW reading from the release sequence it heads. This is the
// kernel's "pairing smp_mb() in irq_work_single()" argument; C++ RMWs make the full barrier implicit.
//
// Which operations may run concurrently (same item or same domain), "-" = freely, "X" = not allowed:
//
//                    queue/queue_on  runner  irq_work_sync  domain destructor
//   queue/queue_on         -           -           -              X (from outside callbacks)
//   runner (worker/hook)               -           -              -
//   irq_work_sync                                  -              -
//
// Lifetimes: the item is the caller's memory. A runner's last access to it is its ACTIVE
// decrement (4); after that it touches only a static wait bucket. So once irq_work_sync() returned ok (or
// irq_work_is_busy() read false), the caller may free the item. A callback must not free its own item
// (the runner still updates the flag word after func returns): hand memory over instead, e.g. push
// buffers on an llist and queue one long-lived item whose callback frees them (docs/irq_work.md).
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/cancel_hold.hpp>
#include <rtdefer/detail/irq_work_percpu.hpp>
#include <rtdefer/detail/syscall.hpp>
#include <rtdefer/interrupt.hpp>
#include <rtdefer/llist.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/rt_thread.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

// Hard callbacks are called through the item's plain function pointer from the (nonblocking)
// interrupt hook: one item type serves both kinds, so the pointer cannot carry [[clang::nonblocking]].
// The call is exempted from -Wfunction-effects here; RealtimeSanitizer still checks hard callbacks at
// run time, because the hook is a real-time context.
#if RTDEFER_HAS_FUNCTION_EFFECTS
#define RTDEFER_IRQ_WORK_TRUST_BEGIN                                                               \
    _Pragma("clang diagnostic push") _Pragma("clang diagnostic ignored \"-Wfunction-effects\"")
#define RTDEFER_IRQ_WORK_TRUST_END _Pragma("clang diagnostic pop")
#else
#define RTDEFER_IRQ_WORK_TRUST_BEGIN
#define RTDEFER_IRQ_WORK_TRUST_END
#endif

namespace rtdefer {

/// Flag bits of irq_work::flags (include/linux/smp_types.h).
namespace irq_work_flags {
inline constexpr std::uint32_t pending = 0x01;  ///< queued, callback not started
inline constexpr std::uint32_t busy = 0x02;     ///< claimed or callback in progress
inline constexpr std::uint32_t lazy = 0x04;     ///< no wake: wait for the worker's tick
inline constexpr std::uint32_t hard_irq = 0x08; ///< run in interrupt (signal) context
inline constexpr std::uint32_t claimed = pending | busy;
inline constexpr std::uint32_t kind_mask = lazy | hard_irq;
inline constexpr std::uint32_t active_one = 0x100;        ///< one run in progress (ACTIVE count unit)
inline constexpr std::uint32_t active_mask = 0xFFFFFF00u; ///< runs in progress (bits 8..31)
} // namespace irq_work_flags

/// Where an item runs.
enum class irq_work_kind : std::uint32_t {
    normal = 0,                       ///< in the CPU's worker thread, woken at once (kernel on RT: default)
    lazy = irq_work_flags::lazy,      ///< in the worker thread, at its next tick (IRQ_WORK_LAZY)
    hard = irq_work_flags::hard_irq,  ///< in interrupt context on the CPU's worker (IRQ_WORK_HARD_IRQ)
};

struct irq_work;

/// Callback type. Hard callbacks must be async-signal-safe and nonblocking; others may lock and free
/// (but not free their own item). An exception escaping a callback terminates (noexcept).
/// A hard item interrupts whatever its worker runs, and the interrupt signal has no SA_RESTART: a
/// blocking syscall in a normal/LAZY callback may return EINTR (retry it) or sleep shorter.
using irq_work_func = void (*)(irq_work&) noexcept;

/// A work item: caller-owned, intrusive, reusable. Standard-layout so the lists can use llist_entry.
/// Members are public for llist_entry and tests; use them only through the functions below.
struct irq_work {
    llist_node node{};                    ///< link while PENDING on one per-CPU list
    std::atomic<std::uint32_t> flags{0};  ///< PENDING | BUSY | LAZY | HARD_IRQ | ACTIVE count
    irq_work_func func = nullptr;         ///< the callback (constant while the item is in use)

    constexpr irq_work() noexcept = default;
    constexpr explicit irq_work(irq_work_func f, irq_work_kind kind = irq_work_kind::normal) noexcept
        : flags(static_cast<std::uint32_t>(kind)), func(f) {}
    irq_work(const irq_work&) = delete;
    irq_work& operator=(const irq_work&) = delete;
};

static_assert(std::is_standard_layout_v<irq_work>, "llist_entry needs a standard-layout irq_work");

/// IRQ_WORK_INIT / IRQ_WORK_INIT_LAZY / IRQ_WORK_INIT_HARD: `irq_work w = irq_work_init_lazy(&fn);`
[[nodiscard]] constexpr irq_work irq_work_init(irq_work_func f) noexcept { return irq_work{f}; }
[[nodiscard]] constexpr irq_work irq_work_init_lazy(irq_work_func f) noexcept { return irq_work{f, irq_work_kind::lazy}; }
[[nodiscard]] constexpr irq_work irq_work_init_hard(irq_work_func f) noexcept { return irq_work{f, irq_work_kind::hard}; }

/// Effects: (re)initialises a free item with a new callback and kind (init_irq_work).
/// Precondition: the item is not busy (asserted). Progress: wait-free.
/// Real-time safety: two stores, no allocation; not for an item another thread may queue meanwhile.
inline void init_irq_work(irq_work& w, irq_work_func f, irq_work_kind kind = irq_work_kind::normal) noexcept {
    // acquire: pairs with the runner's release (4): its accesses are done before we overwrite func.
    RTDEFER_ASSERT((w.flags.load(std::memory_order_acquire) & irq_work_flags::busy) == 0,
                   "init_irq_work on a pending or running item");
    w.func = f;
    // relaxed: the item is free and private to the caller; a later queue publishes it (release (1)).
    w.flags.store(static_cast<std::uint32_t>(kind), std::memory_order_relaxed);
}

/// An item that stores its callable inline (no allocation): `irq_work_fn w{[&]{ ... }};` or with a
/// kind: `irq_work_fn w{f, irq_work_kind::lazy};`. The callable is invoked as f(item) if it accepts
/// the item, else as f(). Not copyable or movable (it may be on a list).
/// Effects (constructor): moves `f` into the item. Progress: as F's move. Real-time safety: no
/// allocation by the library (F's move may allocate, e.g. std::function's).
template <class F> class irq_work_fn : public irq_work {
public:
    explicit irq_work_fn(F f, irq_work_kind kind = irq_work_kind::normal) noexcept(
        std::is_nothrow_move_constructible_v<F>)
        : irq_work(&trampoline, kind), fn_(std::move(f)) {}

    /// Returns: the stored callable.
    F& callable() noexcept { return fn_; }

private:
    static void trampoline(irq_work& w) noexcept {
        auto& self = static_cast<irq_work_fn&>(w);
        if constexpr (std::is_invocable_v<F&, irq_work_fn&>)
            self.fn_(self);
        else
            self.fn_();
    }
    F fn_;
};

template <class F> irq_work_fn(F) -> irq_work_fn<F>;
template <class F> irq_work_fn(F, irq_work_kind) -> irq_work_fn<F>;

// ---------------------------------------------------------------------------------------------
// Predicates
// ---------------------------------------------------------------------------------------------

/// Returns: whether the item is queued and its callback has not started (irq_work_is_pending).
/// A snapshot. Progress: wait-free. Real-time safety: one load; async-signal-safe.
[[nodiscard]] inline bool irq_work_is_pending(const irq_work& w) noexcept RTDEFER_NONBLOCKING {
    // acquire: pairs with (3)/(4); a caller acting on "not pending" sees the runner's progress.
    return (w.flags.load(std::memory_order_acquire) & irq_work_flags::pending) != 0;
}

/// Returns: whether the item is claimed, queued or running (irq_work_is_busy). Reading false means
/// the runner will not touch the item again unless someone queues it again.
/// Progress: wait-free. Real-time safety: one load; async-signal-safe.
[[nodiscard]] inline bool irq_work_is_busy(const irq_work& w) noexcept RTDEFER_NONBLOCKING {
    // (7) acquire: pairs with release (4): the runner's accesses to the item happen-before ours.
    return (w.flags.load(std::memory_order_acquire) & irq_work_flags::busy) != 0;
}

/// Returns: whether the item is a hard (interrupt-context) item. Wait-free, async-signal-safe.
[[nodiscard]] inline bool irq_work_is_hard(const irq_work& w) noexcept RTDEFER_NONBLOCKING {
    // relaxed: kind bits never change while the item is in use.
    return (w.flags.load(std::memory_order_relaxed) & irq_work_flags::hard_irq) != 0;
}

/// Returns: whether the item is a LAZY (tick) item. Wait-free, async-signal-safe.
[[nodiscard]] inline bool irq_work_is_lazy(const irq_work& w) noexcept RTDEFER_NONBLOCKING {
    // relaxed: kind bits never change while the item is in use.
    return (w.flags.load(std::memory_order_relaxed) & irq_work_flags::lazy) != 0;
}

// ---------------------------------------------------------------------------------------------
// Domain
// ---------------------------------------------------------------------------------------------

struct irq_work_domain_options {
    sched_policy policy = sched_policy::fifo; ///< worker policy (kernel: sched_set_fifo_low)
    int priority = 1;                         ///< worker priority: lowest RT, above all SCHED_OTHER
    bool require_rt = false;                  ///< throw if SCHED_FIFO is refused instead of falling back
    bool lock_memory = false;                 ///< mlockall from the first worker
    /// Tick period for LAZY items; zero turns the tick off. With the tick off, LAZY items wake the
    /// worker like normal ones, as the kernel raises LAZY work at once when the tick is stopped
    /// (tick_nohz_tick_stopped() in __irq_work_queue_local).
    std::chrono::nanoseconds tick = std::chrono::milliseconds(1);
    /// nohz: the tick stops after this many consecutive periods without LAZY work (0: never stops),
    /// so an idle worker sleeps instead of waking every period. While it is stopped, the LAZY add
    /// that makes the tick list non-empty wakes the worker, which restarts the tick; the item then
    /// runs one period later. A producer that queues LAZY work at least every `tick_stop_after`
    /// periods never makes a syscall.
    std::uint32_t tick_stop_after = 100;
    /// CPUs to serve (one worker each). Empty: every CPU the constructing thread may run on.
    std::vector<int> cpus;
    /// Interrupt signal to install when none is installed yet (0: default_interrupt_signal()).
    int interrupt_signal = 0;
};

/// Per-CPU counters of a domain (for tests and benchmarks; a snapshot). Consistent with sync: a run
/// (and the tick that ran it) is counted before its item's BUSY clear, so stats() read after
/// irq_work_sync(w) returned ok include w's last run (runs_hard/runs_lazy, ticks).
struct irq_work_stats {
    std::uint64_t hard_raises = 0;  ///< IPIs sent (raised list went empty→non-empty)
    std::uint64_t lazy_raises = 0;  ///< worker wakes attempted (lazy list went empty→non-empty)
    std::uint64_t futex_wakes = 0;  ///< futex_wake syscalls that woke the worker (it was asleep)
    std::uint64_t ipi_failures = 0; ///< send_ipi refused (handled by the worker's self-IPI fallback)
    std::uint64_t runs_hard = 0;    ///< hard callbacks run
    std::uint64_t runs_lazy = 0;    ///< lazy and LAZY callbacks run
    std::uint64_t ticks = 0;        ///< ticks that ran LAZY items
    std::uint64_t tick_restarts = 0; ///< LAZY adds that woke a worker whose tick had stopped (nohz)
    bool tick_stopped = false;       ///< the worker's tick is stopped right now (nohz)
};

class irq_work_domain;

namespace detail {
inline void irq_work_interrupt(thread_ctx* self) noexcept RTDEFER_NONBLOCKING;
struct irq_work_access;
} // namespace detail

/// Owns the per-CPU lists and one worker thread per CPU, named `irq_work/N`, pinned to CPU N,
/// SCHED_FIFO priority 1 by default. All threads are created by the constructor; a queue call never
/// creates one. The destructor runs whatever is still queued, then stops and joins the workers.
class irq_work_domain {
public:
    /// Effects: installs the interrupt signal (if not yet) and the irq_work interrupt hook, creates
    /// and starts one worker per CPU, and waits until each is ready.
    /// Throws: std::system_error: signal_in_use / busy from interrupt_install, no_space when the hook
    /// or worker tables are full, EPERM with require_rt, EINVAL for a CPU the process may not use.
    /// Progress: blocking. Real-time safety: setup path (allocates, creates threads).
    explicit irq_work_domain(irq_work_domain_options opts = {});

    /// Effects: runs every item still queued (hard items in interrupt context on their worker), then
    /// stops and joins the workers. Precondition: nobody queues to this domain any more, except the
    /// callbacks being drained (their re-queues run too, so an item that re-queues itself
    /// unconditionally keeps the destructor going). Progress: blocking. Real-time safety: teardown.
    ~irq_work_domain();

    irq_work_domain(const irq_work_domain&) = delete;
    irq_work_domain& operator=(const irq_work_domain&) = delete;

    // The accessors below are wait-free, allocate nothing and make no syscall.
    /// Returns: the CPUs this domain serves, in ascending order.
    [[nodiscard]] const std::vector<int>& cpus() const noexcept { return cpus_; }
    /// Returns: whether `cpu` has a worker in this domain (check before irq_work_queue_on() when the
    /// CPU comes from outside, e.g. another thread's sched_getcpu(): an unserved CPU is asserted).
    [[nodiscard]] bool serves(int cpu) const noexcept RTDEFER_NONBLOCKING { return slot_of(cpu) != nullptr; }
    /// Returns: the worker of `cpu` (precondition: serves(cpu)).
    [[nodiscard]] thread_ctx& worker(int cpu) const noexcept;
    /// Returns: the scheduling the worker of `cpu` got (policy, priority, fallback errno).
    [[nodiscard]] const sched_report& worker_sched(int cpu) const noexcept;
    /// Returns: a snapshot of the counters of `cpu` (precondition: serves(cpu)).
    [[nodiscard]] irq_work_stats stats(int cpu) const noexcept;
    /// Returns: the sum of stats() over all CPUs.
    [[nodiscard]] irq_work_stats total_stats() const noexcept;
    /// Returns: the tick period (zero: off).
    [[nodiscard]] std::chrono::nanoseconds tick() const noexcept { return tick_; }

private:
    friend struct detail::irq_work_access;

    [[nodiscard]] detail::irq_work_cpu* slot_of(int cpu) const noexcept RTDEFER_NONBLOCKING {
        return cpu >= 0 && static_cast<std::size_t>(cpu) < map_size_ ? map_[cpu] : nullptr;
    }
    /// The local CPU's slot; a CPU outside the domain (affinity changed since construction) falls
    /// back to a served one, so a local queue always lands somewhere that runs.
    [[nodiscard]] detail::irq_work_cpu& local_slot(int cpu) const noexcept RTDEFER_NONBLOCKING {
        detail::irq_work_cpu* pc = slot_of(cpu);
        return pc != nullptr ? *pc : pcpu_[static_cast<std::size_t>(cpu < 0 ? 0 : cpu) % n_];
    }
    [[nodiscard]] const detail::irq_work_cpu& checked_slot(int cpu) const noexcept {
        const detail::irq_work_cpu* pc = slot_of(cpu);
        RTDEFER_ASSERT(pc != nullptr, "irq_work_domain: CPU not served by this domain");
        return *pc;
    }

    void worker_main(thread_ctx& self, detail::irq_work_cpu& pc) noexcept;
    void stop_workers() noexcept;

    std::vector<int> cpus_;
    std::size_t n_ = 0;
    std::unique_ptr<detail::irq_work_cpu[]> pcpu_owner_;
    detail::irq_work_cpu* pcpu_ = nullptr;      // == pcpu_owner_.get(): plain pointer for hot paths
    std::unique_ptr<detail::irq_work_cpu*[]> map_owner_;
    detail::irq_work_cpu** map_ = nullptr;      // CPU id → slot (nullptr: not served)
    std::size_t map_size_ = 0;
    std::chrono::nanoseconds tick_{};
    bool tick_on_ = false;
    std::uint32_t tick_stop_after_ = 0;
    std::vector<rt_thread> workers_;
    // (D1) release in stop_workers / (D2) acquire in worker_main.
    std::atomic<bool> stop_{false};
};

// ---------------------------------------------------------------------------------------------
// Internals: claim, enqueue, run
// ---------------------------------------------------------------------------------------------

namespace detail {

struct irq_work_access {
    static irq_work_cpu* slot_of(const irq_work_domain& d, int cpu) noexcept RTDEFER_NONBLOCKING {
        return d.slot_of(cpu);
    }
    static irq_work_cpu& local_slot(const irq_work_domain& d, int cpu) noexcept RTDEFER_NONBLOCKING {
        return d.local_slot(cpu);
    }
    static bool tick_on(const irq_work_domain& d) noexcept RTDEFER_NONBLOCKING { return d.tick_on_; }
};

/// Claims `w` (irq_work_claim). Returns: the previous flags, or ~0u if it was already pending.
inline std::uint32_t irq_work_claim(irq_work& w) noexcept RTDEFER_NONBLOCKING {
    // (1) acq_rel fetch_or(CLAIMED):
    //     release: on failure, publishes what the caller wrote before; the pending run's acquire (3)
    //              reads from this RMW's release sequence (the ordering argument at the top).
    //     acquire: on success, pairs with the previous runner's release (4): its last accesses to the
    //              item (func, node) happen-before we relink the node.
    const std::uint32_t old = w.flags.fetch_or(irq_work_flags::claimed, std::memory_order_acq_rel);
    return (old & irq_work_flags::pending) != 0 ? ~std::uint32_t{0} : old;
}

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

/// Enqueue a claimed item on `pc` (__irq_work_queue_local / irq_work_queue_on).
inline void irq_work_enqueue(const irq_work_domain& d, irq_work_cpu& pc, irq_work& w,
                             std::uint32_t kind) noexcept RTDEFER_NONBLOCKING {
    if ((kind & irq_work_flags::hard_irq) != 0) {
        // (2) llist add: release CAS publishes the item to the hook's del_all (acquire).
        if (pc.raised.add(w.node))
            irq_work_raise_hard(pc);
    } else if ((kind & irq_work_flags::lazy) != 0 && irq_work_access::tick_on(d)) {
        // LAZY: the worker's tick runs it. Raise only if this add made the list non-empty while the
        // tick is stopped (the kernel's `lazy_work && tick_nohz_tick_stopped()`).
        if (pc.tick.add(w.node)) {
            // (T2) acq_rel RMW on tick_stopped, paired with the worker's RMW (T1). RMWs on one word
            //      are totally ordered and each reads the latest value: if (T1) came first we read
            //      1 and wake the worker; if ours came first, (T1) reads from our release, so the
            //      worker's emptiness re-check after (T1) sees our add and it keeps ticking. (A
            //      fence pair would do too, but RMWs are what ThreadSanitizer understands.)
            if (pc.tick_stopped.fetch_or(0, std::memory_order_acq_rel) != 0)
                irq_work_restart_tick(pc);
        }
    } else if (pc.lazy.add(w.node)) {
        irq_work_wake_worker(pc);
    }
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
    RTDEFER_IRQ_WORK_TRUST_BEGIN
    return irq_work_thread_runs;
    RTDEFER_IRQ_WORK_TRUST_END
}

/// irq_work_single, first half: PENDING off, one more run in progress.
inline void irq_work_single_begin(irq_work& w) noexcept RTDEFER_NONBLOCKING {
    // (3) acq_rel fetch_add(ACTIVE_ONE - PENDING): PENDING is set (we took the item off a list and only
    //     a runner clears it), so adding 0xFF clears bit 0 and adds one to ACTIVE in one RMW. From here
    //     on the item may be claimed again (re-queued, even by its own callback) and runs again.
    //     acquire: pairs with release (1) of every claim, failed ones included, that precedes this in
    //              the flag word's modification order: func sees what those claimers wrote.
    //     release: orders our del_all of the node before a new claimer's relink of it.
    //     (The kernel writes PENDING off with atomic_set and adds smp_mb(); an RMW makes that implicit.)
    (void)w.flags.fetch_add(irq_work_flags::active_one - irq_work_flags::pending, std::memory_order_acq_rel);
}

/// irq_work_single, second half: one run fewer; the last one out with nothing pending clears BUSY
/// and wakes syncers.
inline void irq_work_single_end(irq_work& w) noexcept RTDEFER_NONBLOCKING {
    const auto addr = reinterpret_cast<std::uintptr_t>(&w); // the wake needs the address, not the item
    // relaxed: only seeds the CAS.
    std::uint32_t old = w.flags.load(std::memory_order_relaxed);
    std::uint32_t next;
    do {
        next = old - irq_work_flags::active_one;
        if ((next & (irq_work_flags::pending | irq_work_flags::active_mask)) == 0)
            next &= ~irq_work_flags::busy;
        // (4) = (S1) seq_cst CAS, this runner's LAST access to the item:
        //     release: everything this run did with the item happens-before a syncer's acquire
        //              (7)/(S5) that reads BUSY clear (other runs' decrements are earlier RMWs of the
        //              same release sequence), and before the next claimer's acquire (1).
        //     seq_cst: store→load against (S2) in irq_work_wake_syncers (see the table there).
        //     relaxed on failure: we only retry with the fresh value.
    } while (!w.flags.compare_exchange_weak(old, next, std::memory_order_seq_cst, std::memory_order_relaxed));
    if ((next & irq_work_flags::busy) == 0)
        irq_work_wake_syncers(addr);
}

/// Counts one finished run in `counter` BEFORE the run's BUSY clear (4): a thread whose
/// irq_work_sync() returned, or that read BUSY clear, reads statistics that include this run.
/// relaxed: sequenced before the release (4), which the syncer's acquire (7)/(S5) reads, so the
/// syncer's later load of the counter sees this increment (write-read coherence); no other order.
inline void irq_work_count_run(std::atomic<std::uint64_t>& counter) noexcept RTDEFER_NONBLOCKING {
    counter.fetch_add(1, std::memory_order_relaxed);
}

/// Runs one hard item (in interrupt context or irq_work_run()), its frame pushed on `runs`; counted
/// in `counter` before its BUSY clear.
inline void irq_work_single_hard(irq_work& w, irq_work_run_stack& runs,
                                 std::atomic<std::uint64_t>& counter) noexcept RTDEFER_NONBLOCKING {
    irq_work_single_begin(w);
    // relaxed: see irq_work_run_stack (one thread; the call below is opaque, so the push is done).
    const irq_work_run_frame frame{&w, runs.top.load(std::memory_order_relaxed)};
    runs.top.store(&frame, std::memory_order_relaxed);
    RTDEFER_IRQ_WORK_TRUST_BEGIN
    w.func(w);
    RTDEFER_IRQ_WORK_TRUST_END
    runs.top.store(frame.outer, std::memory_order_relaxed); // relaxed: as above
    irq_work_count_run(counter);
    irq_work_single_end(w);
}

/// Runs one lazy item in the worker, counted as irq_work_single_hard. Deliberately not nonblocking:
/// lazy callbacks may lock and free.
inline void irq_work_single_lazy(irq_work& w, irq_work_run_stack& runs, std::atomic<std::uint64_t>& counter) noexcept {
    irq_work_single_begin(w);
    // relaxed: as in irq_work_single_hard.
    const irq_work_run_frame frame{&w, runs.top.load(std::memory_order_relaxed)};
    runs.top.store(&frame, std::memory_order_relaxed);
    w.func(w);
    runs.top.store(frame.outer, std::memory_order_relaxed);
    irq_work_count_run(counter);
    irq_work_single_end(w);
}

inline irq_work& irq_work_of(llist_node* n) noexcept RTDEFER_NONBLOCKING {
    return *llist_entry<irq_work, &irq_work::node>(n);
}

/// irq_work_run_list for the raised list; frames go on `runs` (the calling thread's stack).
/// Returns: callbacks run. Async-signal-safe.
inline std::size_t irq_work_run_hard_list(irq_work_cpu& pc, irq_work_run_stack& runs) noexcept RTDEFER_NONBLOCKING {
    // del_all (acquire, pairs with the adds' release (2)); FIFO order per CPU (the kernel runs the
    // chain newest-first; oldest-first costs one pass and is what users expect).
    llist_node* n = llist_reverse_order(pc.raised.del_all());
    std::size_t count = 0;
    while (n != nullptr) {
        llist_node* next = n->next; // read before the callback: it may re-queue the item
        irq_work_single_hard(irq_work_of(n), runs, pc.runs_hard);
        n = next;
        ++count;
    }
    return count;
}

/// irq_work_run_list for the lazy and tick lists, in the worker (or the destructor's drain); frames
/// go on `runs`. A non-empty list counts one in `batches` (if given: the tick's `ticks`) before its
/// first item's BUSY clear, so a syncer of any of its items sees the tick counted.
/// Returns: callbacks run.
inline std::size_t irq_work_run_lazy_list(irq_work_cpu& pc, llist_head& list, irq_work_run_stack& runs,
                                          std::atomic<std::uint64_t>* batches = nullptr) noexcept {
    llist_node* n = llist_reverse_order(list.del_all());
    if (n != nullptr && batches != nullptr)
        irq_work_count_run(*batches);
    std::size_t count = 0;
    while (n != nullptr) {
        llist_node* next = n->next;
        irq_work_single_lazy(irq_work_of(n), runs, pc.runs_lazy);
        n = next;
        ++count;
    }
    return count;
}

/// The interrupt hook: on a worker thread, run its CPU's raised list (the hard IRQ handler).
/// Every interrupt signal calls every hook, so the miss case (not a worker) is one short scan.
inline void irq_work_interrupt(thread_ctx* self) noexcept RTDEFER_NONBLOCKING {
    if (irq_work_cpu* pc = irq_work_worker_of(self))
        (void)irq_work_run_hard_list(*pc, pc->running); // we are pc's worker thread
}

} // namespace detail

// ---------------------------------------------------------------------------------------------
// Queueing
// ---------------------------------------------------------------------------------------------

/// Effects: queues `w` on CPU `cpu` of `d` unless it is already pending (irq_work_queue_on). Only the
/// add that makes a list non-empty raises anything: a hard item sends the interrupt signal to the
/// CPU's worker; a normal item (or a LAZY one with the tick off) wakes the worker; a LAZY item waits
/// for the tick. May be called while the item's callback runs (it then runs again), from any thread
/// and from signal handlers. Precondition: d.serves(cpu) (asserted).
/// Returns: true if queued; false if it was already pending: the pending run will see everything the
/// caller wrote before this call (the claim's ordering argument, top of file).
/// Progress: lock-free (one fetch_or, one CAS loop on the list head). Real-time safety: no allocation,
/// no lock; one syscall (tgkill or futex_wake) only on an empty→non-empty transition, and the futex
/// wake only if the worker sleeps; async-signal-safe.
[[nodiscard]] inline bool irq_work_queue_on(irq_work_domain& d, irq_work& w, int cpu) noexcept RTDEFER_NONBLOCKING {
    detail::irq_work_cpu* pc = detail::irq_work_access::slot_of(d, cpu);
    RTDEFER_ASSERT(pc != nullptr, "irq_work_queue_on: the domain has no worker on that CPU");
    RTDEFER_ASSERT(w.func != nullptr, "irq_work_queue_on: item without a callback");
    const std::uint32_t old = detail::irq_work_claim(w);
    if (old == ~std::uint32_t{0})
        return false;
    detail::irq_work_enqueue(d, *pc, w, old & irq_work_flags::kind_mask);
    return true;
}

/// Effects: as irq_work_queue_on() for the calling thread's CPU (sched_getcpu through rseq/vDSO, no
/// syscall). Without preempt_disable() in userspace, a thread migrating right after the CPU lookup
/// queues to the CPU it just left; the item then runs there, as with irq_work_queue_on(). A CPU the
/// domain does not serve (affinity or cpuset changed since construction, a CPU brought online later)
/// falls back to a served one: a local queue always lands on a list that some worker runs.
/// Returns, Progress, Real-time safety: as irq_work_queue_on().
[[nodiscard]] inline bool irq_work_queue(irq_work_domain& d, irq_work& w) noexcept RTDEFER_NONBLOCKING {
    RTDEFER_ASSERT(w.func != nullptr, "irq_work_queue: item without a callback");
    const std::uint32_t old = detail::irq_work_claim(w);
    if (old == ~std::uint32_t{0})
        return false;
    detail::irq_work_cpu& pc = detail::irq_work_access::local_slot(d, detail::current_cpu());
    detail::irq_work_enqueue(d, pc, w, old & irq_work_flags::kind_mask);
    return true;
}

// ---------------------------------------------------------------------------------------------
// Running from hard context, queries
// ---------------------------------------------------------------------------------------------

/// Effects: runs the calling CPU's raised (hard) list here and now, as the kernel's irq_work_run()
/// does from the IPI handler; if the CPU's lazy list is non-empty, wakes its worker (wake_irq_workd).
/// Meant for hard context (a signal handler of your own, or a real-time thread that wants its hard
/// items now); the worker's interrupt hook does the same thing on its own.
/// Cancellation: held off while a chain is in hand (an asynchronous pthread_cancel of the caller
/// is acted on when it returns; every item it took has run).
/// Returns: the number of callbacks run. Progress: runs callbacks. Real-time safety: no allocation,
/// no lock in the library, no syscall for the hold; async-signal-safe if the callbacks are.
inline std::size_t irq_work_run(irq_work_domain& d) noexcept RTDEFER_NONBLOCKING {
    detail::irq_work_cpu& pc = detail::irq_work_access::local_slot(d, detail::current_cpu());
    // The caller's thread is not ours: hold cancellation off from the detach until the chain has
    // run and the worker is woken (detail/cancel_hold.hpp); restored on return, with nothing in hand.
    // Engaged only when there is a chain to take; with none we take nothing (no del_all): an item
    // added after the check raised the worker's interrupt, which runs it.
    detail::cancel_hold hold;
    std::size_t n = 0;
    if (!pc.raised.empty()) {
        hold.engage();
        // Not necessarily pc's worker: frames go on this thread's own stack (one TLS access per call).
        n = detail::irq_work_run_hard_list(pc, detail::irq_work_thread_stack());
    }
    if (!pc.lazy.empty())
        (void)unpark(*pc.worker);
    return n;
}

/// Returns: whether `cpu` has queued work of any kind (irq_work_needs_cpu: the kernel asks this
/// before stopping the tick). A snapshot. Precondition: d.serves(cpu).
/// Progress: wait-free. Real-time safety: three loads; async-signal-safe.
[[nodiscard]] inline bool irq_work_needs_cpu(const irq_work_domain& d, int cpu) noexcept RTDEFER_NONBLOCKING {
    const detail::irq_work_cpu* pc = detail::irq_work_access::slot_of(d, cpu);
    RTDEFER_ASSERT(pc != nullptr, "irq_work_needs_cpu: the domain has no worker on that CPU");
    return !pc->raised.empty() || !pc->lazy.empty() || !pc->tick.empty();
}

/// Returns: irq_work_needs_cpu() for the calling thread's CPU.
[[nodiscard]] inline bool irq_work_needs_cpu(const irq_work_domain& d) noexcept RTDEFER_NONBLOCKING {
    const detail::irq_work_cpu& pc = detail::irq_work_access::local_slot(d, detail::current_cpu());
    return !pc.raised.empty() || !pc.lazy.empty() || !pc.tick.empty();
}

// ---------------------------------------------------------------------------------------------
// Synchronisation
// ---------------------------------------------------------------------------------------------

/// Effects: blocks until `w` is not busy, i.e. its claimed or running callback has finished and the
/// runner will not touch the item again (unless someone queues it again), or until `deadline`.
/// Blocks on a futex of a static hashed table, never inside the item, never spinning. Called on a
/// worker thread, it first runs that worker's own lists (so waiting for an item queued behind us on
/// our own CPU cannot deadlock) and re-checks every millisecond while it waits.
/// Returns: ok (the caller may free the item); would_deadlock if called from the item's own callback
/// (or from a hard callback that interrupted it), where waiting could never end, or from hard
/// (interrupt) context while the item is busy: a signal handler must not wait (the kernel's
/// irq_work_sync asserts interrupts are enabled); timed_out.
/// Progress: blocking. Real-time safety: blocking (a futex wait); not for hard context.
[[nodiscard]] inline status irq_work_sync_until(irq_work& w, std::chrono::steady_clock::time_point deadline) noexcept
    RTDEFER_BLOCKING {
    // (7) acquire: pairs with release (4): once we read BUSY clear, the runner is done with the item.
    if ((w.flags.load(std::memory_order_acquire) & irq_work_flags::busy) == 0)
        return status::ok;
    // Called from inside a run of `w` on this thread (its callback, or a hard callback that
    // interrupted it)? That run cannot finish while we wait: refuse instead of hanging.
    // A worker's runs are on its per-CPU stack; irq_work_run()'s and teardown's on the thread's.
    thread_ctx* self = current_thread_ctx();
    detail::irq_work_cpu* own = detail::irq_work_worker_of(self); // non-null on a worker thread
    for (const detail::irq_work_run_stack* runs : {own != nullptr ? &own->running : nullptr,
                                                   &detail::irq_work_thread_stack()}) {
        if (runs == nullptr)
            continue;
        // relaxed: our own thread's stack (see irq_work_run_stack).
        for (const detail::irq_work_run_frame* f = runs->top.load(std::memory_order_relaxed); f != nullptr;
             f = f->outer)
            if (f->item == &w)
                return status::would_deadlock;
    }
    // Hard context (a hard callback, or irq_work_run() in a signal handler) must not wait: the
    // thread it interrupted may be the one that has to run the item (a worker runs its own lazy
    // list), and helping here would run lazy callbacks, which may lock and free, in signal context.
    if (in_interrupt())
        return status::would_deadlock;
    const auto addr = reinterpret_cast<std::uintptr_t>(&w);
    detail::irq_work_wait_bucket& b = detail::irq_work_bucket_of(addr);
    // (S3) seq_cst: registration before the flag check (S5); see irq_work_wake_syncers.
    b.waiters.fetch_add(1, std::memory_order_seq_cst);
    status result = status::ok;
    for (;;) {
        if (own != nullptr) {
            // Help: the awaited item may be queued on our own lists, which only we run.
            (void)detail::irq_work_run_lazy_list(*own, own->lazy, own->running);
            (void)detail::irq_work_run_lazy_list(*own, own->tick, own->running);
        }
        // (S4) seq_cst: the futex snapshot precedes the flag check.
        const std::uint32_t seq = b.seq.load(std::memory_order_seq_cst);
        // (S5) seq_cst: also acquire, pairing with (4) as (7) does.
        if ((w.flags.load(std::memory_order_seq_cst) & irq_work_flags::busy) == 0)
            break;
        auto until = deadline;
        if (own != nullptr)
            until = std::min(until, std::chrono::steady_clock::now() + std::chrono::milliseconds(1));
        const bool timed = until != std::chrono::steady_clock::time_point::max();
        const timespec abs = detail::to_timespec(until);
        const int rc = detail::futex_wait(b.seq, seq, timed ? &abs : nullptr);
        if (rc == -ETIMEDOUT && std::chrono::steady_clock::now() >= deadline) {
            // One last look: the item may have finished exactly now.
            if ((w.flags.load(std::memory_order_seq_cst) & irq_work_flags::busy) != 0)
                result = status::timed_out;
            break;
        }
    }
    // relaxed: the count only gates wakes; a stale non-zero costs a spurious futex_wake.
    b.waiters.fetch_sub(1, std::memory_order_relaxed);
    return result;
}

/// Effects: irq_work_sync_until() without a deadline (irq_work_sync).
/// Returns: ok, or would_deadlock when called from the item's own callback or from hard context.
/// Progress: blocking. Real-time safety: blocking; not for hard context.
[[nodiscard]] inline status irq_work_sync(irq_work& w) noexcept RTDEFER_BLOCKING {
    return irq_work_sync_until(w, std::chrono::steady_clock::time_point::max());
}

// ---------------------------------------------------------------------------------------------
// Domain implementation (setup and teardown paths)
// ---------------------------------------------------------------------------------------------

inline irq_work_domain::irq_work_domain(irq_work_domain_options opts)
    : tick_(opts.tick), tick_stop_after_(opts.tick_stop_after) {
    tick_on_ = tick_.count() > 0;
    // Interrupt signal: keep whichever is installed; otherwise install the requested/default one.
    int signo = interrupt_signal();
    if (signo == 0)
        signo = opts.interrupt_signal != 0 ? opts.interrupt_signal : default_interrupt_signal();
    if (status st = interrupt_install(signo); st != status::ok)
        throw std::system_error(make_error_code(st), "irq_work_domain: interrupt_install");
    if (status st = interrupt_register_hook(&detail::irq_work_interrupt); st != status::ok)
        throw std::system_error(make_error_code(st), "irq_work_domain: interrupt_register_hook");

    cpus_ = std::move(opts.cpus);
    if (cpus_.empty()) {
        cpu_set_t set;
        CPU_ZERO(&set);
        if (::sched_getaffinity(0, sizeof(set), &set) != 0)
            throw std::system_error(errno, std::generic_category(), "irq_work_domain: sched_getaffinity");
        for (int c = 0; c < CPU_SETSIZE; ++c)
            if (CPU_ISSET(c, &set))
                cpus_.push_back(c);
    }
    std::sort(cpus_.begin(), cpus_.end());
    cpus_.erase(std::unique(cpus_.begin(), cpus_.end()), cpus_.end());
    if (cpus_.empty() || cpus_.front() < 0 || cpus_.back() >= CPU_SETSIZE)
        throw std::system_error(make_error_code(status::invalid_argument), "irq_work_domain: bad CPU list");

    n_ = cpus_.size();
    pcpu_owner_ = std::make_unique<detail::irq_work_cpu[]>(n_);
    pcpu_ = pcpu_owner_.get();
    map_size_ = static_cast<std::size_t>(cpus_.back()) + 1;
    map_owner_ = std::make_unique<detail::irq_work_cpu*[]>(map_size_);
    map_ = map_owner_.get();
    for (std::size_t i = 0; i < map_size_; ++i)
        map_[i] = nullptr;
    for (std::size_t i = 0; i < n_; ++i) {
        pcpu_[i].cpu = cpus_[i];
        map_[cpus_[i]] = &pcpu_[i];
    }

    workers_.reserve(n_);
    try {
        for (std::size_t i = 0; i < n_; ++i) {
            detail::irq_work_cpu& pc = pcpu_[i];
            rt_thread_options to;
            to.name = "irq_work/" + std::to_string(pc.cpu);
            to.policy = opts.policy;
            to.priority = opts.priority;
            to.cpu = pc.cpu;
            to.lock_memory = opts.lock_memory && i == 0;
            to.require_rt = opts.require_rt;
            workers_.emplace_back(to, [this, &pc](thread_ctx& self) { worker_main(self, pc); });
            // acquire: pairs with the worker's release store of `started`: pc.worker and
            // pc.worker_tid are visible to us, and through our publication of the domain to all.
            while (pc.started.load(std::memory_order_acquire) == 0)
                pc.started.wait(0, std::memory_order_acquire);
            if (pc.started.load(std::memory_order_acquire) != 1)
                throw std::system_error(make_error_code(status::no_space),
                                        "irq_work_domain: more than 256 irq_work workers in the process");
        }
    } catch (...) {
        stop_workers();
        throw;
    }
}

inline void irq_work_domain::worker_main(thread_ctx& self, detail::irq_work_cpu& pc) noexcept {
    using clock = std::chrono::steady_clock;
    // Threads inherit their creator's signal mask, and programs often block signals in main() to
    // sigwait() elsewhere: with the interrupt signal blocked here every IPI would stay pending and
    // hard items would never run (send_ipi still succeeds, so nothing would notice).
    sigset_t irq;
    sigemptyset(&irq);
    sigaddset(&irq, interrupt_signal());
    ::pthread_sigmask(SIG_UNBLOCK, &irq, nullptr);
    pc.worker = &self;
    pc.worker_tid = self.tid;
    const bool registered = detail::irq_work_register_worker(self, pc);
    // release: publishes pc.worker/worker_tid (and the registry entry) to the constructor.
    pc.started.store(registered ? 1 : 2, std::memory_order_release);
    pc.started.notify_all();
    if (!registered)
        return; // the constructor sees `started == 2` and throws

    clock::time_point next_tick = tick_on_ ? clock::now() + tick_ : clock::time_point::max();
    std::uint32_t idle_ticks = 0;
    bool tick_stopped = false; // mirrors pc.tick_stopped (only this thread writes it)
    for (;;) {
        (void)detail::irq_work_run_lazy_list(pc, pc.lazy, pc.running);
        if (tick_on_) {
            const clock::time_point now = clock::now();
            if (tick_stopped) {
                if (!pc.tick.empty()) {
                    // A LAZY add woke us (or raced with the stop): restart the tick; the item runs
                    // one period from now, as if the tick had been running.
                    tick_stopped = false;
                    // acq_rel RMW, like every write of the word, so producers' (T2) chains stay
                    // release sequences; a producer that still reads 1 makes one spurious wake.
                    (void)pc.tick_stopped.exchange(0, std::memory_order_acq_rel);
                    idle_ticks = 0;
                    next_tick = now + tick_;
                }
            } else if (now >= next_tick) {
                // `ticks` is counted inside, before the tick's items are released (BUSY clear).
                if (detail::irq_work_run_lazy_list(pc, pc.tick, pc.running, &pc.ticks) != 0) {
                    idle_ticks = 0;
                } else {
                    ++idle_ticks;
                }
                do
                    next_tick += tick_;
                while (next_tick <= now);
                if (tick_stop_after_ != 0 && idle_ticks >= tick_stop_after_) {
                    // nohz: stop the tick. (T1) acq_rel RMW, then re-check the list: pairs with
                    // (T2) in irq_work_enqueue (either it sees 1, or we see its item).
                    (void)pc.tick_stopped.exchange(1, std::memory_order_acq_rel);
                    if (pc.tick.empty()) {
                        tick_stopped = true;
                    } else {
                        (void)pc.tick_stopped.exchange(0, std::memory_order_acq_rel);
                        idle_ticks = 0;
                    }
                }
            }
        }
        // Safety net for a refused IPI (irq_work_raise_hard unparks us instead): interrupt ourselves,
        // so hard items still run in interrupt context. The signal is delivered before tgkill returns.
        if (RTDEFER_UNLIKELY(!pc.raised.empty()) && send_ipi(self) != status::ok)
            (void)detail::irq_work_run_hard_list(pc, pc.running);
        // (D2) acquire: pairs with release (D1) in stop_workers().
        if (stop_.load(std::memory_order_acquire))
            break;
        if (!pc.lazy.empty())
            continue;
        // ok, timed_out (tick) or interrupted (an IPI ran the hook): all mean "look again".
        (void)park_until(self, tick_stopped ? clock::time_point::max() : next_tick);
    }

    // Teardown: run what is queued here, hard items in interrupt context like always.
    while (!pc.raised.empty() || !pc.lazy.empty() || !pc.tick.empty()) {
        if (!pc.raised.empty() && send_ipi(self) != status::ok)
            (void)detail::irq_work_run_hard_list(pc, pc.running);
        (void)detail::irq_work_run_lazy_list(pc, pc.lazy, pc.running);
        (void)detail::irq_work_run_lazy_list(pc, pc.tick, pc.running);
    }
    detail::irq_work_unregister_worker(self);
}

inline void irq_work_domain::stop_workers() noexcept {
    // (D1) release: pairs with acquire (D2); unpark's own release/acquire also carries it.
    stop_.store(true, std::memory_order_release);
    for (rt_thread& t : workers_)
        (void)unpark(t.ctx());
    for (rt_thread& t : workers_)
        t.join();
}

inline irq_work_domain::~irq_work_domain() {
    stop_workers();
    // A callback drained on one worker may have queued to a CPU whose worker had already left: run
    // those here (hard items included: they are async-signal-safe, so thread context is fine too).
    detail::irq_work_run_stack& runs = detail::irq_work_thread_stack(); // not a worker: our own
    for (bool more = true; more;) {
        more = false;
        for (std::size_t i = 0; i < n_; ++i) {
            detail::irq_work_cpu& pc = pcpu_[i];
            more |= detail::irq_work_run_hard_list(pc, runs) != 0;
            more |= detail::irq_work_run_lazy_list(pc, pc.lazy, runs) != 0;
            more |= detail::irq_work_run_lazy_list(pc, pc.tick, runs) != 0;
        }
    }
}

inline thread_ctx& irq_work_domain::worker(int cpu) const noexcept { return *checked_slot(cpu).worker; }

inline const sched_report& irq_work_domain::worker_sched(int cpu) const noexcept {
    const detail::irq_work_cpu& pc = checked_slot(cpu);
    return workers_[static_cast<std::size_t>(&pc - pcpu_)].sched_status();
}

inline irq_work_stats irq_work_domain::stats(int cpu) const noexcept {
    const detail::irq_work_cpu& pc = checked_slot(cpu);
    irq_work_stats s;
    // relaxed: statistics snapshots.
    s.hard_raises = pc.hard_raises.load(std::memory_order_relaxed);
    s.lazy_raises = pc.lazy_raises.load(std::memory_order_relaxed);
    s.futex_wakes = park_futex_wakes(*pc.worker);
    s.ipi_failures = pc.ipi_failures.load(std::memory_order_relaxed);
    s.runs_hard = pc.runs_hard.load(std::memory_order_relaxed);
    s.runs_lazy = pc.runs_lazy.load(std::memory_order_relaxed);
    s.ticks = pc.ticks.load(std::memory_order_relaxed);
    s.tick_restarts = pc.tick_restarts.load(std::memory_order_relaxed);
    s.tick_stopped = pc.tick_stopped.load(std::memory_order_relaxed) != 0;
    return s;
}

inline irq_work_stats irq_work_domain::total_stats() const noexcept {
    irq_work_stats t;
    for (int cpu : cpus_) {
        const irq_work_stats s = stats(cpu);
        t.hard_raises += s.hard_raises;
        t.lazy_raises += s.lazy_raises;
        t.futex_wakes += s.futex_wakes;
        t.ipi_failures += s.ipi_failures;
        t.runs_hard += s.runs_hard;
        t.runs_lazy += s.runs_lazy;
        t.ticks += s.ticks;
        t.tick_restarts += s.tick_restarts;
    }
    return t;
}

} // namespace rtdefer

#undef RTDEFER_IRQ_WORK_TRUST_BEGIN
#undef RTDEFER_IRQ_WORK_TRUST_END
