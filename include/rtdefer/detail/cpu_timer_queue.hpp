// rtdefer/detail/cpu_timer_queue.hpp: cpu_timer's mechanism (included at the end of cpu_timer.hpp,
// which holds the contract and the state table): the per-thread queue with its two heaps, the quick
// check in interrupt context, the expiry pass in task_work, the exit and fork handlers.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/cpu_timer.hpp>
#include <rtdefer/detail/cpu_clock.hpp>
#include <rtdefer/detail/cpu_timer_base.hpp>
#include <rtdefer/detail/cpu_timer_expiry.hpp>
#include <rtdefer/detail/cpu_timer_state.hpp>
#include <rtdefer/detail/exit_hooks.hpp>
#include <rtdefer/detail/expiry_lock_state.hpp>
#include <rtdefer/detail/hard_lock.hpp>
#include <rtdefer/detail/intrusive_heap.hpp>
#include <rtdefer/detail/syscall.hpp>
#include <rtdefer/expiry_lock.hpp>
#include <rtdefer/interrupt.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/task_work.hpp>
#include <rtdefer/thread.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <new>
#include <utility>

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>

namespace rtdefer {

namespace detail {

/// The owner's queue: allocated by cpu_timer_setup, freed with the ctx. Guarded by `lock` except
/// the atomics in cpu_timer_state, which the hook reads.
struct cpu_timer_queue : cpu_timer_counters {
    using heap = cpu_timer::heap;

    cpu_timer_queue(thread_ctx& o, const cpu_timer_options& opts)
        : deferred(opts.capacity), urgent(opts.capacity), owner(&o), policy(opts.policy) {
        work.func = &pass;
        work.q = this;
    }

    pi_mutex lock;
    heap deferred;
    heap urgent;
    thread_ctx* owner;
    cpu_timer_policy policy;
    int ktimer = -1;                 // kernel timer id (raw timer_create), -1: none
    clockid_t cpu_clock = CLOCK_THREAD_CPUTIME_ID; // the owner's CPU clock, readable from any thread
    bool dead = false;               // owner exited: arm returns exited
    struct queue_work : callback_head {
        cpu_timer_queue* q = nullptr;
    };
    queue_work work;                 // the one preallocated expiry task_work (posix_cputimers_work)
    std::atomic<bool> paused{false}; // owner-only: a cpu_timer_sleep_guard holds the wall timer off
    std::atomic<std::uint64_t> hard_fires{0}; // statistic (relaxed), beside cpu_timer_counters

    static cpu_timer_state& st(thread_ctx& c) noexcept RTDEFER_NONBLOCKING { return ctx_access::cpu_timer(c); }
    heap& heap_of(const cpu_timer& t) noexcept RTDEFER_NONBLOCKING {
        return t.mode_ == cpu_timer_mode::urgent ? urgent : deferred;
    }

    // Taken inside task_work_run, trusted for RealtimeSanitizer: see queue_lock.
    void lock_q() noexcept RTDEFER_NONBLOCKING { queue_lock(lock); }
    void unlock_q() noexcept RTDEFER_NONBLOCKING { queue_unlock(lock); }
    bool accepting() const noexcept RTDEFER_NONBLOCKING { return !dead; }

