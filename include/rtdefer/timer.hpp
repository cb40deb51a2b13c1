// rtdefer/timer.hpp: a timer service whose cancel_sync blocks on the expirer's PI expiry lock instead
// of spinning: the kernel's timer_delete_sync()/hrtimer_cancel() with PREEMPT_RT's expiry locks, and
// posix-cpu-timers' per-timer `handling` (see expiry_lock.hpp for the lock protocol).
//
//   timer_service<WaitPolicy = pi_block, Clock = steady_clock>
//     an expiry thread (one thread on detail/percpu_thread.hpp, SCHED_FIFO by default) sleeps until
//     the earliest deadline (park_until on its own ctx; arm() of a new earliest deadline unparks it),
//     or the owner drives it by hand with run_expired(now, self) (tests, or an existing real-time
//     loop). With a Clock other than steady_clock it sleeps on CLOCK_MONOTONIC for at most
//     clock_recheck at a time, so a step of that clock delays expiries by at most that much.
//   basic_timer<Clock> (timer): caller-owned and intrusive; arm/cancel never allocate.
//
// Timer states. All fields are guarded by the service's queue lock `q_` (a PI mutex, held only for
// O(log n) heap work); `handling` is also an atomic so lock-free waiters can poll it.
//
//   state             heap_index   handling     entered by                      left by
//   idle              npos         null         construction, cancel, expiry    arm
//   pending           < npos       null         arm                             expiry pop, cancel*
//   running           npos         expirer      expiry pop (same q_ section     callback return (clear
//                                               as the handling mark)           under q_; periodic
//                                                                               re-arm in that section)
//   running+pending   < npos       expirer      arm from the callback/elsewhere cancel*, return
//
// The window between popping a timer and publishing `handling` (the kernel's timer.c sets
// base->running_timer under the same base->lock as detach_timer()) does not exist here: both happen
// in one q_ critical section, so a canceller holding q_ sees the timer queued or running, never
// neither while its callback is about to run. A periodic re-arm happens in the q_ section that
// clears `handling`, and only if no arm/cancel touched the timer meanwhile (`seq`), so cancel racing
// a periodic expiry cannot be undone by the re-arm. While cancel_sync runs, arm() of that timer is
// refused (`cancelling`), so a callback that re-arms itself cannot outrun it (timer_shutdown_sync's
// concern, solved for the duration of the call).
//
// Which operations may run concurrently (same service):
//   arm, cancel, cancel_sync, pending, next_expiry: any threads, any timers (serialised by q_);
//     also from a callback (cancel_sync of its own timer returns would_deadlock).
//   run_expired: one caller at a time per service (the expiry thread when it was started).
//   two expirers whose callbacks cancel_sync each other's running timers deadlock (ABBA on their
//     expiry locks), as timer_delete_sync() from two timer callbacks would in the kernel.
//   a timer belongs to the service that armed it until cancel_sync there returned; using it with
//     another service meanwhile is misuse (asserted while it is pending).
//   freeing a timer: after cancel_sync returned anything but would_deadlock/timed_out,
//     or when it was never armed. Never from its own callback (the expirer clears `handling` after
//     the callback returns).
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/expiry_lock_state.hpp>
#include <rtdefer/detail/intrusive_heap.hpp>
#include <rtdefer/detail/percpu_thread.hpp>
#include <rtdefer/expiry_lock.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/rt_thread.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <type_traits>

namespace rtdefer {

template <wait_policy WaitPolicy, class Clock>
class timer_service;

namespace detail {
/// tp + d for d >= 0, saturated at TP::max() (a deadline that far away never comes).
template <class TP, class D>
constexpr TP deadline_add_sat(TP tp, D d) noexcept RTDEFER_NONBLOCKING {
    return tp > TP::max() - d ? TP::max() : tp + d;
}
} // namespace detail

/// A caller-owned timer (the kernel's struct timer_list / hrtimer). Non-copyable, non-movable: the
/// service's heap points at it. Destroying it while it is pending or running aborts with a message.
template <class Clock = std::chrono::steady_clock>
class basic_timer {
public:
    using clock = Clock;
    using time_point = typename Clock::time_point;
    using duration = typename Clock::duration;
    /// The callback. Runs on the expirer with its expiry lock held; it may arm, cancel and
    /// cancel_sync any timer of the service (its own cancel_sync returns would_deadlock), but must not
    /// free its own timer.
    using callback = void (*)(basic_timer& t, void* arg) noexcept;

