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
//   tick_nohz_tick_stopped()                  which stops after idle periods (detail/irq_work_tick.hpp)
//   irq_work_queue_on(work, cpu)              irq_work_queue_on(dom, work, cpu), or irq_work_producer
//                                             bound to a CPU once at setup: producer.queue(work)
//   smpboot (per-CPU kthreads)                detail/percpu_thread.hpp (run / should_run / park)
//   arch_irq_work_raise / IPI                 send_ipi(worker) (tgkill with the interrupt signal)
//   wake_up_process(irq_workd)                unpark(worker) (futex_wake only if it sleeps)
//   irq_work_sync + rcuwait                   irq_work_sync: futex in a static hashed table
//   wait_var_event / wake_up_var              detail/wait_var.hpp (the table, shared by any variable)
//
// Flag word of an item (as the kernel's table, plus a count of runs in progress; LAZY and HARD_IRQ
// are constant kind bits):
//
//   state     on a list  PENDING BUSY ACTIVE  transitions
//   free      no            0     0     0     → claimed  queue: fetch_or(CLAIMED) saw !PENDING   (IQ1)
//   claimed   no            1     1     n     → pending  queue: llist add to one per-CPU list     (IQ2)
//   pending   yes           1     1     n     → busy     runner: PENDING off, ACTIVE+1, one RMW  (IQ3)
//   busy      no            0     1    n>0    → free     the last runner out (ACTIVE 1→0, no
//                                                        PENDING) clears BUSY in the same CAS    (IQ4)
//                                             → claimed  queue during func (re-queue): runs again
//
// Every transition is coded once, in detail/irq_work_item.hpp (templates over the flag word's atomic
// type, so tests can inject a competing transition between a load and its CAS); the per-CPU lists
// and the producer's raise in detail/irq_work_percpu.hpp; the worker loop in
// detail/irq_work_worker.hpp; the sync's futex table in detail/wait_var.hpp.
//
// ACTIVE is where rtdefer departs from the kernel, whose runner clears BUSY with
// cmpxchg(flags, flags & ~BUSY) "if no one else claimed it meanwhile". If a callback re-queues its item
// to another CPU and that second run finishes first, its cmpxchg clears BUSY while the first callback
// still runs, and irq_work_sync() returns early (tests/model/irq_work_cmpxchg_flawed.pml is spin's
// counterexample). Counting runs makes "BUSY clear" mean "nobody is inside func and nothing is
// pending" however runs overlap; with one run at a time it is exactly the kernel's protocol.
//
// A failed claim (fetch_or saw PENDING) still guarantees that the pending run sees everything the
// failed claimer wrote before its claim: its fetch_or precedes the runner's PENDING clear (IQ3) in the
// flag word's modification order (else it would have seen PENDING clear and won the claim), it is a
// release RMW, and (IQ3) is an acquire RMW reading from the release sequence it heads. This is the
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
// decrement (IQ4); after that it touches only a static wait bucket. So once irq_work_sync() returned ok (or
// irq_work_is_busy() read false), the caller may free the item. A callback must not free its own item
// (the runner still updates the flag word after func returns): hand memory over instead, e.g. push
// buffers on an llist and queue one long-lived item whose callback frees them (docs/irq_work.md).
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/cancel_hold.hpp>
#include <rtdefer/detail/irq_work_percpu.hpp>
#include <rtdefer/detail/percpu_thread.hpp>
#include <rtdefer/detail/syscall.hpp>
#include <rtdefer/interrupt.hpp>
#include <rtdefer/llist.hpp>
#include <rtdefer/rt_thread.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

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
    // acquire: pairs with the runner's release (IQ4): its accesses are done before we overwrite func.
    RTDEFER_ASSERT((w.flags.load(std::memory_order_acquire) & irq_work_flags::busy) == 0,
                   "init_irq_work on a pending or running item");
    w.func = f;
    // relaxed: the item is free and private to the caller; a later queue publishes it (release (IQ1)).
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
    // acquire: pairs with (IQ3)/(IQ4); a caller acting on "not pending" sees the runner's progress.
    return (w.flags.load(std::memory_order_acquire) & irq_work_flags::pending) != 0;
}

