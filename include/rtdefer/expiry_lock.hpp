// rtdefer/expiry_lock.hpp: wait for a running callback by blocking on its expirer's PI lock, instead
// of spinning. The userspace analogue of posix_cpu_timer_wait_running() (kernel commit 2aaae4bf41b1,
// "posix-cpu-timers: Implement the missing timer_wait_running callback") and of the PREEMPT_RT expiry
// locks in kernel/time/hrtimer.c (softirq_expiry_lock, hrtimer_cancel_wait_running,
// hrtimer_sync_wait_running) and kernel/time/timer.c (del_timer_wait_running, timer_sync_wait_running).
//
// Why: a SCHED_FIFO thread that spins until a lower-priority thread on the same CPU finishes a
// callback never finishes: the lower-priority thread never runs again (RT throttling gives the CPU
// to SCHED_OTHER tasks only). Blocking on a priority-inheritance mutex that the expirer holds boosts
// the expirer to the waiter's priority, so the waiter waits exactly the callback's remaining time.
//
// Protocol (the kernel's, with thread_ctx for task_struct and a PI pthread mutex for the rt_mutex):
//
//   expirer E (any attached thread)              waiter W (wait_running(item, self))
//   ----------------------------------           -----------------------------------------------
//   expiry_pass p(E):    lock E.expiry.lock      h = item.handling (under a grace-period read
//   p.mark(item):  item.handling = &E  (EL1)        section, the kernel's rcu_read_lock), and a
//   callback(item)                                  thread_ref to *h, so E's ctx cannot vanish
//   p.clear(item): item.handling = null (EL2)    h == null   -> idle (nothing running)
//   p.sync_wait_running(): if E.waiters,         h == &self  -> would_deadlock (own callback)
//       unlock + relock E.expiry.lock            else policy.wait(*h): pi_block = waiters++,
//   ~expiry_pass:        unlock E.expiry.lock        lock(E.expiry.lock) [PI boosts E], waiters--,
//                                                     unlock; then re-check item.handling == h
//
// Invariant: item.handling == &E only while E holds E.expiry.lock (marked after the lock is taken,
// cleared before it is dropped). So a waiter that saw handling == &E and then acquires E's lock knows
// that handling episode is over; if handling == &E again, E expires the item again: wait again.
//
// Which operations may run concurrently:
//
//   operation                       concurrently with
//   expiry_pass / mark / clear /    only on the owning thread (E); any number of waiters meanwhile
//     sync_wait_running
//   wait_running(item, W)           any expirer, any number of other waiters, on any thread
//   thread exit of an expirer       waits (sleep-polling, exit path) until no wait_running is between
//                                   reading handling and taking its thread_ref (grace period)
//
// Wait policies (template parameter constrained by `wait_policy`, so the same code is measured with
// each):
//   pi_block   (default) block on the expirer's PI mutex. Never spins. The real-time answer.
//   baseline::spin        (rtdefer/baseline/spin_wait.hpp) busy-wait on item.handling. FOR
//              MEASUREMENT ONLY: never finishes when the waiter out-prioritises the expirer on its CPU.
//   baseline::spin_yield  busy-wait with sched_yield(). FOR MEASUREMENT ONLY: never finishes in
//              the same case (sched_yield only yields to threads of equal or higher priority).
//   sleep_poll poll item.handling with nanosleep() in between: the kernel's nsleep fallback. Finishes,
//              but adds up to one poll period of latency and runs the expirer at its own priority.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/exit_hooks.hpp>
#include <rtdefer/detail/expiry_lock_state.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <ctime>

#include <time.h>

namespace rtdefer {

namespace detail {

/// One pause instruction: tells the core (and an SMT sibling) that this is a spin-wait.
inline void cpu_relax() noexcept RTDEFER_NONBLOCKING {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#else
    std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

/// Sleeps for `ns` nanoseconds (relative, CLOCK_MONOTONIC). Blocking.
inline void sleep_for_ns(std::int64_t ns) noexcept RTDEFER_BLOCKING {
    timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    while (::clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR) {
    }
}

} // namespace detail

// ---------------------------------------------------------------------------------------------
// The item side: what an expirer publishes in each item it expires.
// ---------------------------------------------------------------------------------------------

/// Embedded in anything an expirer runs a callback for (the kernel's cpu_timer::handling).
/// `Atom` lets tests swap the atomic type.
template <template <class> class Atom = std::atomic>
struct basic_expiry_item {
    /// The expirer running this item's callback, or nullptr. Written only by that expirer while it
    /// holds its expiry lock: set by mark (EL1), cleared by clear (EL2).
    Atom<thread_ctx*> handling{nullptr};