    basic_timer() noexcept = default;
    basic_timer(const basic_timer&) = delete;
    basic_timer& operator=(const basic_timer&) = delete;
    ~basic_timer() {
        RTDEFER_ASSERT(!hook_.queued() && !item_.running(),
                       "timer destroyed while armed or running: cancel_sync() it first");
    }

    /// Returns: whether its callback runs right now (racy peek). Progress: wait-free.
    /// Real-time safety: one relaxed load; async-signal-safe.
    [[nodiscard]] bool running() const noexcept RTDEFER_NONBLOCKING { return item_.running(); }
    /// Returns: the deadline of the current/last expiry. Stable inside the callback (or when idle)
    /// unless another thread re-arms the timer meanwhile (then read it under your own lock).
    /// Progress: wait-free. Real-time safety: a plain load.
    [[nodiscard]] time_point expires() const noexcept RTDEFER_NONBLOCKING { return expires_; }
    /// Returns: inside a periodic callback, how many periods were skipped because the expirer was
    /// late (the kernel's it_overrun). Stable inside the callback. Progress: wait-free (a plain load).
    [[nodiscard]] std::uint64_t overruns() const noexcept RTDEFER_NONBLOCKING { return overruns_; }
    /// Returns: the expiry item (its `handling` names the expirer while the callback runs), for
    /// wait_running(t.expiry(), self). Progress: wait-free. Real-time safety: no access at all.
    [[nodiscard]] const expiry_item& expiry() const noexcept RTDEFER_NONBLOCKING { return item_; }

private:
    template <wait_policy, class>
    friend class timer_service;
    detail::heap_hook hook_;         // heap position (npos when not queued) and FIFO tie-break stamp
    time_point expires_{};
    duration period_{};              // zero: one-shot
    callback fn_ = nullptr;
    void* arg_ = nullptr;
    std::uint32_t seq_ = 0;          // bumped by every arm/cancel: a periodic re-arm needs it unchanged
    std::uint32_t cancelling_ = 0;   // cancel_sync calls in progress: arm() refused meanwhile
    std::uint64_t overruns_ = 0;
    const void* service_ = nullptr;  // the service whose heap holds it (valid while hook_.queued())
    expiry_item item_;               // handling: the expirer running the callback
};
using timer = basic_timer<>;

/// Construction options of a timer_service.
struct timer_service_options {
    /// The expiry thread: name, policy (SCHED_FIFO by default), priority, CPU, memory locking.
    rt_thread_options thread{.name = "rtdefer-timer", .policy = sched_policy::fifo, .priority = 10};
    /// Maximum number of armed timers (the heap is allocated once, here). 10^5 and more are fine.
    std::size_t capacity = 1024;
    /// false: no thread; the owner calls run_expired(now, self).
    bool start_thread = true;
    /// Only for a Clock other than steady_clock: the expiry thread sleeps on CLOCK_MONOTONIC, so it
    /// wakes at least this often to re-read Clock::now(). A step of that clock (settimeofday, NTP)
    /// then delays an expiry by at most this much. Must be positive.
    std::chrono::nanoseconds clock_recheck = std::chrono::milliseconds(100);
};

/// A timer service. `WaitPolicy` (a wait_policy) is how cancel_sync waits for a running callback
/// (pi_block; rtdefer/baseline/spin_wait.hpp has the spin baselines). `Clock` is the deadline clock.
template <wait_policy WaitPolicy = pi_block, class Clock = std::chrono::steady_clock>
class timer_service {
public:
    using timer_type = basic_timer<Clock>;
    using time_point = typename Clock::time_point;
    using duration = typename Clock::duration;
    using callback = typename timer_type::callback;

    /// Effects: allocates the heap for `opts.capacity` timers and, if `opts.start_thread`, starts
    /// the expiry thread (SCHED_FIFO falls back to SCHED_OTHER when refused, unless
    /// opts.thread.require_rt; see sched_status()). Throws: std::bad_alloc, std::system_error.
    /// Progress: blocking. Real-time safety: setup path (allocates, creates a thread).
    explicit timer_service(timer_service_options opts = {}, WaitPolicy policy = WaitPolicy{})
        : policy_(policy), heap_(opts.capacity), recheck_(opts.clock_recheck) {
        RTDEFER_ASSERT(q_.init_status() == status::ok, "timer_service: pthread_mutex_init failed");
        RTDEFER_ASSERT(recheck_ > std::chrono::nanoseconds::zero(), "timer_service: clock_recheck must be positive");
        if (opts.start_thread)
            thread_.emplace(opts.thread, hooks_); // its setup hook sets expirer_
    }

