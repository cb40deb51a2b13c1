// rtdefer/process_cpu_timer.hpp: process-wide CPU-time timers (CLOCK_PROCESS_CPUTIME_ID): deadlines
// in the CPU time of all the process's threads together, armed and cancelled from any attached
// thread, expired by ONE expirer thread designated at setup, in its task_work under its expiry lock.
// Because the expiry runs on whichever thread the library designated, not on the arming one, the
// timer publishes `handling` with a counted reference to the expirer and a canceller blocks on that
// expirer's PI expiry lock: the process-wide case of "posix-cpu-timers: Implement the missing
// timer_wait_running callback" (2aaae4bf41b1). See docs/cpu_timer.md.
//
//   process_cpu_timer_setup(expirer, opts)   once, on the expirer: one kernel timer for the process
//   process_cpu_timer t;                      caller-owned, not bound to a thread
//   t.arm(self, deadline_ns, fn, arg)         any attached thread; deadline in process CPU ns
//   t.cancel() / t.cancel_sync(self)          any attached thread (not a signal handler)
//
// Policies (cpu_timer_policy, as for per-thread timers):
//   kernel_clock  a CLOCK_PROCESS_CPUTIME_ID POSIX timer signalled to the expirer (SIGEV_THREAD_ID);
//                 the kernel checks it on its tick (HZ) on the CPUs running the process.
//   hybrid        (default) a CLOCK_MONOTONIC timer whose interrupt re-reads the process CPU clock.
//                 The process clock runs up to N× faster than wall time (N threads on N CPUs), so a
//                 wall timer for the whole remaining budget could fire up to (N-1)/N of it late. The
//                 hybrid arms for max(remaining / N, process_cpu_timer_min_recheck) of wall time (N =
//                 opts.cpus, or the CPUs online at setup), then re-reads and re-arms for the new
//                 remainder: never early, late by at most N × min_recheck of process CPU, at the cost
//                 of at most ~N·ln(budget / (N·min_recheck)) re-check interrupts when fewer than N
//                 threads run.
//                 A wrong (too small) `cpus` makes it fire late, never early.
// Model: deferred only (the callback runs in the expirer's task_work at its next safe point, with
// its expiry lock held, at most cpu_timer_max_collected per pass). An urgent model (callback in the
// expirer's interrupt hook) is not implemented for process timers.
//
// Timer states (q = the process queue lock, a PI mutex; h = item_.handling):
//
//   state      queued  collected_  h        entered by                    left by
//   idle       no      no          null     construction, cancel*, fire   arm
//   pending    yes     no          null     arm                           the pass (collect), cancel*
//   collected  no      yes         expirer  the pass: pop + mark, one q   the pass: runs or skips it
//                                           section                       (seq_/cancelling_), clears h
//
// Who touches the kernel timer: only the expirer (its arms, its pass, its interrupt hook), as the
// kernel timer of a thread is only touched by its owner. An arm on another thread that moves the
// head earlier than what the kernel timer is set for sends the expirer an IPI (send_ipi); its hook
// re-arms. The store→load pairs (PT1)/(PT2) make sure either the armer sees the hook's new setting
// (and kicks) or the hook sees the armer's new head (and re-arms for it).
//
// Expirer exit: every timer is disarmed (they never fire afterwards; arm returns exited,
// cancel_sync idle) and the kernel timer deleted. A canceller blocked on the expirer's lock returns
// when the callback does (the expirer cannot exit inside a pass). Setup may then run again on another
// thread. fork(): the child's queue is reset (timers unlinked, no expirer): set it up again there.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/cpu_timer.hpp>
#include <rtdefer/detail/cpu_timer_base.hpp>
#include <rtdefer/detail/intrusive_heap.hpp>
#include <rtdefer/expiry_lock.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace rtdefer {

struct process_cpu_timer_options {
    cpu_timer_policy policy = cpu_timer_policy::hybrid;
    std::size_t capacity = 64; ///< armed timers (one heap, allocated by the first setup; kept after)
    unsigned cpus = 0;         ///< hybrid: most threads of the process running at once (0: CPUs online)
};

/// The hybrid's shortest wall re-check interval (bounds the interrupt rate; see the top).
inline constexpr std::uint64_t process_cpu_timer_min_recheck_ns = 10'000;

namespace detail {
struct pcpu_queue;
struct cpu_expiry;
}

/// A caller-owned process CPU-time timer (the kernel's k_itimer on CLOCK_PROCESS_CPUTIME_ID).
/// Non-copyable, non-movable. Destroying it while armed or running aborts: cancel_sync it first.
class process_cpu_timer : public detail::cpu_timer_base<process_cpu_timer> {
public:
    /// Runs on the expirer, in its task_work, with its expiry lock held. Must not free its timer.
    using callback = cpu_timer_base::callback; // void (*)(process_cpu_timer& t, void* arg) noexcept

