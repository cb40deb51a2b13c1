// rtdefer/detail/process_cpu_timer_queue.hpp: process_cpu_timer's mechanism (included at the end of
// process_cpu_timer.hpp, which holds the contract and the state table): the one process queue, the
// designated expirer with its kernel timer and task_work item, the quick check in the expirer's
// interrupt hook, the expiry pass, the exit and fork handlers.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/cpu_timer.hpp>
#include <rtdefer/detail/cpu_clock.hpp>
#include <rtdefer/detail/cpu_timer_base.hpp>
#include <rtdefer/detail/cpu_timer_expiry.hpp>
#include <rtdefer/detail/exit_hooks.hpp>
#include <rtdefer/detail/expiry_lock_state.hpp>
#include <rtdefer/detail/intrusive_heap.hpp>
#include <rtdefer/detail/setup_lock.hpp>
#include <rtdefer/detail/syscall.hpp>
#include <rtdefer/expiry_lock.hpp>
#include <rtdefer/interrupt.hpp>
#include <rtdefer/process_cpu_timer.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/task_work.hpp>
#include <rtdefer/thread.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <new>
#include <utility>

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

namespace rtdefer {

namespace detail {

/// One setup's expirer: its kernel timer and its preallocated expiry task_work item (the kernel's
/// posix_cputimers_work of the task the expiry is signalled to). Allocated by setup; freed at the
/// expirer's exit, or by its last pass if that was still queued then. Touched only by the expirer
/// (thread context and its hook), and by other threads under the queue lock.
struct pcpu_expirer : callback_head {
    thread_ctx* ctx = nullptr;
    int ktimer = -1;
    cpu_timer_policy policy = cpu_timer_policy::hybrid;
    std::uint64_t cpus = 1;
    bool retired = false; // expirer-only: exited with this pass queued; the pass frees it
    /// CPUTIMERS_WORK_SCHEDULED: the pass is queued and has not finished.
    std::atomic<bool> scheduled{false};
    /// What the kernel timer is set for (process CPU ns; cpu_never: not armed), written by the
    /// expirer only, read by armers under q (PT1); armed_wall_ns: its CLOCK_MONOTONIC expiry (hybrid).
    std::atomic<std::uint64_t> armed_cpu_ns{cpu_never};
    std::atomic<std::uint64_t> armed_wall_ns{cpu_never};
};

/// The process queue: created by the first setup, never freed (timers reach it through `global`).
struct pcpu_queue : cpu_timer_counters {
    using heap = process_cpu_timer::heap;

    explicit pcpu_queue(std::size_t capacity) : timers(capacity) {}

    pi_mutex lock;
    heap timers;
    pcpu_expirer* cur = nullptr; // under q; the expirer also reads it without q (it alone writes it)
    /// The expirer's ctx, for the hook's and exit's "is this me" check without touching `cur`.
    std::atomic<thread_ctx*> expirer_ctx{nullptr};
    /// The earliest armed deadline (the kernel's nextevt for the process).
    std::atomic<std::uint64_t> next_ns{cpu_never};
    std::atomic<std::uint64_t> kicks{0}; // statistic (relaxed), beside cpu_timer_counters

    static constinit inline std::atomic<pcpu_queue*> global{nullptr};
    static constinit inline setup_mutex setup_lock{};

    // Taken inside task_work_run (the pass), trusted for RealtimeSanitizer: see queue_lock.
    void lock_q() noexcept RTDEFER_NONBLOCKING { queue_lock(lock); }
    void unlock_q() noexcept RTDEFER_NONBLOCKING { queue_unlock(lock); }
    // Under q: an expirer is set up. Always true in a pass (exit retires it before its last pass).
    bool accepting() const noexcept RTDEFER_NONBLOCKING { return cur != nullptr; }

