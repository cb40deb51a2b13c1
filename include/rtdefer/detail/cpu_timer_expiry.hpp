// rtdefer/detail/cpu_timer_expiry.hpp: what the per-thread (cpu_timer) and the process-wide
// (process_cpu_timer) CPU-timer mechanisms share: the queue lock taken inside task_work, the kernel
// timer signalled to one thread, and the run half of an expiry pass (handle_posix_cpu_timers after
// collect_timerqueue): each collected timer runs unless its seq moved or a cancel_sync is in
// progress, then `handling` is cleared under the queue lock and a waiting canceller is let through.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/expiry_lock_state.hpp>
#include <rtdefer/detail/syscall.hpp>
#include <rtdefer/expiry_lock.hpp>
#include <rtdefer/interrupt.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <signal.h>
#include <sys/syscall.h>
#include <time.h>

namespace rtdefer::detail {

// A queue lock is taken inside task_work_run (a nonblocking context): the kernel's
// posix_cpu_timers_work takes its mutex there too. Uncontended it is one CAS; contended, a canceller
// holds it for O(log n) and PI boosts it. Hence trusted for RealtimeSanitizer here.
inline void queue_lock(pi_mutex& m) noexcept RTDEFER_NONBLOCKING {
    RTDEFER_EFFECTS_TRUST_BEGIN
    [[maybe_unused]] rtsan_trust trust;
    m.lock(); // failures: pi_mutex's policy (asserted)
    RTDEFER_EFFECTS_TRUST_END
}
inline void queue_unlock(pi_mutex& m) noexcept RTDEFER_NONBLOCKING {
    RTDEFER_EFFECTS_TRUST_BEGIN
    [[maybe_unused]] rtsan_trust trust;
    m.unlock();
    RTDEFER_EFFECTS_TRUST_END
}

/// Returns: a POSIX timer on `clk` whose expiry sends the interrupt signal to thread `tid`
/// (SIGEV_THREAD_ID), or -errno. Tagged (interrupt.hpp): the handler passes
/// interrupt_source::cpu_timer to tagged hooks, and hooks of other subsystems (the deferred word's
/// INFLIGHT) know this signal is not theirs.
inline int create_signal_timer(pid_t tid, clockid_t clk) noexcept {
    sigevent sev{};
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = interrupt_signal();
    sev._sigev_un._tid = tid; // glibc 2.36 has no sigev_notify_thread_id
    sev.sigev_value.sival_int = interrupt_tag(interrupt_source::cpu_timer);
    int id = -1;
    const long rc = raw_syscall(SYS_timer_create, clk, &sev, &id);
    return rc == 0 ? id : static_cast<int>(rc);
}

/// The statistics both queues keep (each adds its own beside them). relaxed: counters only.
struct cpu_timer_counters {
    std::atomic<std::uint64_t> kernel_arms{0}, passes{0}, hook_checks{0};

    /// Effects: stores a relaxed snapshot of the counters into the members of `r` of their names.
    template <class Stats>
    void snapshot(Stats& r) const noexcept RTDEFER_NONBLOCKING {
        r.kernel_arms = kernel_arms.load(std::memory_order_relaxed); // relaxed (all): statistics
        r.passes = passes.load(std::memory_order_relaxed);
        r.hook_checks = hook_checks.load(std::memory_order_relaxed);
    }
};

/// The two halves of a pass, befriended by both timer classes (they share these member names).
struct cpu_expiry {
    /// collect_timerqueue(): in the caller's queue-lock section, pops the due timers of `h`
    /// (expires_ns_ <= now) into batch/seqs from n on, marking `handling` with `p`; at most N in
    /// all, `more` set when due ones were left for a follow-up pass. A popped timer for which
    /// `claim(t)` is false is unlinked but not collected (an urgent one its hook fired already).
    template <class Timer, class Heap, std::size_t N, class Claim>
    static void collect(Heap& h, std::uint64_t now, expiry_pass& p, Timer* (&batch)[N], std::uint32_t (&seqs)[N],
                        std::size_t& n, bool& more, Claim claim) noexcept {
        while (Timer* t = h.top()) {
            if (t->expires_ns_ > now)
                break;
            if (n == N) {
                more = true;
                break;
            }
            h.erase(*t);
            if (!claim(*t))
                continue;
            t->collected_ = true;
            p.mark(t->item_);
            seqs[n] = t->seq_;
            batch[n++] = t;
        }
    }

    /// One expiry pass of `self` (handle_posix_cpu_timers): under its expiry lock, `collect(p,
    /// batch, seqs, n, more)` in one queue-lock section, run_collected() outside it, then `finish()`
    /// in a last queue-lock section (clear `scheduled`, re-publish). Returns: whether due timers
    /// were left for a follow-up pass (the caller queues it).
    template <class Timer, std::size_t N, class Queue, class Collect, class Finish>
    static bool pass(Queue& q, thread_ctx& self, std::uint64_t now, Collect collect, Finish finish) noexcept {
        Timer* batch[N];
        std::uint32_t seqs[N];
        std::size_t n = 0;
        bool more = false;
        expiry_pass p(self);
        q.lock_q();
        collect(p, batch, seqs, n, more);
        q.unlock_q();
        run_collected(q, p, batch, seqs, n, now);
        q.lock_q();
        finish();
        q.unlock_q();
        return more;
    }

    /// Runs batch[0..n) (collected with their seq_ in seqs, `handling` marked by `p`), each under
    /// the rules above; `q` provides lock_q/unlock_q and accepting() (false: its owner exited).
    template <class Timer, class Queue>
    static void run_collected(Queue& q, expiry_pass& p, Timer* const* batch, const std::uint32_t* seqs, std::size_t n,
                              std::uint64_t now) noexcept {
        for (std::size_t i = 0; i < n; ++i) {
            Timer& t = *batch[i];
            q.lock_q();
            const bool run = q.accepting() && t.seq_ == seqs[i] && t.cancelling_ == 0;
            t.collected_ = false;
            const typename Timer::callback fn = t.fn_;
            void* const arg = t.arg_;
            q.unlock_q();
            if (run) {
                t.fired_ns_.store(now, std::memory_order_relaxed); // relaxed: published by the clear (EL2)
                fn(t, arg);
            }
            q.lock_q();
            p.clear(t.item_); // the expirer's last access to t
            q.unlock_q();
            p.sync_wait_running();
        }
    }
};

} // namespace rtdefer::detail