    /// Effects: stops and joins the expiry thread (a pass in progress finishes first; its callbacks
    /// may still arm timers), then unlinks every still-armed timer (they become idle and may be
    /// freed; their callbacks never run). No other thread may be using the service (a manual
    /// run_expired must have returned, no arm/cancel/cancel_sync in flight).
    /// Progress: blocking (join). Real-time safety: teardown path.
    ~timer_service() {
        if (thread_)
            thread_->stop(); // no pass begins after this, the one in progress finishes
        lock_q();
        heap_.clear();
        unlock_q();
    }
    timer_service(const timer_service&) = delete;
    timer_service& operator=(const timer_service&) = delete;

    /// Effects: arms `t` to run `fn(t, arg)` at `when` (then every `period` if non-zero); an armed
    /// timer is moved (mod_timer). Wakes the expiry thread if this is the new earliest deadline.
    /// Any `when` is valid: one in the past (even time_point::min()) is due at once; max() is due
    /// only to a run_expired(max()).
    /// Returns: ok (it was not pending), moved (it was pending: that expiry was replaced),
    /// cancelling (a cancel_sync of `t` is in progress), no_space (capacity reached),
    /// invalid_argument (null fn, negative period).
    /// Progress: blocking on the queue's PI mutex, held for O(log n); one futex wake at most.
    /// Real-time safety: no allocation; takes a PI mutex (not nonblocking).
    [[nodiscard]] status arm(timer_type& t, time_point when, callback fn, void* arg = nullptr,
                             duration period = duration::zero()) noexcept RTDEFER_BLOCKING {
        if (fn == nullptr || period < duration::zero())
            return status::invalid_argument;
        status result;
        bool wake;
        lock_q();
        assert_not_foreign(t);
        if (t.cancelling_ != 0) {
            unlock_q();
            return status::cancelling;
        }
        const bool was_queued = t.hook_.queued();
        if (!was_queued && heap_.full()) {
            unlock_q();
            return status::no_space;
        }
        ++t.seq_;
        t.fn_ = fn;
        t.arg_ = arg;
        t.period_ = period;
        t.expires_ = when;
        if (was_queued) {
            heap_.update(t);
            result = status::moved;
        } else {
            heap_push(t);
            result = status::ok;
        }
        wake = heap_.top() == &t && expirer_ != nullptr;
        unlock_q();
        if (wake)
            (void)unpark(*expirer_);
        return result;
    }

    /// Effects: dequeues `t` if it is pending (try_to_del_timer without the wait). If its callback is
    /// running, it is not waited for, but a periodic timer will not re-arm itself after it.
    /// Returns: whether it was pending (false for an idle timer and for one that is only running).
    /// Progress: blocking on the queue's PI mutex for O(log n). Real-time safety: no allocation.
    [[nodiscard]] bool cancel(timer_type& t) noexcept RTDEFER_BLOCKING {
        lock_q();
        assert_not_foreign(t);
        ++t.seq_;
        const bool was_queued = t.hook_.queued();
        if (was_queued)
            heap_.erase(t);
        unlock_q();
        return was_queued;
    }

