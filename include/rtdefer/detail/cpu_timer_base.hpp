// rtdefer/detail/cpu_timer_base.hpp: what a per-thread (cpu_timer) and a process-wide
// (process_cpu_timer) CPU timer are alike: the per-timer state (heap hook, deadline, callback, the
// seq_/cancelling_/collected_ bookkeeping, fired_at, the expiry item), its read accessors, and the
// arm / cancel / cancel_sync cores, which differ only in the queue they lock and unlink from.
//
// The queue (cpu_timer_queue, pcpu_queue) supplies, all but the locks under its lock:
//   lock_q() / unlock_q()     the PI queue lock
//   accepting()               false once the timers' expirer exited (arm: exited)
//   unlink(t)                 t queued: erase it; returns whether its expiry was still to come
//   remove(t)                 unlink(t), then re-publish the head (cancel: it only moves later)
//   armed(self)               after a push by `self`: publish the head, re-arm or kick the expirer
//   hard_context              true when an interrupt hook may run t's callback (cpu_timer urgent);
//                             then also hook_inside(self), firing(t), wait_hard(self)
// The public headers keep the contract (their docs name these accessors with `using`).
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/intrusive_heap.hpp>
#include <rtdefer/expiry_lock.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <utility>

namespace rtdefer::detail {

struct cpu_expiry;

/// The state and cores shared by both CPU timer kinds (CRTP: `Timer` derives from it).
/// Non-copyable, non-movable, as the timers are.
template <class Timer>
class cpu_timer_base {
public:
    using callback = void (*)(Timer& t, void* arg) noexcept;

    cpu_timer_base(const cpu_timer_base&) = delete;
    cpu_timer_base& operator=(const cpu_timer_base&) = delete;

    /// Returns: the deadline of the current/last arm (stable in the callback). Progress: wait-free.
    [[nodiscard]] std::uint64_t expires() const noexcept RTDEFER_NONBLOCKING { return expires_ns_; }
    /// Returns: the clock sampled when the last expiry was handled. Progress: wait-free (relaxed
    /// load: read it in the callback or after cancel_sync).
    [[nodiscard]] std::uint64_t fired_at() const noexcept RTDEFER_NONBLOCKING {
        return fired_ns_.load(std::memory_order_relaxed); // relaxed: see above
    }
    /// Returns: the expiry item (handling names the expirer while a deferred callback runs).
    [[nodiscard]] const expiry_item& expiry() const noexcept RTDEFER_NONBLOCKING { return item_; }

    /// The intrusive_heap traits of a queue of `Timer`s: keyed by the deadline.
    struct heap_traits {
        static heap_hook& hook(Timer& t) noexcept RTDEFER_NONBLOCKING { return t.hook_; }
        static const heap_hook& hook(const Timer& t) noexcept RTDEFER_NONBLOCKING { return t.hook_; }
        static std::uint64_t key(const Timer& t) noexcept RTDEFER_NONBLOCKING { return t.expires_ns_; }
    };
    using heap = intrusive_heap<Timer, heap_traits>;

protected:
    cpu_timer_base() noexcept = default;
    ~cpu_timer_base() = default;

    /// Returns: a budget as ns, negative ones as 0 (arm_after).
    [[nodiscard]] static std::uint64_t budget_ns(std::chrono::nanoseconds b) noexcept RTDEFER_NONBLOCKING {
        return b.count() > 0 ? static_cast<std::uint64_t>(b.count()) : 0;
    }

    /// Effects: arm's core: under q, refuses (exited, cancelling, no_space), else takes the timer
    /// off `q` (a collected expiry not started is taken back once), stores the deadline and
    /// callback, calls `prime()` (the kind's own fields), pushes it on `h` and q.armed(self).
    /// Returns: as the timers' arm(). Progress: q's PI lock for O(log n).
    template <class Queue, class Prime>
    [[nodiscard]] status arm_in(Queue& q, typename Queue::heap& h, thread_ctx& self, std::uint64_t deadline, callback fn,
                                void* arg, Prime prime) noexcept RTDEFER_BLOCKING {
        q.lock_q();
        if (!q.accepting() || cancelling_ != 0) {
            const status st = !q.accepting() ? status::exited : status::cancelling; // read under q
            q.unlock_q();
            return st;
        }
        bool was_pending = hook_.queued() && q.unlink(timer());
        if (h.full()) {
            q.unlock_q();
            return status::no_space;
        }
        was_pending = std::exchange(collected_, false) || was_pending; // collected, not run: taken back once
        ++seq_;
        fn_ = fn;
        arg_ = arg;
        expires_ns_ = deadline;
        prime();
        h.push(timer());
        q.armed(self);
        q.unlock_q();
        return was_pending ? status::moved : status::ok;
    }