/// Returns: whether the item is claimed, queued or running (irq_work_is_busy). Reading false means
/// the runner will not touch the item again unless someone queues it again.
/// Progress: wait-free. Real-time safety: one load; async-signal-safe.
[[nodiscard]] inline bool irq_work_is_busy(const irq_work& w) noexcept RTDEFER_NONBLOCKING {
    // (IQ7) acquire: pairs with release (IQ4): the runner's accesses to the item happen-before ours.
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
    /// Worker priority: 1 = lowest RT, above all SCHED_OTHER (the kernel's choice). The answer to a
    /// starving worker: a SCHED_FIFO thread at a higher priority that keeps its CPU busy (other RT
    /// load, a host's audio thread) starves a priority-1 worker, and irq_work_stats::pending and
    /// oldest_pending_age show it; give the workers a priority above that load (and below your
    /// deadline threads). worker_sched() reports what each worker got.
    int priority = 1;
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

/// Per-CPU counters of a domain (a snapshot). Consistent with sync: a run (and the tick that ran it)
/// is counted before its item's BUSY clear, so stats() read after irq_work_sync(w) returned ok
/// include w's last run (runs_hard/runs_lazy, ticks).
struct irq_work_stats {
    std::uint64_t hard_raises = 0;  ///< IPIs sent (raised list went empty→non-empty)
    std::uint64_t lazy_raises = 0;  ///< worker wakes attempted (lazy list went empty→non-empty)
    std::uint64_t futex_wakes = 0;  ///< futex_wake syscalls that woke the worker (it was asleep)
    std::uint64_t ipi_failures = 0; ///< send_ipi refused (handled by the worker's self-IPI fallback)
    std::uint64_t runs_hard = 0;    ///< hard callbacks run
    std::uint64_t runs_lazy = 0;    ///< lazy and LAZY callbacks run
    std::uint64_t ticks = 0;        ///< ticks that ran LAZY items
    std::uint64_t tick_restarts = 0; ///< LAZY adds that woke a worker whose tick had stopped (nohz)
    bool tick_stopped = false;       ///< the worker's tick is stopped right now (total: some CPU's)
    /// Backlog: items queued to this CPU whose callback has not started (PENDING set), kind
    /// irrespective: items added minus callbacks begun, two relaxed counters read one after the
    /// other, so a snapshot that may be off by the queues and runs racing with the read; never
    /// negative. A growing figure with runs_* standing still is a starving worker. Total: the sum.
    std::uint64_t pending = 0;
    /// Backlog age: the time since the add that made one of this CPU's three lists non-empty, for
    /// the list that has been non-empty longest right now; zero when all are empty. It is the age
    /// of the oldest item still ON a list (stamped only on the empty→non-empty transition, as the
    /// kernel's lists are per CPU); items the worker has taken off but not yet run count in
    /// `pending` only. LAZY items wait up to one tick by design, so a value up to `tick` is normal.
    /// A racing transition can make it overstate by the time since the previous one. Total: the
    /// maximum.
    std::chrono::nanoseconds oldest_pending_age{0};
};

class irq_work_domain;

namespace detail {
/// The worker's hooks on the per-CPU thread mechanism (detail/irq_work_worker.hpp).
struct irq_work_worker_hooks {
    irq_work_cpu* pcpu = nullptr;
    status setup(std::size_t i, thread_ctx& self) noexcept;
    void run(std::size_t i, thread_ctx& self) noexcept;
    bool should_run(std::size_t i) noexcept;
    std::chrono::steady_clock::time_point park_deadline(std::size_t i) noexcept;
    void cleanup(std::size_t i, thread_ctx& self) noexcept;
};
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
    /// Returns: whether `cpu` has a worker in this domain (irq_work_queue_on() and
    /// irq_work_producer::bind() return invalid_argument for one that has not).
    [[nodiscard]] bool serves(int cpu) const noexcept RTDEFER_NONBLOCKING { return percpu(cpu) != nullptr; }
    /// Returns: the worker of `cpu` (precondition: serves(cpu), asserted).
    [[nodiscard]] thread_ctx& worker(int cpu) const noexcept;
    /// Returns: the scheduling the worker of `cpu` got (policy, priority, fallback errno).
    [[nodiscard]] const sched_report& worker_sched(int cpu) const noexcept;
    /// Returns: a snapshot of the counters and backlog of `cpu` (precondition: serves(cpu)).
    /// Real-time safety: loads and one vDSO clock read; no syscall.
    [[nodiscard]] irq_work_stats stats(int cpu) const noexcept;
    /// Returns: stats() summed over all CPUs (see each field for how it combines).
    [[nodiscard]] irq_work_stats total_stats() const noexcept;
    /// Returns: the tick period (zero: off).
    [[nodiscard]] std::chrono::nanoseconds tick() const noexcept { return tick_; }

    /// Internal, for the functions of this header: the per-CPU state of `cpu`, or nullptr if the
    /// domain does not serve it.
    [[nodiscard]] detail::irq_work_cpu* percpu(int cpu) const noexcept RTDEFER_NONBLOCKING {
        return cpu >= 0 && static_cast<std::size_t>(cpu) < map_.size() ? map_[static_cast<std::size_t>(cpu)] : nullptr;
    }
    /// Internal: the per-CPU state of the local CPU `cpu`; a CPU outside the domain (affinity changed
    /// since construction) falls back to a served one, so a local queue always lands somewhere
    /// that runs.
    [[nodiscard]] detail::irq_work_cpu& local_percpu(int cpu) const noexcept RTDEFER_NONBLOCKING {
        detail::irq_work_cpu* pc = percpu(cpu);
        return pc != nullptr ? *pc : pcpu_[static_cast<std::size_t>(cpu < 0 ? 0 : cpu) % cpus_.size()];
    }

private:
    [[nodiscard]] const detail::irq_work_cpu& checked(int cpu) const noexcept;

    std::vector<int> cpus_;
    std::unique_ptr<detail::irq_work_cpu[]> pcpu_;   ///< one per entry of cpus_, same order
    std::vector<detail::irq_work_cpu*> map_;         ///< CPU id → its pcpu_ entry (nullptr: not served)
    std::chrono::nanoseconds tick_{};
    detail::irq_work_worker_hooks hooks_;
    std::optional<detail::percpu_threads<detail::irq_work_worker_hooks>> workers_;
};

/// A producer bound to one CPU of a domain: the irq_work_queue_on() target chosen (and checked)
/// once, at setup, instead of at every call. For threads that migrate between CPUs, e.g. a JACK
/// process callback: a local irq_work_queue() would spread items, and LAZY items' tick batching,
/// over every CPU it visits. The target is the call's, as in the kernel (irq_work_queue_on takes the
/// CPU; struct irq_work has none), so one item can still be queued by several producers. A producer
/// is a pointer-sized value: copy it freely; it must not outlive its domain.
class irq_work_producer {
public:
    /// An unbound producer: queue() returns invalid_argument until bind() succeeds.
    constexpr irq_work_producer() noexcept = default;

    /// Effects: binds this producer to CPU `cpu` of `d`. Returns: ok; invalid_argument if `d`
    /// does not serve `cpu` (the producer is left as it was). Progress: wait-free. Real-time
    /// safety: a few loads; may be called anywhere, but it is meant for setup.
    [[nodiscard]] status bind(irq_work_domain& d, int cpu) noexcept RTDEFER_NONBLOCKING {
        detail::irq_work_cpu* pc = d.percpu(cpu);
        if (pc == nullptr)
            return status::invalid_argument;
        pc_ = pc;
        return status::ok;
    }

    /// Returns: whether bind() succeeded. Wait-free.
    [[nodiscard]] bool bound() const noexcept RTDEFER_NONBLOCKING { return pc_ != nullptr; }
    /// Returns: the CPU it queues to, or -1 when unbound. Wait-free.
    [[nodiscard]] int cpu() const noexcept RTDEFER_NONBLOCKING { return pc_ != nullptr ? pc_->cpu : -1; }

    /// Effects: irq_work_queue_on(domain, w, cpu()).
    /// Returns: ok (queued); already_queued (it was pending: the pending run sees everything the
    /// caller wrote before this call); invalid_argument if unbound (the item is untouched).
    /// Progress, Real-time safety: as irq_work_queue_on(); async-signal-safe.
    [[nodiscard]] status queue(irq_work& w) const noexcept RTDEFER_NONBLOCKING;

private:
    detail::irq_work_cpu* pc_ = nullptr;
};

} // namespace rtdefer