    // What cpu_timer_base's cores ask of the queue (see there), all under q.
    bool unlink(process_cpu_timer& t) noexcept RTDEFER_NONBLOCKING {
        timers.erase(t);
        return true; // no hard context: a queued timer's expiry is always still to come
    }
    /// unlink(t), then publishes the head, which moved later at most: nothing to re-arm or kick.
    bool remove(process_cpu_timer& t) noexcept RTDEFER_NONBLOCKING {
        const bool claimed = unlink(t);
        publish(nullptr);
        return claimed;
    }
    void armed(thread_ctx& self) noexcept RTDEFER_NONBLOCKING { publish(&self); }
    static constexpr bool hard_context = false; // deferred only: no callback runs in the hook

    /// Sets e's kernel timer for process CPU deadline `next` (cpu_never: disarm). Expirer only.
    /// Hybrid: the wall interval is the remainder divided by e.cpus (the process clock runs at most
    /// that much faster than wall time), floored at min_recheck; the hook re-reads and re-arms.
    void kernel_set(pcpu_expirer& e, std::uint64_t next, std::uint64_t cpu_now, std::uint64_t mono) noexcept RTDEFER_NONBLOCKING {
        itimerspec its{};
        std::uint64_t wall = cpu_never;
        if (next != cpu_never) {
            if (e.policy == cpu_timer_policy::hybrid) {
                std::uint64_t d = next > cpu_now ? (next - cpu_now) / e.cpus : 0;
                d = d < process_cpu_timer_min_recheck_ns ? process_cpu_timer_min_recheck_ns : d;
                wall = mono + d;
                its.it_value = ns_ts(wall);
            } else {
                its.it_value = ns_ts(next > 0 ? next : 1);
            }
        }
        // relaxed: published by the seq_cst store below.
        e.armed_wall_ns.store(wall, std::memory_order_relaxed);
        // (PT2) seq_cst: the hook's store, before its re-load of next_ns; Dekker with the armer's
        // (PT1) store of next_ns before its load of armed_cpu_ns. Pairs with (PT1).
        e.armed_cpu_ns.store(next, std::memory_order_seq_cst);
        if (e.ktimer >= 0)
            (void)raw_syscall(SYS_timer_settime, e.ktimer, TIMER_ABSTIME, &its, nullptr);
        kernel_arms.fetch_add(1, std::memory_order_relaxed); // relaxed: statistic
    }

    /// Under q: publishes the head. From the expirer (`self` is it), re-arms the kernel timer if
    /// the head is earlier than what it is set for; from another thread, kicks the expirer instead.
    /// `self` null: only publish (cancel: the head never moves earlier).
    void publish(thread_ctx* self) noexcept RTDEFER_NONBLOCKING {
        const std::uint64_t next = timers.empty() ? cpu_never : timers.top()->expires_ns_;
        // (PT1) seq_cst: the armer's store, before its load of armed_cpu_ns below; pairs with (PT2).
        next_ns.store(next, std::memory_order_seq_cst);
        if (self == nullptr || cur == nullptr)
            return;
        pcpu_expirer& e = *cur;
        // (PT1) seq_cst load: see above. Either this sees the hook's (PT2) setting, or the hook's
        // re-load sees our head.
        if (next >= e.armed_cpu_ns.load(std::memory_order_seq_cst))
            return;
        if (self == e.ctx) {
            kernel_set(e, next, clock_ns(CLOCK_PROCESS_CPUTIME_ID), mono_ns());
        } else {
            kicks.fetch_add(1, std::memory_order_relaxed); // relaxed: statistic
            (void)send_ipi(*e.ctx);                        // the expirer's hook re-arms
        }
    }

    /// Under q: unlinks every timer and drops the expirer (exit, fork child).
    pcpu_expirer* detach_expirer() noexcept RTDEFER_NONBLOCKING {
        // seq_cst: the hook (on the expirer) stops touching `cur` once this store is done.
        expirer_ctx.store(nullptr, std::memory_order_seq_cst);
        timers.clear();
        next_ns.store(cpu_never, std::memory_order_seq_cst); // seq_cst: as (PT1)
        pcpu_expirer* e = cur;
        cur = nullptr;
        return e;
    }