    /// Returns: whether a callback for this item is running right now (a racy peek).
    /// Progress: wait-free. Real-time safety: one relaxed load; async-signal-safe.
    [[nodiscard]] bool running() const noexcept RTDEFER_NONBLOCKING {
        // relaxed: a snapshot for diagnostics; decisions use wait_running() or the owner's lock.
        return handling.load(std::memory_order_relaxed) != nullptr;
    }
};
using expiry_item = basic_expiry_item<>;

// ---------------------------------------------------------------------------------------------
// Grace period for reading `handling` (the kernel reads it under rcu_read_lock()).
// ---------------------------------------------------------------------------------------------

namespace detail {

/// Two reader counters and an epoch, SRCU-style: a waiter counts itself in a slot while it reads
/// item.handling and takes its thread_ref; an exiting expirer waits until each slot has been seen
/// empty once after it stopped publishing `handling`. Flipping the epoch between the two waits sends
/// new readers to the other slot, so the exit cannot be starved by a stream of waiters.
struct handling_grace {
    alignas(cacheline_size) std::atomic<std::uint32_t> epoch{0};
    alignas(cacheline_size) std::atomic<std::uint64_t> readers0{0};
    alignas(cacheline_size) std::atomic<std::uint64_t> readers1{0};
    std::atomic<std::uint64_t>& slot(std::uint32_t i) noexcept RTDEFER_NONBLOCKING {
        return (i & 1u) != 0 ? readers1 : readers0;
    }
};

/// Constant-initialised namespace-scope object: no guard variable, no allocation, one per program.
inline constinit handling_grace grace_state;
inline handling_grace& grace() noexcept RTDEFER_NONBLOCKING { return grace_state; }

/// Effects: reads item.handling and, if non-null, takes a reference to that expirer's ctx.
/// Returns: the reference (empty if nothing is running). Progress: wait-free; no allocation, no
/// syscall. Not annotated nonblocking only because clang cannot see that no thread_ref is dropped
/// here (a dropped last reference would free); its only caller, wait_running, is blocking anyway.
template <template <class> class Atom>
thread_ref handling_ref(const basic_expiry_item<Atom>& item) noexcept {
    auto& g = grace();
    // relaxed: any slot is correct (the exiting expirer drains both); the epoch only spreads load.
    const std::uint32_t idx = g.epoch.load(std::memory_order_relaxed);
    struct reader_section {
        std::atomic<std::uint64_t>& slot;
        explicit reader_section(std::atomic<std::uint64_t>& s) noexcept : slot(s) {
            // relaxed increment, ordered before the handling load by the fence (EL5).
            slot.fetch_add(1, std::memory_order_relaxed);
        }
        // (EL6) release, on leaving (after the returned reference was taken): our reference
        // increment happens-before the exiting expirer's acquire (EL8) that sees this slot drop, hence
        // before its final put (which then is not the last one).
        ~reader_section() { slot.fetch_sub(1, std::memory_order_release); }
    } section(g.slot(idx));
    // (EL5) seq_cst fence: orders our slot increment (store) before our handling load (load), against
    // the exiting expirer's handling clear (store) before its slot loads (load), fence (EL7): store
    // buffering, so both sides need a full fence. Either it sees our increment, or we see its clear.
    detail::full_fence();
    // (EL3) acquire: pairs with release (EL1) in mark(); we then see the expirer's state it published.
    thread_ctx* h = item.handling.load(std::memory_order_acquire);
    // Safe to take a reference: the expirer cannot finish exiting while we are counted. Built in the
    // return slot (no temporary to destroy), before `section` ends.
    return h != nullptr ? thread_ref(*h) : thread_ref();
}

/// Exit hook: an expirer's ctx may be freed once its thread exits; wait until no waiter is between
/// reading a `handling` that named it and taking its thread_ref. Exit path: sleep-polls.
inline void expiry_lock_exit(thread_ctx& self) noexcept {
    RTDEFER_ASSERT(!detail::ctx_access::expiry(self).held, "thread exits while holding its expiry lock (expiry_pass still alive)");
    if (!detail::ctx_access::expiry(self).was_expirer)
        return;
    auto& g = grace();
    // (EL7) seq_cst fence: pairs with (EL5). Our clears (EL2) of every handling are sequenced before it.
    full_fence();
    // relaxed: the flips only steer new readers away from the slot we drain; correctness comes from
    // seeing each of the two slots empty once after (EL7). Drain slot(first), then slot(first + 1):
    // explicitly both parities, because another exiting expirer may flip the epoch between our two
    // flips (the value our second flip returns can have the parity of the first).
    const std::uint32_t first = g.epoch.fetch_add(1, std::memory_order_relaxed);
    for (std::uint32_t k = 0; k < 2; ++k) {
        if (k == 1)
            (void)g.epoch.fetch_add(1, std::memory_order_relaxed); // relaxed: as above
        // (EL8) acquire: pairs with (EL6): a drained slot means those readers' refs are taken.
        while (g.slot(first + k).load(std::memory_order_acquire) != 0)
            sleep_for_ns(20'000);
    }
}

inline const bool expiry_lock_exit_registered = register_exit_hook(&expiry_lock_exit, exit_order::expiry_lock);

} // namespace detail

// ---------------------------------------------------------------------------------------------
// The expirer side.
// ---------------------------------------------------------------------------------------------

/// Effects: takes the calling thread's expiry lock (start of an expiry pass).
/// Precondition: `self` is the calling thread's ctx and does not hold the lock.
/// Progress: blocking (a waiter may hold the lock for the instant of its lock/unlock).
/// Real-time safety: a PI mutex; no allocation.
inline void expiry_lock_acquire(thread_ctx& self) noexcept RTDEFER_BLOCKING {
    RTDEFER_ASSERT(self.is_current(), "expiry lock taken on another thread's ctx");
    RTDEFER_ASSERT(!detail::ctx_access::expiry(self).held, "expiry lock taken twice (nested expiry pass)");
    detail::ctx_access::expiry(self).lock.lock(); // failures: detail::pi_mutex's policy (asserted)
    detail::ctx_access::expiry(self).held = true;
    detail::ctx_access::expiry(self).was_expirer = true;
}

/// Effects: releases the calling thread's expiry lock (end of the pass). Every item it marked must
/// be cleared first. Returns: nothing. Progress: bounded (a contended PI unlock is one futex
/// syscall). Real-time safety: PI mutex unlock; no allocation.
inline void expiry_lock_release(thread_ctx& self) noexcept RTDEFER_BLOCKING {
    RTDEFER_ASSERT(detail::ctx_access::expiry(self).held, "expiry lock released but not held");
    detail::ctx_access::expiry(self).held = false;
    detail::ctx_access::expiry(self).lock.unlock();
}

/// Effects: if a waiter is blocked on the lock, drops and retakes it so the waiter (whose callback
/// has just finished) can go on instead of waiting for the whole pass: hrtimer_sync_wait_running().
/// Call it between callbacks, with no item marked. Returns: whether the lock was dropped.
/// Who gets through is decided by the kernel's rt_mutex: a waiter of higher (or equal real-time)
/// priority gets the lock; a lower-priority one, or an equal-priority SCHED_OTHER one, may see the
/// expirer take it back first (rt_mutex lock stealing) and wait for the pass to end: as in the kernel.
/// Progress: blocking for at most the waiter's lock/unlock. Real-time safety: PI mutex only.
inline bool expiry_sync_wait_running(thread_ctx& self) noexcept RTDEFER_BLOCKING {
    RTDEFER_ASSERT(detail::ctx_access::expiry(self).held, "expiry_sync_wait_running outside an expiry pass");
    // relaxed: a hint, as the kernel's atomic_read(&base->timer_waiters). A waiter whose increment
    // we miss waits at most until the end of this pass (or the next sync point), never forever.
    if (detail::ctx_access::expiry(self).waiters.load(std::memory_order_relaxed) == 0)
        return false;
    expiry_lock_release(self);
    // With PI, the unlock hands the lock to the top waiter; relocking queues us behind it.
    expiry_lock_acquire(self);
    return true;
}

/// Effects: publishes that the calling expirer is running `item`'s callback. Precondition: the
/// expiry lock is held (expiry_lock_acquire / expiry_pass). Returns: nothing.
/// Progress: wait-free. Real-time safety: one release store; no allocation, lock or syscall.
template <template <class> class Atom>
inline void expiry_mark_handling(basic_expiry_item<Atom>& item, thread_ctx& self) noexcept RTDEFER_NONBLOCKING {
    RTDEFER_ASSERT(detail::ctx_access::expiry(self).held, "expiry_mark_handling outside an expiry pass");
    // (EL1) release: pairs with acquire (EL3) in handling_ref()/wait loops: a waiter that sees &self
    // also sees that self holds its expiry lock (taken before, in program order).
    item.handling.store(&self, std::memory_order_release);
}

/// Effects: publishes that the callback of `item` has returned. After this the expirer must not
/// touch `item` unless it owns it again by other means (the timer service's queue lock).
/// Returns: nothing. Progress: wait-free. Real-time safety: one release store; no syscall.
template <template <class> class Atom>
inline void expiry_clear_handling(basic_expiry_item<Atom>& item) noexcept RTDEFER_NONBLOCKING {
    // (EL2) release: pairs with acquire (EL3)/(EL4): a spinning waiter that sees nullptr sees every write
    // the callback made.
    item.handling.store(nullptr, std::memory_order_release);
}

/// RAII expiry pass: holds the expirer's lock from construction to destruction.
class expiry_pass {
public:
    /// Effects: expiry_lock_acquire(self). Progress: blocking (PI mutex).
    explicit expiry_pass(thread_ctx& self) noexcept RTDEFER_BLOCKING : self_(self) { expiry_lock_acquire(self_); }
    /// Effects: expiry_lock_release(self): every marked item must have been cleared.
    ~expiry_pass() { expiry_lock_release(self_); }
    expiry_pass(const expiry_pass&) = delete;
    expiry_pass& operator=(const expiry_pass&) = delete;