    /// Effects: disarms `t` and, if its callback is running, waits until it has returned
    /// (timer_delete_sync). While this runs, arm(t) is refused, and a periodic timer does not re-arm.
    /// Returns:
    ///   removed        a pending expiry was dequeued before it ran (if a callback of an earlier
    ///                  expiry was running too, it has also returned);
    ///   waited         its callback was running; it has returned;
    ///   idle           it was neither pending nor running;
    ///   would_deadlock called from its own callback (self is the expirer): it is disarmed and will
    ///                  not run again, the running callback (the caller) goes on;
    ///   timed_out      only with a spin policy whose give_up flag was set: it may still run.
    /// Lock failures follow detail::pi_mutex's policy (asserted).
    /// After removed, waited or idle the callback is not running and will not run: `t` may be freed.
    /// The caller must not hold a lock the callback takes (timer_delete_sync's rule: that deadlocks).
    /// Progress: blocking; with pi_block bounded by the callback's remaining time at the caller's
    /// priority (priority inheritance through the expirer's lock), plus at most the expirer's next
    /// callback when the expirer dropped its lock between callbacks before the kernel had queued us
    /// on it (the waiter count is raised just before we lock: a hint, as the kernel's timer_waiters;
    /// see pi_block). Real-time safety: no allocation, PI mutexes only; never spins with pi_block.
    [[nodiscard]] status cancel_sync(timer_type& t, thread_ctx& self) noexcept RTDEFER_BLOCKING {
        RTDEFER_ASSERT(self.is_current(), "cancel_sync: `self` must be the calling thread's ctx");
        bool dequeued = false;
        bool waited = false;
        lock_q();
        assert_not_foreign(t);
        ++t.cancelling_;
        for (;;) {
            ++t.seq_;
            if (t.hook_.queued()) {
                heap_.erase(t);
                dequeued = true;
            }
            // relaxed: `handling` is written only inside q_ critical sections, and we hold q_.
            thread_ctx* h = t.item_.handling.load(std::memory_order_relaxed);
            if (h == nullptr)
                break;
            if (h == &self) {
                --t.cancelling_;
                unlock_q();
                return status::would_deadlock;
            }
            status s;
            {
                // The expirer is mid-pass (it marked handling under q_ and clears it only under q_),
                // so its thread holds its own reference: taking ours here is the kernel's
                // get_task_struct() under rcu_read_lock() in posix_cpu_timer_wait_running().
                thread_ref expirer(*h);
                unlock_q();
                s = detail::wait_for_expirer(t.item_, *expirer, policy_);
            }
            lock_q();
            if (s != status::waited) {
                --t.cancelling_;
                unlock_q();
                return s;
            }
            waited = true;
            // Re-check under q_ (the kernel's retry loop in timer_delete_sync()).
        }
        --t.cancelling_;
        unlock_q();
        return dequeued ? status::removed : waited ? status::waited : status::idle;
    }

    /// Effects: runs, on the calling thread as the expirer, every timer whose deadline is <= now,
    /// in deadline order (FIFO among equal deadlines), holding self's expiry lock for the pass and
    /// dropping it between callbacks while a canceller waits. Periodic timers are re-armed at the
    /// next multiple of their period after `now` (overruns() counts the skipped ones); one whose
    /// next expiry does not fit in time_point stops (becomes idle) instead of overflowing.
    /// A pass is bounded: it stops at the first due timer that was armed (or moved) after it began,
    /// even if older due timers are queued behind it; the next pass runs them (the expiry thread
    /// starts it at once). So a callback re-arming itself in the past cannot make it endless.
    /// Returns: the number of callbacks run. Precondition: `self` is the caller's ctx; one caller at
    /// a time per service. Progress: blocking (PI mutexes), bounded by the expired callbacks.
    /// Real-time safety: no allocation; PI mutexes; runs user callbacks.
    std::size_t run_expired(time_point now, thread_ctx& self) noexcept RTDEFER_BLOCKING {
        // relaxed: a misuse check only; the queue lock orders everything the pass touches.
        RTDEFER_ASSERT(!in_pass_.exchange(true, std::memory_order_relaxed),
                       "run_expired: another thread is already expiring this service (one expirer at a time)");
        const std::size_t ran = expire_due(now, self);
        in_pass_.store(false, std::memory_order_relaxed); // relaxed: see the exchange above
        return ran;
    }

    /// Returns: whether `t` is pending (queued); a snapshot. Progress: blocking on q_ for O(1).
    /// Real-time safety: PI mutex, no allocation.
    [[nodiscard]] bool pending(const timer_type& t) noexcept RTDEFER_BLOCKING {
        lock_q();
        const bool p = t.hook_.queued();
        unlock_q();
        return p;
    }

    /// Returns: the earliest deadline, if any timer is armed. Progress: blocking on q_ for O(1).
    /// Real-time safety: PI mutex, no allocation.
    [[nodiscard]] std::optional<time_point> next_expiry() noexcept RTDEFER_BLOCKING {
        lock_q();
        std::optional<time_point> r;
        if (const timer_type* head = heap_.top())
            r = head->expires_;
        unlock_q();
        return r;
    }

    /// Returns: the number of armed timers. Progress: blocking on q_ for O(1).
    /// Real-time safety: PI mutex, no allocation.
    [[nodiscard]] std::size_t size() noexcept RTDEFER_BLOCKING {
        lock_q();
        const std::size_t n = heap_.size();
        unlock_q();
        return n;
    }
    /// Returns: the maximum number of armed timers (timer_service_options::capacity). Wait-free.
    [[nodiscard]] std::size_t capacity() const noexcept { return heap_.capacity(); }
    /// Returns: the number of periodic re-arms dropped because the heap was full (0 normally).
    /// Progress: wait-free. Real-time safety: one relaxed load.
    [[nodiscard]] std::uint64_t dropped_rearms() const noexcept {
        // relaxed: a statistic.
        return dropped_rearms_.load(std::memory_order_relaxed);
    }