    // What cpu_timer_base's cores ask of the queue (see there), all under q.
    /// Unlinks queued `t`. Returns: whether its expiry was still to come (urgent: claimed from the
    /// hook), false for an urgent one the hook fired or is firing.
    bool unlink(cpu_timer& t) noexcept RTDEFER_NONBLOCKING {
        std::uint32_t e = hs_armed;
        // (CT7) acq_rel: the claim against the hook's (CT5): exactly one of them moves it off armed.
        // acquire on failure: a firing one is waited for by cancel_sync (CT6 publishes its end).
        const bool claimed = t.mode_ == cpu_timer_mode::deferred ||
                             t.hard_state_.compare_exchange_strong(e, hs_idle, std::memory_order_acq_rel,
                                                                   std::memory_order_acquire);
        heap_of(t).erase(t);
        return claimed;
    }
    /// unlink(t), then re-publishes the head: (CT1) the seq_cst unpublish of `urgent`.
    bool remove(cpu_timer& t) noexcept RTDEFER_NONBLOCKING {
        const bool claimed = unlink(t);
        publish(owner->is_current());
        return claimed;
    }
    /// After an arm (on the owner, asserted by arm): publishes and re-arms the kernel timer if needed.
    void armed(thread_ctx&) noexcept RTDEFER_NONBLOCKING { publish(true); }
    static constexpr bool hard_context = true; // urgent callbacks run in the interrupt hook
    /// After remove()'s unpublish: whether the hook may still use the timer it read from `urgent`.
    bool hook_inside(const thread_ctx& self) const noexcept RTDEFER_NONBLOCKING {
        // (CT1) seq_cst: after the unpublish (store) in remove(), Dekker with (HL1) in the hook:
        // either it sees our unpublish, or we see it holding `hard`. The owner never races its own hook.
        return owner != &self && st(*owner).hard.load(std::memory_order_seq_cst) != 0;
    }
    /// Returns: whether t's urgent callback is running in the hook.
    static bool firing(const cpu_timer& t) noexcept RTDEFER_NONBLOCKING {
        return t.hard_state_.load(std::memory_order_acquire) == hs_firing; // acquire: pairs with (CT6)
    }
    /// Outside q: blocks on the hard lock (PI) until the hook left it.
    void wait_hard(thread_ctx& self) noexcept RTDEFER_BLOCKING {
        hard_wait(st(*owner).hard, static_cast<std::uint32_t>(self.tid));
    }

    /// Sets the kernel timer for CPU deadline `next` (cpu_never: disarm), given the owner's CPU time
    /// and CLOCK_MONOTONIC now. Owner or its hook only. One timer_settime (async-signal-safe).
    void kernel_set(std::uint64_t next, std::uint64_t cpu_now, std::uint64_t mono) noexcept RTDEFER_NONBLOCKING {
        cpu_timer_state& s = st(*owner);
        itimerspec its{};
        int flags = TIMER_ABSTIME;
        std::uint64_t wall = cpu_never;
        if (next != cpu_never) {
            if (policy == cpu_timer_policy::hybrid) {
                wall = mono + (next > cpu_now ? next - cpu_now : 1);
                its.it_value = ns_ts(wall);
            } else {
                its.it_value = ns_ts(next > 0 ? next : 1);
            }
        }
        // relaxed (both): owner-only words; the hook is the owner interrupted, program order suffices.
        s.armed_cpu_ns.store(next, std::memory_order_relaxed);
        s.armed_wall_ns.store(wall, std::memory_order_relaxed);
        if (ktimer >= 0)
            (void)raw_syscall(SYS_timer_settime, ktimer, flags, &its, nullptr);
        kernel_arms.fetch_add(1, std::memory_order_relaxed); // relaxed: statistic
    }