    static void pass(callback_head* cb) noexcept;
    static void interrupt(thread_ctx* self) noexcept RTDEFER_NONBLOCKING;
    static void on_exit(thread_ctx& self) noexcept;
    static void on_fork_child() noexcept;
};

/// The quick check on the expirer (run_posix_cpu_timers → check_process_timers): a load and a
/// compare on every other thread; on the expirer one load when nothing is armed, under hybrid a vDSO
/// read while the wall timer has not fired; otherwise one process CPU clock read.
inline void pcpu_queue::interrupt(thread_ctx* self) noexcept RTDEFER_NONBLOCKING {
    // acquire: pairs with the release in setup: the queue is constructed.
    pcpu_queue* qp = global.load(std::memory_order_acquire);
    // acquire: pairs with the release in setup: `cur` is set (same thread: program order anyway).
    if (qp == nullptr || self == nullptr || qp->expirer_ctx.load(std::memory_order_acquire) != self)
        return;
    pcpu_queue& q = *qp;
    pcpu_expirer& e = *q.cur;
    // seq_cst: (PT2)'s partner read (see publish).
    std::uint64_t next = q.next_ns.load(std::memory_order_seq_cst);
    // relaxed (both): expirer-only words, and we are the expirer, interrupted.
    const std::uint64_t armed_cpu = e.armed_cpu_ns.load(std::memory_order_relaxed);
    const std::uint64_t armed_wall = e.armed_wall_ns.load(std::memory_order_relaxed);
    if (next == cpu_never && armed_cpu == cpu_never)
        return;
    const std::uint64_t mono = mono_ns();
    const bool kicked = next < armed_cpu; // an arm elsewhere moved the head earlier
    if (!kicked && e.policy == cpu_timer_policy::hybrid && armed_wall != cpu_never && mono < armed_wall)
        return; // the process clock cannot have passed the deadline yet: the wall timer has not fired
    q.hook_checks.fetch_add(1, std::memory_order_relaxed); // relaxed: statistic
    const std::uint64_t now = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    const bool fired = e.policy == cpu_timer_policy::hybrid ? armed_wall == cpu_never || mono >= armed_wall
                                                           : now >= armed_cpu;
    if (next == cpu_never) {
        if (fired) { // disarmed lazily (cancel): note it fired, so the next arm sets it again
            e.armed_wall_ns.store(cpu_never, std::memory_order_relaxed); // relaxed: expirer-only
            e.armed_cpu_ns.store(cpu_never, std::memory_order_relaxed);
        }
        return;
    }
    // Not due: re-arm for the remainder, then re-load the head (PT2): an armer that read the old
    // setting before our store published an earlier head we must see here.
    while (now < next && (fired || kicked)) {
        q.kernel_set(e, next, now, mono);
        const std::uint64_t again = q.next_ns.load(std::memory_order_seq_cst); // seq_cst: (PT2)
        if (again >= next)
            return;
        next = again;
    }
    if (now < next)
        return;
    // Due: the pass collects it and re-arms the kernel timer for what is left.
    e.armed_cpu_ns.store(cpu_never, std::memory_order_relaxed); // relaxed: expirer-only
    e.armed_wall_ns.store(cpu_never, std::memory_order_relaxed);
    // acq_rel: pairs with the pass's release clear.
    if (!e.scheduled.exchange(true, std::memory_order_acq_rel))
        (void)task_work_add(*self, e, notify::resume);
}

/// The expiry pass on the expirer (posix_cpu_timers_work → handle_posix_cpu_timers).
inline void pcpu_queue::pass(callback_head* cb) noexcept {
    auto& e = *static_cast<pcpu_expirer*>(cb);
    if (e.retired) { // the expirer exited with this pass queued: its timers are gone already
        delete &e;
        return;
    }
    pcpu_queue& q = *global.load(std::memory_order_acquire); // acquire: as in the hook
    // The pass takes the expiry lock and the queue lock (PI mutexes) inside task_work_run, as the
    // kernel's posix_cpu_timers_work takes its mutex in task_work: trusted for RealtimeSanitizer.
    [[maybe_unused]] rtsan_trust trust;
    thread_ctx& self = *e.ctx;
    q.passes.fetch_add(1, std::memory_order_relaxed); // relaxed: statistic
    const std::uint64_t now = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    // collect_timerqueue(): pop and mark `handling` in one q section.
    auto collect = [&](expiry_pass& p, process_cpu_timer* (&batch)[cpu_timer_max_collected],
                       std::uint32_t (&seqs)[cpu_timer_max_collected], std::size_t& n, bool& more) noexcept {
        cpu_expiry::collect(q.timers, now, p, batch, seqs, n, more, [](process_cpu_timer&) noexcept { return true; });
    };
    // Clear `scheduled` before publishing, as cpu_timer's pass.
    auto finish = [&]() noexcept {
        e.scheduled.store(false, std::memory_order_release); // release: pairs with the hook's acq_rel exchange
        q.publish(&self);
    };
    const bool more = cpu_expiry::pass<process_cpu_timer, cpu_timer_max_collected>(q, self, now, collect, finish);
    if (more && !e.scheduled.exchange(true, std::memory_order_acq_rel)) // acq_rel: as in the hook
        (void)task_work_add(self, e, notify::none);
}

/// Exit of the expirer: disarm every timer, delete the kernel timer (exit_order::process_cpu_timer:
/// before task_work's drain, which runs a queued pass: it finds `retired` and frees).
inline void pcpu_queue::on_exit(thread_ctx& self) noexcept {
    pcpu_queue* qp = global.load(std::memory_order_acquire); // acquire: as in the hook
    // relaxed: only this thread stores itself there; another expirer's ctx never equals ours.
    if (qp == nullptr || qp->expirer_ctx.load(std::memory_order_relaxed) != &self)
        return;
    qp->lock_q();
    pcpu_expirer* e = qp->detach_expirer();
    if (e->ktimer >= 0)
        (void)raw_syscall(SYS_timer_delete, e->ktimer);
    e->ktimer = -1;
    qp->unlock_q();
    // acquire: pairs with the pass's release clear. Our hook no longer touches e (detach_expirer).
    if (e->scheduled.load(std::memory_order_acquire))
        e->retired = true;
    else
        delete e;
}

/// fork() child: no expirer (it may not exist in the child; kernel timers are not inherited).
inline void pcpu_queue::on_fork_child() noexcept {
    pcpu_queue* qp = global.load(std::memory_order_relaxed); // relaxed: single-threaded now
    if (qp == nullptr)
        return;
    ::new (&qp->lock) pi_mutex(); // another thread may have held it at fork: the copy is dead
    thread_ctx* self = tls_ctx_load();
    const bool was_expirer = self != nullptr && qp->expirer_ctx.load(std::memory_order_relaxed) == self; // relaxed: as above
    pcpu_expirer* e = qp->detach_expirer();
    // The forking expirer's queued pass (if any) frees it; the parent's other threads are gone.
    if (e != nullptr && was_expirer && e->scheduled.load(std::memory_order_relaxed)) // relaxed: as above
        e->retired = true;
    else
        delete e;
}

inline const bool process_cpu_timer_exit_registered = register_exit_hook(&pcpu_queue::on_exit, exit_order::process_cpu_timer);

} // namespace detail

inline status process_cpu_timer_setup(thread_ctx& expirer, process_cpu_timer_options opts) {
    using detail::pcpu_queue;
    RTDEFER_ASSERT(expirer.is_current(), "process_cpu_timer_setup: `expirer` must be the calling thread's ctx");
    if (interrupt_signal() == 0)
        return status::not_installed;
    if (const status hs = interrupt_register_hook(&pcpu_queue::interrupt); hs != status::ok)
        return hs;
    detail::setup_guard guard(pcpu_queue::setup_lock);
    static const bool fork_registered = [] {
        return ::pthread_atfork(nullptr, nullptr, &pcpu_queue::on_fork_child) == 0;
    }();
    if (!fork_registered)
        return status::system_error;
    pcpu_queue* q = pcpu_queue::global.load(std::memory_order_relaxed); // relaxed: under setup_lock
    if (q == nullptr) {
        q = new pcpu_queue(opts.capacity);
        pcpu_queue::global.store(q, std::memory_order_release); // release: pairs with the hook's acquire
    }
    q->lock_q();
    const bool busy = q->cur != nullptr;
    q->unlock_q();
    if (busy)
        return status::busy;
    auto* e = new detail::pcpu_expirer;
    e->func = &pcpu_queue::pass;
    e->ctx = &expirer;
    e->policy = opts.policy;
    const long online = ::sysconf(_SC_NPROCESSORS_ONLN);
    e->cpus = opts.cpus != 0 ? opts.cpus : online > 0 ? static_cast<std::uint64_t>(online) : 1;
    e->ktimer = detail::create_signal_timer(
        expirer.tid, opts.policy == cpu_timer_policy::hybrid ? CLOCK_MONOTONIC : CLOCK_PROCESS_CPUTIME_ID);
    if (e->ktimer < 0) {
        const int err = -e->ktimer;
        delete e;
        return err == EAGAIN ? status::no_space : status::system_error;
    }
    q->lock_q();
    q->cur = e;
    // release: pairs with the hook's acquire: `cur` is set before the hook may use it.
    q->expirer_ctx.store(&expirer, std::memory_order_release);
    q->publish(&expirer); // timers cannot be armed without an expirer: the heap is empty
    q->unlock_q();
    return status::ok;
}

inline std::uint64_t process_cpu_time_ns() noexcept { return detail::clock_ns(CLOCK_PROCESS_CPUTIME_ID); }

inline process_cpu_timer_stats process_cpu_timer_statistics() noexcept {
    process_cpu_timer_stats r;
    // acquire: pairs with the release in setup.
    if (const detail::pcpu_queue* q = detail::pcpu_queue::global.load(std::memory_order_acquire)) {
        q->snapshot(r);
        r.kicks = q->kicks.load(std::memory_order_relaxed); // relaxed: a statistic
    }
    return r;
}

inline process_cpu_timer::~process_cpu_timer() {
    // relaxed: misuse check; a correct caller synchronised with cancel_sync.
    RTDEFER_ASSERT(!hook_.queued() && !item_.running(), // a collected one is `running` (marked)
                   "process_cpu_timer destroyed while armed or running: cancel_sync() it first");
}

inline status process_cpu_timer::arm(thread_ctx& self, std::uint64_t cpu_deadline_ns, callback fn, void* arg) noexcept {
    if (fn == nullptr)
        return status::invalid_argument;
    RTDEFER_ASSERT(self.is_current(), "process_cpu_timer::arm: `self` must be the calling thread's ctx");
    RTDEFER_ASSERT(!in_interrupt(), "process_cpu_timer::arm from a signal handler");
    detail::pcpu_queue* q = detail::pcpu_queue::global.load(std::memory_order_acquire); // acquire: as in the hook
    if (q == nullptr)
        return status::not_installed;
    return arm_in(*q, q->timers, self, cpu_deadline_ns, fn, arg, []() noexcept {});
}

inline status process_cpu_timer::arm_after(thread_ctx& self, std::chrono::nanoseconds budget, callback fn, void* arg) noexcept {
    return arm(self, process_cpu_time_ns() + budget_ns(budget), fn, arg);
}

inline bool process_cpu_timer::cancel() noexcept {
    RTDEFER_ASSERT(!in_interrupt(), "process_cpu_timer::cancel from a signal handler");
    detail::pcpu_queue* q = detail::pcpu_queue::global.load(std::memory_order_acquire); // acquire: as in the hook
    return q != nullptr && cancel_in(*q);
}

inline status process_cpu_timer::cancel_sync(thread_ctx& self) noexcept {
    RTDEFER_ASSERT(self.is_current(), "cancel_sync: `self` must be the calling thread's ctx");
    RTDEFER_ASSERT(!in_interrupt(), "process_cpu_timer::cancel_sync from a signal handler");
    detail::pcpu_queue* q = detail::pcpu_queue::global.load(std::memory_order_acquire); // acquire: as in the hook
    return q == nullptr ? status::idle : cancel_sync_in(*q, self);
}

} // namespace rtdefer