    process_cpu_timer() noexcept = default;
    process_cpu_timer(const process_cpu_timer&) = delete;
    process_cpu_timer& operator=(const process_cpu_timer&) = delete;
    /// Effects: none. Aborts if the timer is pending, collected or running.
    ~process_cpu_timer();

    /// Effects: arms (or moves) the timer to fire when the process's CPU time reaches
    /// `cpu_deadline_ns` (in the past: at the expirer's next check). If this moves the head earlier
    /// than what the kernel timer is set for: on the expirer one timer_settime, elsewhere one IPI to
    /// the expirer (its hook re-arms).
    /// Returns: ok (was not pending), moved (was pending: replaced), cancelling (a cancel_sync
    /// is in progress), no_space, invalid_argument (null fn), not_installed (no setup yet), exited
    /// (the expirer exited). Precondition: `self` is the caller's ctx.
    /// Progress: the PI queue lock for O(log n). Real-time safety: no allocation; one syscall only
    /// when the head moves earlier (timer_settime or tgkill). Not from a signal handler.
    [[nodiscard]] status arm(thread_ctx& self, std::uint64_t cpu_deadline_ns, callback fn,
                             void* arg = nullptr) noexcept RTDEFER_BLOCKING;
    /// Effects, returns: arm(self, now + budget, ...) with now the process CPU clock (one syscall).
    [[nodiscard]] status arm_after(thread_ctx& self, std::chrono::nanoseconds budget, callback fn,
                                   void* arg = nullptr) noexcept RTDEFER_BLOCKING;
    /// Effects, returns, progress: as cpu_timer::cancel() (no syscall: the expirer's hook re-checks
    /// lazily; a running callback is not waited for).
    [[nodiscard]] bool cancel() noexcept RTDEFER_BLOCKING;
    /// Effects, returns, real-time safety: as cpu_timer::cancel_sync() for a deferred timer
    /// (removed / waited / idle / would_deadlock; free it after the first three). The wait is on the
    /// designated expirer's PI expiry lock, reached through a counted reference to its ctx, so the
    /// expirer may exit meanwhile. Precondition: `self` is the caller's ctx.
    [[nodiscard]] status cancel_sync(thread_ctx& self) noexcept RTDEFER_BLOCKING;

    /// Returns: the deadline (process CPU ns) of the current/last arm. Stable in the callback.
    /// Progress: wait-free. Real-time safety: one load, any context.
    using cpu_timer_base::expires;
    /// Returns: the process CPU time sampled when the last expiry was handled. Progress: wait-free
    /// (relaxed load: read it in the callback or after cancel_sync).
    /// Real-time safety: one load, any context.
    using cpu_timer_base::fired_at;
    /// Returns: the expiry item (handling names the expirer while the callback runs).
    /// Progress: wait-free. Real-time safety: any context.
    using cpu_timer_base::expiry;

private:
    friend struct detail::pcpu_queue;
    friend struct detail::cpu_expiry;
};

/// Effects: designates the calling thread as the process's timer expirer: creates the process
/// queue (first call only), one kernel timer signalled to this thread (SIGEV_THREAD_ID with the
/// interrupt signal; one RLIMIT_SIGPENDING slot), and registers the interrupt hook and the exit and
/// fork handlers. The expirer must reach a safe point (task_work_run, wait_for_work_until) regularly; its
/// park may return `interrupted` for hybrid re-checks (loops re-check their conditions anyway).
/// Returns: ok; busy (a live expirer exists); not_installed (interrupt_install() first); no_space
/// (EAGAIN: RLIMIT_SIGPENDING, or the hook table full); system_error.
/// Precondition: `expirer` is the caller's ctx. Throws: std::bad_alloc. Progress: blocking.
/// Real-time safety: setup path.
[[nodiscard]] status process_cpu_timer_setup(thread_ctx& expirer, process_cpu_timer_options opts = {});

/// Returns: the process's CPU time in ns (CLOCK_PROCESS_CPUTIME_ID; 0 if unreadable).
/// Progress: one syscall (the kernel sums the threads' clocks); async-signal-safe.
[[nodiscard]] std::uint64_t process_cpu_time_ns() noexcept RTDEFER_NONBLOCKING;

/// Statistics of the process queue (zeros before setup). Relaxed snapshots.
struct process_cpu_timer_stats {
    std::uint64_t kernel_arms = 0; ///< timer_settime calls (arm, re-check)
    std::uint64_t passes = 0;      ///< expiry task_work passes
    std::uint64_t hook_checks = 0; ///< interrupts on the expirer that read the process CPU clock
    std::uint64_t kicks = 0;       ///< IPIs from arms on other threads that moved the head earlier
};
/// Returns: the statistics. Progress: wait-free. Real-time safety: relaxed loads.
[[nodiscard]] process_cpu_timer_stats process_cpu_timer_statistics() noexcept RTDEFER_NONBLOCKING;

} // namespace rtdefer

// The mechanism: the process queue, the expirer's hook and pass, exit and fork handlers.
#include <rtdefer/detail/process_cpu_timer_queue.hpp>
