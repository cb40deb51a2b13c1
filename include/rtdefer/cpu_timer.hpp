// rtdefer/cpu_timer.hpp: per-thread CPU-time timers, the posix-CPU-timer path end to end: a quick
// check in interrupt context, expiry in the owner's task_work under its expiry lock ("posix-cpu-timers:
// Provide mechanisms to defer timer handling to task_work", Linux 5.9; see docs/cpu_timer.md),
// and a canceller that blocks on the expirer's PI lock ("posix-cpu-timers: Implement the missing
// timer_wait_running callback", 2aaae4bf41b1).
//
//   cpu_timer_setup(self, opts)  once per thread, on it: one kernel timer (timer_create), two heaps
//   cpu_timer t(owner)           caller-owned, bound to one thread; deadlines in its CPU time (ns)
//   t.arm / t.arm_after          on the owner only; the kernel timer is re-armed only when the head
//                                moves earlier than what it is armed for (lazy, as the kernel does)
//   t.cancel / t.cancel_sync     any thread (cancel_sync: not from a signal handler)
//   cpu_timer_sleep_guard        pauses the hybrid wall timer while the owner blocks
//
// Policies (cpu_timer_options::policy): `hybrid` (default): a CLOCK_MONOTONIC timer for the
// remaining budget, whose interrupt re-reads the thread's CPU clock and re-arms for the remainder
// (CPU time never runs ahead of wall time, so it fires at or after the budget); `kernel_clock`: a
// CLOCK_THREAD_CPUTIME_ID timer, which the kernel checks only on its tick (HZ).
// Models (per timer): `deferred` (default): the callback runs in the owner's task_work at its next
// safe point (task_work_run), under the owner's expiry lock, `handling` published per timer, at most
// cpu_timer_max_collected timers per pass (the kernel's MAX_COLLECTED); `urgent`: the earliest urgent
// timer's callback runs in the interrupt hook (async-signal-safe code only: set a flag, irq_work_queue).
//
// Timer states (q = the owner's queue lock, a PI mutex; hs = hard_state_; h = item_.handling):
//
//   state          queued  hs     h        entered by                      left by
//   idle           no      idle   null     construction, cancel*, fire     arm
//   pending        yes     armed  null     arm (urgent: hs armed)          collect (pass), hook CAS, cancel*
//   fired (urgent) yes     idle   null     hook: callback returned         next arm / cancel / pass (unlink)
//   firing         yes     firing null     hook CAS armed→firing (CT5)      callback return (CT6)
//   collected      no      idle   owner    pass: pop + mark, one q section the pass runs or skips it, clears h
//
// The hook never takes q: it reads next_ns/urgent (published under q, release (CT3)) and claims an
// urgent timer with the CAS on hs; cancel claims it with the same CAS (armed→idle), so exactly one
// of "fires" and "removed" happens. The hook holds `hard` (a PI futex word) while it may touch a
// timer it read from `urgent`; a canceller on another thread that unpublished it then waits on
// `hard` (Dekker (CT1)/(HL1)) before the timer may be freed.
//
// Concurrency (same owner): arm: the owner only (it alone re-arms the kernel timer, so the hook and
// the owner never race on timer_settime). cancel, cancel_sync: any thread, any number. The pass and
// the hook: the owner. A deferred callback may arm/cancel timers of its owner (cancel_sync of its
// own timer returns would_deadlock); an urgent one may not (they take the queue lock: not
// async-signal-safe; asserted). Free a timer after cancel_sync returned
// removed/waited/idle, or when never armed; never from its own callback.
//
// Thread exit disarms every timer (they never fire afterwards; cancel_sync returns idle) and deletes
// the kernel timer. fork(): kernel timers are not inherited, so the forking thread's state is reset
// to idle in the child (timers unlinked, `scheduled` clear, a fresh kernel timer): the kernel once
// copied the scheduled flag into children, whose timers then never fired.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/cpu_timer_base.hpp>
#include <rtdefer/detail/cpu_timer_state.hpp>
#include <rtdefer/detail/intrusive_heap.hpp>
#include <rtdefer/expiry_lock.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace rtdefer {

enum class cpu_timer_policy : std::uint8_t { hybrid, kernel_clock };
enum class cpu_timer_mode : std::uint8_t { deferred, urgent };

[[nodiscard]] constexpr const char* to_string(cpu_timer_policy p) noexcept {
    return p == cpu_timer_policy::hybrid ? "hybrid" : "kernel_clock";
}