    /// Returns: the expiry thread's ctx, or nullptr without a thread. Progress: wait-free.
    [[nodiscard]] thread_ctx* expirer() const noexcept { return expirer_; }
    /// Returns: the scheduling the expiry thread got, or nullptr without a thread. Wait-free.
    [[nodiscard]] const sched_report* sched_status() const noexcept {
        return thread_ ? &thread_->sched(0) : nullptr;
    }
    /// Returns: whether the queue lock and expiry locks use priority inheritance here. Wait-free.
    [[nodiscard]] bool priority_inheritance() const noexcept { return q_.priority_inheritance(); }
    /// Returns: the wait policy cancel_sync uses. Wait-free.
    [[nodiscard]] const WaitPolicy& policy() const noexcept { return policy_; }

private:
    // Lock failures follow detail::pi_mutex's policy (asserted).
    void lock_q() noexcept RTDEFER_BLOCKING { q_.lock(); }
    void unlock_q() noexcept RTDEFER_BLOCKING { q_.unlock(); }

    // A timer pending on another service carries that heap's index: using it here would corrupt
    // both heaps. (Racy read in exactly that misuse; fine otherwise: q_ of its service is ours.)
    void assert_not_foreign(const timer_type& t) const noexcept RTDEFER_NONBLOCKING {
        RTDEFER_ASSERT(!t.hook_.queued() || t.service_ == this,
                       "timer is pending on another timer_service: cancel_sync it there first");
    }

    // One expiry pass: pop and run every timer due at `now` under self's expiry lock.
    std::size_t expire_due(time_point now, thread_ctx& self) noexcept RTDEFER_BLOCKING {
        std::size_t ran = 0;
        bool first = true;
        std::uint64_t pass_order = 0; // arms from here on (stamps >= this) wait for the next pass
        expiry_pass pass(self);
        for (;;) {
            lock_q();
            if (first) {
                pass_order = heap_.next_order();
                first = false;
            }
            // A timer (re-)armed during this pass waits for the next one even if it is due: a
            // callback that re-arms itself at a deadline <= now would otherwise keep the pass (and
            // the expiry lock) forever, and the expiry thread would never stop.
            timer_type* head = heap_.top();
            if (head == nullptr || head->expires_ > now || head->hook_.order >= pass_order) {
                unlock_q();
                break;
            }
            timer_type& t = *head;
            heap_.erase(t);
            // Pop and mark in one q_ section: see "the window" at the top of this file.
            pass.mark(t.item_);
            const callback fn = t.fn_;
            void* const arg = t.arg_;
            const std::uint32_t seq = t.seq_;
            unlock_q();

            fn(t, arg);
            ++ran;

            lock_q();
            if (t.period_ > duration::zero() && t.seq_ == seq && t.cancelling_ == 0 &&
                !t.hook_.queued())
                rearm_periodic(t, now);
            // The clear is the expirer's last access to `t` (expiry_clear_handling's contract): a
            // waiter polling `handling` without q_ (wait_running on t.expiry() with a polling
            // policy) may free `t` as soon as it reads null.
            pass.clear(t.item_);
            unlock_q();
            pass.sync_wait_running();
        }
        return ran;
    }

    // The expiry thread's hooks on detail::percpu_threads (one thread, index 0): run what expired,
    // again at once while the earliest deadline is due, else park until it. The mechanism's stop
    // flag is read before each pass.
    struct expiry_hooks {
        timer_service& s;
        status setup(std::size_t, thread_ctx& self) noexcept {
            s.expirer_ = &self; // published to the constructor by percpu_threads' start handshake
            return status::ok;
        }
        void run(std::size_t, thread_ctx& self) noexcept { (void)s.run_expired(Clock::now(), self); }
        // A pass stops at timers armed during it (see run_expired): those may already be due.
        bool should_run(std::size_t) noexcept {
            return s.sleep_deadline(s.next_expiry()) <= std::chrono::steady_clock::now();
        }
        // An arm() of an earlier deadline after this read unparks us: its token makes the park
        // return at once (no lost wake-up).
        std::chrono::steady_clock::time_point park_deadline(std::size_t) noexcept {
            return s.sleep_deadline(s.next_expiry());
        }
        // What is still armed is unlinked by the destructor (as without a thread).
        void cleanup(std::size_t, thread_ctx&) noexcept {}
    };