    /// Under q: drops fired urgent entries at the top, then publishes the heads for the hook and, on
    /// the owner, re-arms the kernel timer if the head is earlier than what it is armed for.
    void publish(bool on_owner, std::uint64_t cpu_now = 0) noexcept RTDEFER_NONBLOCKING {
        cpu_timer_state& s = st(*owner);
        // An idle entry in the urgent heap is one the hook fired (armed→firing→idle): unlink it.
        while (cpu_timer* u = urgent.top()) {
            if (u->hard_state_.load(std::memory_order_acquire) != hs_idle) // acquire: pairs with (CT6)
                break;
            urgent.erase(*u);
        }
        cpu_timer* u = urgent.top();
        const std::uint64_t un = u != nullptr ? u->expires_ns_ : cpu_never;
        const std::uint64_t dn = deferred.empty() ? cpu_never : deferred.top()->expires_ns_;
        const std::uint64_t next = un < dn ? un : dn;
        // relaxed: the pointer store below (CT3) releases it.
        s.urgent_ns.store(un, std::memory_order_relaxed);
        // (CT3) release: pairs with the hook's acquire load (CT4): it sees the timer's fields.
        // seq_cst: the unpublish of a cancelled head is the store of Dekker (CT1) (see cancel).
        s.urgent.store(u, std::memory_order_seq_cst);
        // relaxed: the hook tolerates a stale next_ns (it re-reads the CPU clock; a stale early one
        // costs a check, a stale late one cannot happen: arms that make it earlier run on the owner).
        s.next_ns.store(next, std::memory_order_relaxed);
        // relaxed: owner-only word.
        if (on_owner && next < s.armed_cpu_ns.load(std::memory_order_relaxed))
            kernel_set(next, cpu_now != 0 ? cpu_now : clock_ns(CLOCK_THREAD_CPUTIME_ID), mono_ns());
    }