struct cpu_timer_options {
    cpu_timer_policy policy = cpu_timer_policy::hybrid;
    std::size_t capacity = 64; ///< armed timers per model (two heaps, allocated at setup)
};

/// The kernel's MAX_COLLECTED: timers expired per pass; more due ones run in a follow-up pass.
inline constexpr std::size_t cpu_timer_max_collected = 20;

namespace detail {
struct cpu_timer_queue;
struct cpu_expiry;
inline constexpr std::uint32_t hs_idle = 0, hs_armed = 1, hs_firing = 2; // cpu_timer::hard_state_
} // namespace detail

/// A caller-owned CPU-time timer bound to one thread (the kernel's k_itimer on a thread CPU clock).
/// Non-copyable, non-movable. It holds a thread_ref to its owner, so destroying it may free an exited
/// owner's ctx (not real-time safe then). Destroying it while armed or running aborts.
class cpu_timer : public detail::cpu_timer_base<cpu_timer> {
public:
    /// Runs on the owner: deferred, in task_work with the expiry lock held; urgent, in the interrupt
    /// hook (async-signal-safe only). It must not free its own timer.
    using callback = cpu_timer_base::callback; // void (*)(cpu_timer& t, void* arg) noexcept

    /// Effects: binds the timer to `owner` (takes a reference; the caller must hold one or be it).
    explicit cpu_timer(thread_ctx& owner) noexcept : owner_(owner) {}
    cpu_timer(const cpu_timer&) = delete;
    cpu_timer& operator=(const cpu_timer&) = delete;
    /// Effects: unlinks an urgent timer that fired (the hook cannot unlink; the next pass would).
    /// Aborts if it is pending or running. Progress: blocking (the queue lock), then drops the ref.
    ~cpu_timer();

    /// Effects: arms (or moves) the timer to fire when the owner's CPU time reaches `cpu_deadline_ns`
    /// (CLOCK_THREAD_CPUTIME_ID of the owner; in the past: at its next check). Re-arms the kernel
    /// timer only if this deadline is earlier than what it is armed for.
    /// Returns: ok (was not pending), moved (was pending: replaced), cancelling (a cancel_sync
    /// is in progress), no_space, invalid_argument (null fn), not_installed (no cpu_timer_setup on the
    /// owner), exited (the owner exited). Precondition: called on the owner (asserted).
    /// Progress: the owner's PI queue lock for O(log n) (uncontended: no syscall); timer_settime only
    /// when the head moves earlier. Real-time safety: no allocation.
    [[nodiscard]] status arm(std::uint64_t cpu_deadline_ns, callback fn, void* arg = nullptr,
                             cpu_timer_mode mode = cpu_timer_mode::deferred) noexcept RTDEFER_BLOCKING;
    /// Effects, returns: arm(now + budget) where now is the owner's CPU clock (one syscall to read it).
    [[nodiscard]] status arm_after(std::chrono::nanoseconds budget, callback fn, void* arg = nullptr,
                                   cpu_timer_mode mode = cpu_timer_mode::deferred) noexcept RTDEFER_BLOCKING;
    /// Effects: disarms the timer if pending (no syscall: the kernel timer is left for the hook to
    /// re-check). A running callback is not waited for. Returns: whether it was pending and will now
    /// not run. Progress: the PI queue lock for O(log n). Any thread, not a signal handler.
    [[nodiscard]] bool cancel() noexcept RTDEFER_BLOCKING;
    /// Effects: disarms the timer and waits until no callback of it runs (timer_delete_sync). While it
    /// runs, arm() is refused. Returns: removed (dequeued before it ran), waited (it was running or
    /// collected; it has returned), idle, would_deadlock (from its own deferred callback: disarmed,
    /// the caller goes on). After removed/waited/idle it may
    /// be freed. Progress: blocking on the expirer's PI expiry lock (deferred) or PI hard lock
    /// (urgent) for the callback's remaining time, at the caller's priority; never spins.
    /// Real-time safety: no allocation, PI locks only. Not from a signal handler (asserted).
    [[nodiscard]] status cancel_sync(thread_ctx& self) noexcept RTDEFER_BLOCKING;