    /// Effects: cancel's core: under q, takes the timer off `q` (no syscall) and takes back a
    /// collected expiry not started (the pass skips it: seq_ moved). Returns: whether it was
    /// pending and will now not run. Progress: q's PI lock for O(log n).
    template <class Queue>
    [[nodiscard]] bool cancel_in(Queue& q) noexcept RTDEFER_BLOCKING {
        q.lock_q();
        ++seq_;
        bool removed = hook_.queued() && q.remove(timer());
        removed = std::exchange(collected_, false) || removed; // collected, not run: skipped, taken back once
        q.unlock_q();
        return removed;
    }

    /// Effects: cancel_sync's core: cancel_in, then while the callback runs (handling set, or
    /// firing in the hard context) waits for it outside q (PI: the expirer's expiry lock, or the
    /// hard lock) and repeats. Returns: removed / waited / idle / would_deadlock (from its own
    /// callback), or what the wait returned otherwise. Progress: blocking, never spins.
    template <class Queue>
    [[nodiscard]] status cancel_sync_in(Queue& q, thread_ctx& self) noexcept RTDEFER_BLOCKING {
        bool removed = false, waited = false;
        q.lock_q();
        ++cancelling_;
        for (;;) {
            ++seq_;
            if (hook_.queued() && q.remove(timer()))
                removed = true;
            if (std::exchange(collected_, false))
                removed = true; // the pass skips it (seq_ moved); it clears handling when it gets there
            // relaxed: `handling` is written under q by the pass, and we hold q.
            thread_ctx* h = item_.handling.load(std::memory_order_relaxed);
            if (h == &self) {
                --cancelling_;
                q.unlock_q();
                return status::would_deadlock;
            }
            bool hook_inside = false, firing = false;
            if constexpr (Queue::hard_context) {
                hook_inside = q.hook_inside(self); // after remove()'s unpublish: see the queue
                firing = q.firing(timer());
            }
            if (h == nullptr && !hook_inside && !firing)
                break;
            status r = status::waited;
            {
                // The counted reference (get_task_struct on the expirer): taken under q, where the
                // pass cannot clear handling, so the expirer cannot have finished exiting.
                thread_ref expirer = h != nullptr ? thread_ref(*h) : thread_ref();
                q.unlock_q();
                if constexpr (Queue::hard_context) {
                    if (hook_inside || firing)
                        q.wait_hard(self);
                }
                if (h != nullptr)
                    r = wait_for_expirer(item_, *expirer, pi_block{});
            } // dropped outside q: the last reference frees an exited expirer's ctx
            q.lock_q();
            if (r != status::waited) {
                --cancelling_;
                q.unlock_q();
                return r;
            }
            if (firing || (h != nullptr && !removed))
                waited = true;
        }
        --cancelling_;
        q.unlock_q();
        return removed ? status::removed : waited ? status::waited : status::idle;
    }

    heap_hook hook_;
    std::uint64_t expires_ns_ = 0;
    callback fn_ = nullptr;
    void* arg_ = nullptr;
    std::uint32_t seq_ = 0;        // bumped by arm/cancel: a collected timer whose seq moved is skipped
    std::uint32_t cancelling_ = 0; // cancel_sync calls in progress: arm refused
    bool collected_ = false;       // popped by a pass, callback not yet started or skipped
    std::atomic<std::uint64_t> fired_ns_{0};
    expiry_item item_;

private:
    friend struct cpu_expiry;
    Timer& timer() noexcept RTDEFER_NONBLOCKING { return static_cast<Timer&>(*this); }
};

} // namespace rtdefer::detail