    /// Effects, returns, progress, real-time safety: as expiry_mark_handling(item, self()).
    template <template <class> class Atom>
    void mark(basic_expiry_item<Atom>& item) noexcept RTDEFER_NONBLOCKING { expiry_mark_handling(item, self_); }
    /// As expiry_clear_handling(item): the expirer's last access to `item`.
    template <template <class> class Atom>
    void clear(basic_expiry_item<Atom>& item) noexcept RTDEFER_NONBLOCKING { expiry_clear_handling(item); }
    /// As expiry_sync_wait_running(self()): between callbacks, with no item marked.
    bool sync_wait_running() noexcept RTDEFER_BLOCKING { return expiry_sync_wait_running(self_); }
    thread_ctx& self() const noexcept { return self_; }

private:
    thread_ctx& self_;
};

// ---------------------------------------------------------------------------------------------
// Wait policies. Each has `wait(expirer, still_running)`: returns ok once `still_running()` may have
// become false (the caller re-checks), or timed_out if a spin baseline was told to give up.
// The spin-wait baselines (which never finish under inversion) live in rtdefer/baseline/spin_wait.hpp.
// ---------------------------------------------------------------------------------------------

namespace detail {
/// The predicate type wait_policy is checked with (a policy's wait is a template over it).
struct still_running_probe {
    bool operator()() const noexcept RTDEFER_NONBLOCKING { return false; }
};
} // namespace detail

/// What wait_running, wait_for_expirer and timer_service accept as their wait policy: a `name`
/// and a noexcept `wait(expirer, still_running)` returning status.
template <class P>
concept wait_policy = requires(const P& p, thread_ctx& expirer, detail::still_running_probe& running) {
    { P::name } -> std::convertible_to<const char*>;
    { p.wait(expirer, running) } noexcept -> std::same_as<status>;
};

/// Block on the expirer's PI mutex (default; the kernel's mutex_lock(&tsk->...expiry mutex)).
/// Progress: blocking until the expirer drops its lock: at its next sync_wait_running() after the
/// kernel has queued us on the lock (the count is a hint raised before we lock: a waiter counted
/// after the expirer looked, or counted but not yet queued when it dropped the lock, waits for its
/// next callback), or at the end of the pass. Meanwhile the expirer runs at the
/// waiter's priority if that is higher.
/// Real-time safety: PI mutex, no allocation, no userspace spinning. CPU while waiting: ~0 when the
/// expirer shares the waiter's CPU; across CPUs the kernel's rt_mutex spins adaptively while the
/// expirer is running (rtmutex_spin_on_owner, Linux >= 5.15), never longer than it runs.
struct pi_block {
    static constexpr const char* name = "pi_block";
    template <class Running>
    status wait(thread_ctx& expirer, Running&& /*still_running*/) const noexcept RTDEFER_BLOCKING {
        // relaxed: the count is a hint for the expirer (see expiry_sync_wait_running); the lock
        // itself provides the ordering we rely on (acquire on lock: the callback's writes are ours).
        detail::ctx_access::expiry(expirer).waiters.fetch_add(1, std::memory_order_relaxed);
        detail::ctx_access::expiry(expirer).lock.lock(); // failures: detail::pi_mutex's policy (asserted)
        detail::ctx_access::expiry(expirer).waiters.fetch_sub(1, std::memory_order_relaxed);
        detail::ctx_access::expiry(expirer).lock.unlock();
        return status::ok;
    }
};

namespace detail {

/// The loop the polling policies share: re-check `still_running`, honour `give_up`, `pause` between.
template <class Running, class Pause>
status poll_until_done(Running& still_running, const std::atomic<bool>* give_up, Pause pause) noexcept {
    while (still_running()) {
        // relaxed: a stop request from a watchdog; nothing is published through it.
        if (give_up != nullptr && give_up->load(std::memory_order_relaxed))
            return status::timed_out;
        pause();
    }
    return status::ok;
}

} // namespace detail

/// Poll with a sleep in between (the kernel's nsleep-style fallback). Finishes, since sleeping lets
/// the expirer run, but the expirer runs at its own (low) priority and the waiter adds up to one
/// `period` of latency. Kept as a baseline.
struct sleep_poll {
    static constexpr const char* name = "sleep_poll";
    std::chrono::nanoseconds period{std::chrono::microseconds(50)};
    const std::atomic<bool>* give_up = nullptr;
    template <class Running>
    status wait(thread_ctx& /*expirer*/, Running&& still_running) const noexcept RTDEFER_BLOCKING {
        const std::int64_t ns = period.count();
        return detail::poll_until_done(still_running, give_up, [ns]() noexcept { detail::sleep_for_ns(ns); });
    }
};

namespace detail {

/// Waits, with `policy`, until `item.handling` no longer names `expirer`. The caller holds a
/// thread_ref to `expirer`. Returns: waited, or timed_out (a spin baseline gave up).
template <wait_policy Policy, template <class> class Atom>
status wait_for_expirer(const basic_expiry_item<Atom>& item, thread_ctx& expirer,
                        const Policy& policy) noexcept RTDEFER_BLOCKING {
    auto still_running = [&]() noexcept RTDEFER_NONBLOCKING {
        // (EL4) acquire: pairs with release (EL2) in expiry_clear_handling().
        return item.handling.load(std::memory_order_acquire) == &expirer;
    };
    do {
        const status s = policy.wait(expirer, still_running);
        if (s != status::ok)
            return s;
        // Re-check (the kernel's retry loop): handling == &expirer again means the expirer is
        // running this item once more (it marks only while holding the lock we just passed).
    } while (still_running());
    return status::waited;
}

} // namespace detail

/// Effects: if a callback for `item` is running, waits (with `Policy`) until it has returned.
/// Returns: idle (none was running), waited (one was; it has returned and its writes are visible),
/// would_deadlock (the caller is the expirer running it: waiting would never end), timed_out (a
/// spin variant's give_up flag was set: it may still be running). Lock failures: detail::pi_mutex's
/// policy (asserted).
/// Progress: blocking. pi_block: the callback's remaining time (plus, at most, the expirer's next
/// callback; see pi_block), run at the caller's priority if that is higher (priority
/// inheritance); spin variants: unbounded, see above.
/// Real-time safety: no allocation; a PI mutex (pi_block); takes and drops a thread_ref (the drop
/// frees the expirer's ctx only if that thread has exited meanwhile).
template <wait_policy Policy = pi_block, template <class> class Atom = std::atomic>
[[nodiscard]] status wait_running(const basic_expiry_item<Atom>& item, thread_ctx& self,
                                  const Policy& policy = Policy{}) noexcept RTDEFER_BLOCKING {
    thread_ref expirer = detail::handling_ref(item);
    if (!expirer)
        return status::idle;
    if (expirer.get() == &self)
        return status::would_deadlock;
    return detail::wait_for_expirer(item, *expirer, policy);
}

} // namespace rtdefer