    // The CLOCK_MONOTONIC time to sleep until for the earliest deadline `next`. Overflow-free for
    // any deadline (time_point::min() and max() included).
    std::chrono::steady_clock::time_point sleep_deadline(const std::optional<time_point>& next) const noexcept {
        using steady = std::chrono::steady_clock;
        if constexpr (std::is_same_v<Clock, steady>) {
            return next ? *next : steady::time_point::max();
        } else {
            if (!next)
                return steady::time_point::max(); // an arm() of a first deadline unparks us
            const steady::time_point snow = steady::now();
            const time_point cnow = Clock::now();
            if (*next <= cnow)
                return snow;
            // Another clock can be stepped: sleep at most recheck_, then re-read it.
            const duration cap = std::chrono::ceil<duration>(recheck_);
            if (*next >= detail::deadline_add_sat(cnow, cap))
                return detail::deadline_add_sat(snow, std::chrono::ceil<steady::duration>(recheck_));
            return snow + std::chrono::ceil<steady::duration>(*next - cnow); // < cap: no overflow
        }
    }

    // bump_cpu_timer(): the next expiry is the first multiple of the period after `now`.
    // Returns false (the timer stops: idle) when that instant does not fit in time_point.
    static bool next_periodic(timer_type& t, time_point now, time_point& next,
                              std::uint64_t& skipped) noexcept RTDEFER_NONBLOCKING {
        const duration p = t.period_;
        if (now > time_point::max() - p)
            return false; // no representable instant after now + ... (also: now == max)
        next = detail::deadline_add_sat(t.expires_, p);
        skipped = 0;
        if (next > now)
            return true;
        using rep = typename duration::rep;
        if constexpr (std::is_integral_v<rep> && std::is_signed_v<rep>) {
            // In unsigned arithmetic: `now - next` overflows rep when next is far in the past
            // (a deadline of time_point::min()). now >= next, so the difference is exact.
            using U = std::make_unsigned_t<rep>;
            const U gap = static_cast<U>(static_cast<U>(now.time_since_epoch().count()) -
                                         static_cast<U>(next.time_since_epoch().count()));
            const U behind = gap / static_cast<U>(p.count()) + 1;
            // next + behind * p is in (now, now + p], which fits (checked above).
            const U at = static_cast<U>(static_cast<U>(next.time_since_epoch().count()) +
                                        behind * static_cast<U>(p.count()));
            next = time_point(duration(static_cast<rep>(at)));
            skipped = static_cast<std::uint64_t>(behind);
        } else {
            const auto behind = std::floor((now - next) / p) + 1;
            skipped = static_cast<std::uint64_t>(behind);
            next += std::chrono::duration_cast<duration>(behind * p);
        }
        return true;
    }

    void rearm_periodic(timer_type& t, time_point now) noexcept RTDEFER_NONBLOCKING {
        time_point next;
        std::uint64_t skipped = 0;
        if (!next_periodic(t, now, next, skipped))
            return;
        if (heap_.full()) {
            // relaxed: a statistic.
            dropped_rearms_.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        t.overruns_ = skipped;
        t.expires_ = next;
        heap_push(t);
    }

    // The heap (detail/intrusive_heap.hpp) under q_; a queued timer records its service.
    struct heap_traits {
        static detail::heap_hook& hook(timer_type& t) noexcept RTDEFER_NONBLOCKING { return t.hook_; }
        static const detail::heap_hook& hook(const timer_type& t) noexcept RTDEFER_NONBLOCKING { return t.hook_; }
        static time_point key(const timer_type& t) noexcept RTDEFER_NONBLOCKING { return t.expires_; }
    };
    void heap_push(timer_type& t) noexcept RTDEFER_NONBLOCKING {
        t.service_ = this;
        heap_.push(t);
    }

    WaitPolicy policy_;
    detail::pi_mutex q_;                  // the queue lock (PI): guards the heap and timer fields
    detail::intrusive_heap<timer_type, heap_traits> heap_; // allocated once, at construction
    std::atomic<std::uint64_t> dropped_rearms_{0};
    std::atomic<bool> in_pass_{false};    // misuse check: one run_expired at a time
    std::chrono::nanoseconds recheck_;    // clock_recheck (Clock other than steady_clock)
    thread_ctx* expirer_ = nullptr;       // the expiry thread's ctx (alive while thread_ lives)
    expiry_hooks hooks_{*this};
    std::optional<detail::percpu_threads<expiry_hooks>> thread_; // last: stopped before the rest goes
};

} // namespace rtdefer