    /// Returns: the deadline (owner CPU ns) of the current/last arm. Stable in the callback.
    /// Progress: wait-free. Real-time safety: one load, any context.
    using cpu_timer_base::expires;
    /// Returns: the owner's CPU time sampled when the last expiry was handled (lateness = this -
    /// expires()). Progress: wait-free (relaxed load: read it in the callback or after cancel_sync).
    /// Real-time safety: one load, any context.
    using cpu_timer_base::fired_at;
    /// Returns: the expiry item (handling names the expirer while a deferred callback runs).
    /// Progress: wait-free. Real-time safety: any context.
    using cpu_timer_base::expiry;
    /// Returns: the owner's ctx. Progress: wait-free. Real-time safety: any context.
    [[nodiscard]] thread_ctx& owner() const noexcept RTDEFER_NONBLOCKING { return *owner_; }

private:
    friend struct detail::cpu_timer_queue;
    friend struct detail::cpu_expiry;
    cpu_timer_mode mode_ = cpu_timer_mode::deferred;
    std::atomic<std::uint32_t> hard_state_{detail::hs_idle};
    thread_ref owner_;
};


/// Effects: prepares the calling thread for CPU-time timers: allocates its two heaps, creates its one
/// kernel timer (SIGEV_THREAD_ID to this thread with the interrupt signal; one RLIMIT_SIGPENDING
/// slot), registers the interrupt hook and the fork handler (once per process).
/// Returns: ok; busy (already set up on this thread); not_installed (interrupt_install() first);
/// no_space (EAGAIN: RLIMIT_SIGPENDING or the hook table full); system_error.
/// Precondition: `self` is the caller's ctx. Throws: std::bad_alloc. Progress: blocking.
/// Real-time safety: setup path.
[[nodiscard]] status cpu_timer_setup(thread_ctx& self, cpu_timer_options opts = {});

/// Returns: `ctx`'s CPU time in ns (its CLOCK_THREAD_CPUTIME_ID), 0 if not set up or unreadable.
/// Any thread; the caller holds a reference. Progress: one syscall (~200 ns); async-signal-safe.
[[nodiscard]] std::uint64_t cpu_time_ns(const thread_ctx& ctx) noexcept RTDEFER_NONBLOCKING;

/// Statistics of one thread's cpu_timer queue (zeros before setup). Relaxed snapshots.
struct cpu_timer_stats {
    std::uint64_t kernel_arms = 0; ///< timer_settime calls (arm, re-check, pause/resume)
    std::uint64_t passes = 0;      ///< expiry task_work passes
    std::uint64_t hard_fires = 0;  ///< urgent callbacks run in the interrupt hook
    std::uint64_t hook_checks = 0; ///< interrupts that read the CPU clock
};
/// Returns: the statistics of `ctx`. Progress: wait-free. Real-time safety: relaxed loads.
[[nodiscard]] cpu_timer_stats cpu_timer_statistics(const thread_ctx& ctx) noexcept RTDEFER_NONBLOCKING;

class cpu_timer_sleep_guard {
public:
    explicit cpu_timer_sleep_guard(thread_ctx& self) noexcept RTDEFER_NONBLOCKING;
    ~cpu_timer_sleep_guard();
    cpu_timer_sleep_guard(const cpu_timer_sleep_guard&) = delete;
    cpu_timer_sleep_guard& operator=(const cpu_timer_sleep_guard&) = delete;

private:
    thread_ctx& self_;
    bool paused_ = false;
};

/// Effects, returns: park_until(self, deadline) with the wall timer paused (cpu_timer_sleep_guard).
[[nodiscard]] status cpu_timer_park_until(thread_ctx& self, std::chrono::steady_clock::time_point deadline) noexcept RTDEFER_BLOCKING;
/// Effects, returns: wait_for_work_until(self, deadline) with the wall timer paused.
[[nodiscard]] status cpu_timer_wait_for_work_until(thread_ctx& self, std::chrono::steady_clock::time_point deadline) noexcept RTDEFER_BLOCKING;

/// What one budgeted cycle took (cpu_budget::finish).
struct cpu_cycle {
    std::uint64_t used_ns = 0;   ///< CPU time from start to finish
    std::uint64_t now_ns = 0;    ///< the CPU clock at finish (pass it to the next start_at)
    bool overran = false;        ///< the budget expired during the cycle (the urgent callback ran)
    std::uint64_t late_ns = 0;   ///< if overran: CPU time past the budget when it was caught
};