// The mechanisms behind the contract above: the item state machine, the worker.
#define RTDEFER_IRQ_WORK_CONTRACT 1
#include <rtdefer/detail/irq_work_item.hpp>
#include <rtdefer/detail/irq_work_worker.hpp>

namespace rtdefer {

// ---------------------------------------------------------------------------------------------
// Queueing
// ---------------------------------------------------------------------------------------------

/// Effects: queues `w` on CPU `cpu` of `d` unless it is already pending (irq_work_queue_on). Only the
/// add that makes a list non-empty raises anything: a hard item sends the interrupt signal to the
/// CPU's worker; a normal item (or a LAZY one with the tick off) wakes the worker; a LAZY item waits
/// for the tick. May be called while the item's callback runs (it then runs again), from any thread
/// and from signal handlers.
/// Returns: ok (queued); already_queued (it was pending: the pending run will see everything the
/// caller wrote before this call, the claim's ordering argument at the top of this file);
/// invalid_argument if `d` does not serve `cpu` (checked before the item is touched).
/// Progress: lock-free (one fetch_or, one CAS loop on the list head, one counter). Real-time safety:
/// no allocation, no lock; on an empty→non-empty transition only, a vDSO clock read (backlog age)
/// and one syscall (tgkill or futex_wake, the latter only if the worker sleeps); async-signal-safe.
[[nodiscard]] inline status irq_work_queue_on(irq_work_domain& d, irq_work& w, int cpu) noexcept RTDEFER_NONBLOCKING {
    detail::irq_work_cpu* pc = d.percpu(cpu);
    if (RTDEFER_UNLIKELY(pc == nullptr))
        return status::invalid_argument;
    return detail::irq_work_queue_cpu(*pc, w);
}

/// Effects: as irq_work_queue_on() for the calling thread's CPU (sched_getcpu through rseq/vDSO, no
/// syscall). Without preempt_disable() in userspace, a thread migrating right after the CPU lookup
/// queues to the CPU it just left; the item then runs there, as with irq_work_queue_on(). A CPU the
/// domain does not serve (affinity or cpuset changed since construction, a CPU brought online later)
/// falls back to a served one: a local queue always lands on a list that some worker runs.
/// Returns: ok or already_queued, as irq_work_queue_on(). Progress, Real-time safety: as there.
[[nodiscard]] inline status irq_work_queue(irq_work_domain& d, irq_work& w) noexcept RTDEFER_NONBLOCKING {
    return detail::irq_work_queue_cpu(d.local_percpu(detail::current_cpu()), w);
}

inline status irq_work_producer::queue(irq_work& w) const noexcept RTDEFER_NONBLOCKING {
    if (RTDEFER_UNLIKELY(pc_ == nullptr))
        return status::invalid_argument;
    return detail::irq_work_queue_cpu(*pc_, w);
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
    detail::irq_work_cpu& pc = d.local_percpu(detail::current_cpu());
    // The caller's thread is not ours: hold cancellation off from the detach until the chain has
    // run and the worker is woken (detail/cancel_hold.hpp); restored on return, with nothing in hand.
    // Engaged only when there is a chain to take; with none we take nothing (no del_all): an item
    // added after the check raised the worker's interrupt, which runs it.
    detail::cancel_hold hold;
    std::size_t n = 0;
    if (!pc.raised.empty()) {
        hold.engage();
        // Not necessarily pc's worker: frames go on this thread's own stack (one TLS access per call).
        n = detail::irq_work_run_hard(pc, detail::irq_work_thread_stack());
    }
    if (!pc.lazy.empty())
        (void)unpark(*pc.worker);
    return n;
}

/// Returns: whether `cpu` has queued work of any kind (irq_work_needs_cpu: the kernel asks this
/// before stopping the tick); false for a CPU `d` does not serve. A snapshot.
/// Progress: wait-free. Real-time safety: three loads; async-signal-safe.
[[nodiscard]] inline bool irq_work_needs_cpu(const irq_work_domain& d, int cpu) noexcept RTDEFER_NONBLOCKING {
    const detail::irq_work_cpu* pc = d.percpu(cpu);
    return pc != nullptr && (!pc->raised.empty() || !pc->lazy.empty() || !pc->tick.empty());
}

/// Returns: irq_work_needs_cpu() for the calling thread's CPU.
[[nodiscard]] inline bool irq_work_needs_cpu(const irq_work_domain& d) noexcept RTDEFER_NONBLOCKING {
    const detail::irq_work_cpu& pc = d.local_percpu(detail::current_cpu());
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
    // (IQ7) acquire: pairs with release (IQ4): once we read BUSY clear, the runner is done with the item.
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
    // Sleep in the static table (detail/wait_var.hpp), never in the item. A worker helps: the awaited
    // item may be queued on its own lists, which only it runs; it re-checks every millisecond.
    auto help = [own]() noexcept {
        if (own != nullptr) {
            (void)detail::irq_work_run_list(*own, detail::irq_work_list::lazy, own->running);
            (void)detail::irq_work_run_list(*own, detail::irq_work_list::tick, own->running);
        }
    };
    return detail::irq_work_flags_wait_idle(
        w.flags, deadline, help,
        own != nullptr ? std::chrono::nanoseconds(std::chrono::milliseconds(1)) : std::chrono::nanoseconds::zero());
}

/// Effects: irq_work_sync_until() without a deadline (irq_work_sync).
/// Returns: ok, or would_deadlock when called from the item's own callback or from hard context.
/// Progress: blocking. Real-time safety: blocking; not for hard context.
[[nodiscard]] inline status irq_work_sync(irq_work& w) noexcept RTDEFER_BLOCKING {
    return irq_work_sync_until(w, std::chrono::steady_clock::time_point::max());
}

} // namespace rtdefer