    static void pass(callback_head* cb) noexcept;
    static void interrupt(thread_ctx* self) noexcept RTDEFER_NONBLOCKING;
    static void on_exit(thread_ctx& self) noexcept;
    static void on_fork_child() noexcept;
    static void destroy(cpu_timer_queue* q) noexcept { delete q; }
    static int create_kernel_timer(pid_t tid, cpu_timer_policy p) noexcept;
};

/// The quick check in interrupt context (the kernel's run_posix_cpu_timers → __run_posix_cpu_timers).
/// Cheap when nothing is due: one load when no timer is armed; under hybrid a vDSO clock read while
/// the wall timer has not fired; otherwise one CPU clock read.
inline void cpu_timer_queue::interrupt(thread_ctx* self) noexcept RTDEFER_NONBLOCKING {
    if (self == nullptr)
        return;
    cpu_timer_state& s = st(*self);
    // relaxed: see publish(); the queue pointer is written on this thread before any arm.
    const std::uint64_t next = s.next_ns.load(std::memory_order_relaxed);
    // relaxed: owner-only word (we are the owner, interrupted).
    const std::uint64_t armed_cpu = s.armed_cpu_ns.load(std::memory_order_relaxed);
    if ((next == cpu_never && armed_cpu == cpu_never) || s.queue == nullptr)
        return; // nothing armed, kernel timer idle: one or two loads
    cpu_timer_queue& q = *s.queue;
    // relaxed: owner-only flag (we are the owner, interrupted while it blocks).
    if (q.paused.load(std::memory_order_relaxed))
        return; // blocked: CPU time stands still; the guard re-arms on wake

    const std::uint64_t mono = mono_ns();
    // relaxed (both): owner-only words (we are the owner, interrupted).
    const std::uint64_t armed_wall = s.armed_wall_ns.load(std::memory_order_relaxed);
    if (q.policy == cpu_timer_policy::hybrid && armed_wall != cpu_never && mono < armed_wall)
        return; // CPU time cannot have passed a deadline the wall timer has not reached
    q.hook_checks.fetch_add(1, std::memory_order_relaxed); // relaxed: statistic
    const std::uint64_t now = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    if (next == cpu_never) {
        // Disarmed lazily (cancel leaves the kernel timer): note that it has fired, so the next arm
        // sets it again instead of trusting a timer that is gone.
        if (q.policy == cpu_timer_policy::hybrid ? mono >= armed_wall : now >= armed_cpu) {
            s.armed_cpu_ns.store(cpu_never, std::memory_order_relaxed); // relaxed: owner-only
            s.armed_wall_ns.store(cpu_never, std::memory_order_relaxed);
        }
        return;
    }
    if (now < next) {
        // The wall timer ran ahead of the CPU clock (the thread was preempted or blocked): re-arm
        // for what is left (the hybrid's re-check). Spurious interrupts before that change nothing.
        const bool fired = q.policy == cpu_timer_policy::hybrid ? armed_wall == cpu_never || mono >= armed_wall
                                                               : now >= armed_cpu;
        if (fired)
            q.kernel_set(next, now, mono);
        return;
    }
    // Due. The one-shot kernel timer has fired (or will, harmlessly): the pass re-arms it.
    s.armed_cpu_ns.store(cpu_never, std::memory_order_relaxed); // relaxed: owner-only
    s.armed_wall_ns.store(cpu_never, std::memory_order_relaxed);
    // relaxed: a hint; the pointer is read under the hard lock with acquire.
    if (now >= s.urgent_ns.load(std::memory_order_relaxed) && hard_trylock(s.hard, static_cast<std::uint32_t>(self->tid))) {
        // (CT4) acquire: pairs with (CT3): the timer's fields are visible.
        cpu_timer* t = s.urgent.load(std::memory_order_acquire);
        std::uint32_t e = hs_armed;
        // (CT5) acq_rel: claims the expiry against cancel's armed→idle CAS (exactly one wins).
        if (t != nullptr && t->expires_ns_ <= now &&
            t->hard_state_.compare_exchange_strong(e, hs_firing, std::memory_order_acq_rel, std::memory_order_relaxed)) {
            t->fired_ns_.store(now, std::memory_order_relaxed); // relaxed: published by (CT6)
            RTDEFER_EFFECTS_TRUST_BEGIN // urgent callbacks are async-signal-safe by contract; RTSan checks them
            t->fn_(*t, t->arg_);
            RTDEFER_EFFECTS_TRUST_END
            // (CT6) release: the callback's writes happen-before whoever sees idle (publish, cancel).
            t->hard_state_.store(hs_idle, std::memory_order_release);
            q.hard_fires.fetch_add(1, std::memory_order_relaxed); // relaxed: statistic
            // relaxed: only un-publishes t if nobody published another head meanwhile.
            (void)s.urgent.compare_exchange_strong(t, nullptr, std::memory_order_relaxed, std::memory_order_relaxed);
        }
        hard_unlock(s.hard, static_cast<std::uint32_t>(self->tid));
    }
    // The pass unlinks what fired, runs due deferred timers and re-arms (never queued twice).
    // acq_rel: pairs with the pass's release clear, so a new pass sees what the last one published.
    if (!s.scheduled.exchange(true, std::memory_order_acq_rel))
        (void)task_work_add(*self, q.work, notify::resume);
}

/// The expiry pass in the owner's task_work (posix_cpu_timers_work → handle_posix_cpu_timers).
inline void cpu_timer_queue::pass(callback_head* cb) noexcept {
    cpu_timer_queue& q = *static_cast<queue_work*>(cb)->q;
    // The pass takes the expiry lock and the queue lock (PI mutexes) inside task_work_run, as the
    // kernel's posix_cpu_timers_work takes its mutex in task_work: trusted for RealtimeSanitizer.
    [[maybe_unused]] rtsan_trust trust;
    thread_ctx& self = *q.owner;
    cpu_timer_state& s = st(self);
    q.passes.fetch_add(1, std::memory_order_relaxed); // relaxed: statistic
    const std::uint64_t now = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    // collect_timerqueue(): pop and mark in one q section; urgent ones the hook did not get (not the
    // earliest, or the hard lock was busy) are claimed here and run in thread context.
    auto collect = [&](expiry_pass& p, cpu_timer* (&batch)[cpu_timer_max_collected],
                       std::uint32_t (&seqs)[cpu_timer_max_collected], std::size_t& n, bool& more) noexcept {
        for (heap* h : {&q.urgent, &q.deferred}) {
            cpu_expiry::collect(*h, now, p, batch, seqs, n, more, [](cpu_timer& t) noexcept {
                std::uint32_t e = hs_armed;
                // acq_rel: the same claim as (CT5); failure: the hook fired it already (just unlink).
                return t.mode_ != cpu_timer_mode::urgent ||
                       t.hard_state_.compare_exchange_strong(e, hs_idle, std::memory_order_acq_rel, std::memory_order_acquire);
            });
        }
    };
    // Clear `scheduled` before publishing: a hook after this queues a new pass; one before it found
    // the work queued-or-running and marked the kernel timer fired, so publish re-arms it.
    auto finish = [&]() noexcept {
        s.scheduled.store(false, std::memory_order_release); // release: pairs with the hook's acq_rel exchange
        if (!q.dead)
            q.publish(true);
    };
    const bool more = cpu_expiry::pass<cpu_timer, cpu_timer_max_collected>(q, self, now, collect, finish);
    if (more && !s.scheduled.exchange(true, std::memory_order_acq_rel)) // acq_rel: as in the hook
        (void)task_work_add(self, q.work, notify::none);
}

inline int cpu_timer_queue::create_kernel_timer(pid_t tid, cpu_timer_policy p) noexcept {
    return create_signal_timer(tid, p == cpu_timer_policy::hybrid ? CLOCK_MONOTONIC : CLOCK_THREAD_CPUTIME_ID);
}

/// Exit: disarm everything, delete the kernel timer (exit_order::cpu_timer: before task_work's drain, so a
/// queued pass finds nothing to run).
inline void cpu_timer_queue::on_exit(thread_ctx& self) noexcept {
    cpu_timer_state& s = st(self);
    if (s.queue == nullptr)
        return;
    cpu_timer_queue& q = *s.queue;
    q.lock_q();
    q.dead = true;
    for (heap* h : {&q.urgent, &q.deferred}) {
        for (std::size_t i = 0; i < h->size(); ++i)
            // relaxed: the hook runs on this thread (never concurrently) and claims with a CAS.
            h->at(i)->hard_state_.store(hs_idle, std::memory_order_relaxed);
        h->clear();
    }
    q.publish(false);
    if (q.ktimer >= 0)
        (void)raw_syscall(SYS_timer_delete, q.ktimer);
    q.ktimer = -1;
    s.armed_cpu_ns.store(cpu_never, std::memory_order_relaxed); // relaxed: owner-only
    s.armed_wall_ns.store(cpu_never, std::memory_order_relaxed);
    q.unlock_q();
}

/// fork() child: the forking thread's state starts idle (kernel timers are not inherited).
inline void cpu_timer_queue::on_fork_child() noexcept {
    thread_ctx* self = tls_ctx_load();
    if (self == nullptr || st(*self).queue == nullptr)
        return;
    cpu_timer_state& s = st(*self);
    cpu_timer_queue& q = *s.queue;
    ::new (&q.lock) pi_mutex(); // another thread may have held it at fork: the copy is dead
    (void)::pthread_getcpuclockid(::pthread_self(), &q.cpu_clock); // the parent's names its thread
    for (heap* h : {&q.urgent, &q.deferred}) {
        for (std::size_t i = 0; i < h->size(); ++i)
            h->at(i)->hard_state_.store(hs_idle, std::memory_order_relaxed); // relaxed: single thread now
        h->clear();
    }
    s.next_ns.store(cpu_never, std::memory_order_relaxed); // relaxed (all): only this thread exists
    s.urgent_ns.store(cpu_never, std::memory_order_relaxed);
    s.urgent.store(nullptr, std::memory_order_relaxed);
    s.armed_cpu_ns.store(cpu_never, std::memory_order_relaxed);
    s.armed_wall_ns.store(cpu_never, std::memory_order_relaxed);
    s.scheduled.store(false, std::memory_order_relaxed);
    s.hard.store(0, std::memory_order_relaxed);
    q.ktimer = create_kernel_timer(gettid(), q.policy);
}

inline const bool cpu_timer_exit_registered = register_exit_hook(&cpu_timer_queue::on_exit, exit_order::cpu_timer);

} // namespace detail

inline status cpu_timer_setup(thread_ctx& self, cpu_timer_options opts) {
    RTDEFER_ASSERT(self.is_current(), "cpu_timer_setup: `self` must be the calling thread's ctx");
    if (detail::ctx_access::cpu_timer(self).queue != nullptr)
        return status::busy;
    if (interrupt_signal() == 0)
        return status::not_installed;
    if (const status hs = interrupt_register_hook(&detail::cpu_timer_queue::interrupt); hs != status::ok)
        return hs;
    static const bool fork_registered = [] {
        return ::pthread_atfork(nullptr, nullptr, &detail::cpu_timer_queue::on_fork_child) == 0;
    }();
    if (!fork_registered)
        return status::system_error;
    auto* q = new detail::cpu_timer_queue(self, opts);
    q->ktimer = detail::cpu_timer_queue::create_kernel_timer(self.tid, opts.policy);
    if (q->ktimer < 0) {
        const int err = -q->ktimer;
        delete q;
        return err == EAGAIN ? status::no_space : status::system_error;
    }
    (void)::pthread_getcpuclockid(::pthread_self(), &q->cpu_clock);
    detail::ctx_access::cpu_timer(self).destroy = &detail::cpu_timer_queue::destroy;
    detail::ctx_access::cpu_timer(self).queue = q;
    return status::ok;
}

inline std::uint64_t cpu_time_ns(const thread_ctx& ctx) noexcept {
    const detail::cpu_timer_queue* q = detail::ctx_access::cpu_timer(ctx).queue;
    return q == nullptr ? 0 : detail::clock_ns(q->cpu_clock);
}

inline cpu_timer_stats cpu_timer_statistics(const thread_ctx& ctx) noexcept {
    cpu_timer_stats r;
    if (const detail::cpu_timer_queue* q = detail::ctx_access::cpu_timer(ctx).queue) {
        q->snapshot(r);
        r.hard_fires = q->hard_fires.load(std::memory_order_relaxed); // relaxed: a statistic
    }
    return r;
}

inline cpu_timer::~cpu_timer() {
    detail::cpu_timer_queue* q = detail::ctx_access::cpu_timer(*owner_).queue;
    if (q != nullptr && hook_.queued()) {
        q->lock_q();
        // acquire: pairs with (CT6): an idle urgent entry is one the hook fired and left.
        if (hook_.queued() && mode_ == cpu_timer_mode::urgent &&
            hard_state_.load(std::memory_order_acquire) == detail::hs_idle) {
            q->urgent.erase(*this);
            q->publish(owner_->is_current()); // (CT1)
        }
        q->unlock_q();
        // (CT1) seq_cst, as in hook_inside(): a hook that read this timer from `urgent` before the
        // unpublish holds `hard` until it is done with it.
        if (!owner_->is_current() && detail::ctx_access::cpu_timer(*owner_).hard.load(std::memory_order_seq_cst) != 0)
            detail::hard_wait(detail::ctx_access::cpu_timer(*owner_).hard, static_cast<std::uint32_t>(detail::gettid()));
    }
    // relaxed: misuse check; a correct caller synchronised with cancel_sync.
    RTDEFER_ASSERT(!hook_.queued() && !item_.running() && hard_state_.load(std::memory_order_relaxed) != detail::hs_firing,
                   "cpu_timer destroyed while armed or running: cancel_sync() it first");
}

inline status cpu_timer::arm(std::uint64_t cpu_deadline_ns, callback fn, void* arg, cpu_timer_mode mode) noexcept {
    if (fn == nullptr)
        return status::invalid_argument;
    thread_ctx& o = *owner_;
    RTDEFER_ASSERT(o.is_current(), "cpu_timer::arm: only the owner thread arms its timers");
    RTDEFER_ASSERT(!in_interrupt(), "cpu_timer::arm from a signal handler (an urgent callback)");
    detail::cpu_timer_queue* q = detail::ctx_access::cpu_timer(o).queue;
    if (q == nullptr)
        return status::not_installed;
    return arm_in(*q, mode == cpu_timer_mode::urgent ? q->urgent : q->deferred, o, cpu_deadline_ns, fn, arg,
                  [&]() noexcept {
                      mode_ = mode;
                      // relaxed: published to the hook by (CT3) in publish() (the queue's armed()).
                      hard_state_.store(mode == cpu_timer_mode::urgent ? detail::hs_armed : detail::hs_idle,
                                        std::memory_order_relaxed);
                  });
}

inline status cpu_timer::arm_after(std::chrono::nanoseconds budget, callback fn, void* arg, cpu_timer_mode mode) noexcept {
    const std::uint64_t now = detail::clock_ns(CLOCK_THREAD_CPUTIME_ID);
    return arm(now + budget_ns(budget), fn, arg, mode);
}

inline bool cpu_timer::cancel() noexcept {
    RTDEFER_ASSERT(!in_interrupt(), "cpu_timer::cancel from a signal handler");
    detail::cpu_timer_queue* q = detail::ctx_access::cpu_timer(*owner_).queue;
    return q != nullptr && cancel_in(*q);
}

inline status cpu_timer::cancel_sync(thread_ctx& self) noexcept {
    RTDEFER_ASSERT(self.is_current(), "cancel_sync: `self` must be the calling thread's ctx");
    RTDEFER_ASSERT(!in_interrupt(), "cpu_timer::cancel_sync from a signal handler");
    detail::cpu_timer_queue* q = detail::ctx_access::cpu_timer(*owner_).queue;
    return q == nullptr ? status::idle : cancel_sync_in(*q, self);
}

/// RAII: while the owner blocks (park, a blocking syscall), the hybrid wall timer is paused, so it
/// cannot interrupt the sleep (the interrupt signal has no SA_RESTART); on destruction it is re-armed
/// for what is left of the earliest budget. CPU time does not advance while blocked, so nothing is
/// lost. A kernel_clock timer needs no pause (the guard does nothing). One timer_settime each way
/// when a timer is armed, none otherwise. Owner only (why not a park hook: docs/cpu_timer.md, Limits).

inline cpu_timer_sleep_guard::cpu_timer_sleep_guard(thread_ctx& self) noexcept : self_(self) {
    detail::cpu_timer_queue* q = detail::ctx_access::cpu_timer(self).queue;
    // relaxed: owner-only word.
    if (q != nullptr && q->policy == cpu_timer_policy::hybrid &&
        detail::ctx_access::cpu_timer(self).armed_cpu_ns.load(std::memory_order_relaxed) != detail::cpu_never) {
        q->paused.store(true, std::memory_order_relaxed); // relaxed: owner-only (its hook reads it)
        q->kernel_set(detail::cpu_never, 0, 0);
        paused_ = true;
    }
}

inline cpu_timer_sleep_guard::~cpu_timer_sleep_guard() {
    if (!paused_)
        return;
    detail::cpu_timer_queue& q = *detail::ctx_access::cpu_timer(self_).queue;
    q.paused.store(false, std::memory_order_relaxed); // relaxed: owner-only
    // relaxed: see publish(); a stale value re-arms early at worst (the hook re-checks).
    const std::uint64_t next = detail::ctx_access::cpu_timer(self_).next_ns.load(std::memory_order_relaxed);
    if (next != detail::cpu_never &&
        next < detail::ctx_access::cpu_timer(self_).armed_cpu_ns.load(std::memory_order_relaxed)) // relaxed: owner-only
        q.kernel_set(next, detail::clock_ns(CLOCK_THREAD_CPUTIME_ID), detail::mono_ns());
}

inline status cpu_timer_park_until(thread_ctx& self, std::chrono::steady_clock::time_point deadline) noexcept {
    cpu_timer_sleep_guard guard(self);
    return park_until(self, deadline);
}
inline status cpu_timer_wait_for_work_until(thread_ctx& self, std::chrono::steady_clock::time_point deadline) noexcept {
    cpu_timer_sleep_guard guard(self);
    return wait_for_work_until(self, deadline);
}

} // namespace rtdefer