/// A per-cycle CPU budget for a periodic loop: start() at the top of the cycle arms an urgent
/// cpu_timer at start + budget, finish() at the end disarms it and reports the CPU the cycle took.
/// While the cycle overruns, the interrupt hook sets overrunning() (poll it to shed work) and runs
/// the optional async-signal-safe `on_overrun` (e.g. irq_work_queue to a watchdog).
/// Cost: arm and disarm take the owner's PI queue lock uncontended (no syscall); timer_settime only
/// when the kernel timer is not armed at or before the new deadline (lazy). The CPU clock reads
/// (~200 ns each) are one in finish() and one in start(), or none in start_at(previous.now_ns).
/// Owner only; cpu_timer_setup must have run on it.
class cpu_budget {
public:
    /// Effects: binds to `self` (the caller's ctx). `on_overrun` (nullable) runs in interrupt context.
    cpu_budget(thread_ctx& self, std::chrono::nanoseconds budget, cpu_timer::callback on_overrun = nullptr,
               void* arg = nullptr) noexcept
        : timer_(self), self_(self), budget_ns_(budget.count() > 0 ? static_cast<std::uint64_t>(budget.count()) : 0),
          user_fn_(on_overrun), user_arg_(arg) {}
    /// Effects: cancel_sync of the timer (blocking).
    ~cpu_budget() { (void)timer_.cancel_sync(self_); }
    cpu_budget(const cpu_budget&) = delete;
    cpu_budget& operator=(const cpu_budget&) = delete;

    /// Effects: starts a cycle at CPU time `cpu_now_ns`. Returns: arm()'s status (ok/moved).
    /// Progress: PI queue lock, uncontended; no syscall unless the kernel timer must move earlier.
    [[nodiscard]] status start_at(std::uint64_t cpu_now_ns) noexcept RTDEFER_BLOCKING {
        start_ns_ = cpu_now_ns;
        // relaxed: reset by the owner before the arm, which publishes it (CT3) to the hook.
        overrun_.store(false, std::memory_order_relaxed);
        return timer_.arm(cpu_now_ns + budget_ns_, &on_expiry, this, cpu_timer_mode::urgent);
    }
    /// Effects, returns: start_at(now), reading the CPU clock (one syscall).
    [[nodiscard]] status start() noexcept RTDEFER_BLOCKING { return start_at(cpu_time_ns(self_)); }
    /// Returns: whether the running cycle has overrun its budget. Progress: wait-free (one load).
    [[nodiscard]] bool overrunning() const noexcept RTDEFER_NONBLOCKING {
        // acquire: pairs with the release in on_expiry(): late_ns_ is visible.
        return overrun_.load(std::memory_order_acquire);
    }
    /// Effects: ends the cycle (disarms: no syscall) and reads the CPU clock once.
    /// Returns: what the cycle took. Progress: PI queue lock, uncontended.
    [[nodiscard]] cpu_cycle finish() noexcept RTDEFER_BLOCKING {
        (void)timer_.cancel();
        cpu_cycle c;
        c.now_ns = cpu_time_ns(self_);
        c.used_ns = c.now_ns - start_ns_;
        c.overran = overrunning();
        if (c.overran)
            c.late_ns = late_ns_;
        return c;
    }
    /// Returns: cycles that overran since construction. Progress: wait-free.
    [[nodiscard]] std::uint64_t overruns() const noexcept RTDEFER_NONBLOCKING {
        return overruns_.load(std::memory_order_relaxed); // relaxed: a statistic
    }
    [[nodiscard]] const cpu_timer& timer() const noexcept RTDEFER_NONBLOCKING { return timer_; }

private:
    static void on_expiry(cpu_timer& t, void* arg) noexcept RTDEFER_NONBLOCKING {
        auto* b = static_cast<cpu_budget*>(arg);
        b->late_ns_ = t.fired_at() - t.expires();
        b->overruns_.fetch_add(1, std::memory_order_relaxed); // relaxed: a statistic
        // release: pairs with the acquire in overrunning().
        b->overrun_.store(true, std::memory_order_release);
        if (b->user_fn_ != nullptr) {
            RTDEFER_EFFECTS_TRUST_BEGIN // async-signal-safe by contract; RTSan checks it
            b->user_fn_(t, b->user_arg_);
            RTDEFER_EFFECTS_TRUST_END
        }
    }

    cpu_timer timer_;
    thread_ctx& self_;
    std::uint64_t budget_ns_;
    std::uint64_t start_ns_ = 0;
    std::uint64_t late_ns_ = 0;
    std::atomic<bool> overrun_{false};
    std::atomic<std::uint64_t> overruns_{0};
    cpu_timer::callback user_fn_;
    void* user_arg_;
};

} // namespace rtdefer

// The mechanism: queue, interrupt hook, expiry pass, exit and fork handlers, member definitions.
#include <rtdefer/detail/cpu_timer_queue.hpp>
