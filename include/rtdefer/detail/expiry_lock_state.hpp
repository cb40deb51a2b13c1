// rtdefer/detail/expiry_lock_state.hpp: the per-thread expiry lock (the kernel's
// posix_cputimers_work::mutex, and the RT per-CPU timer_base::expiry_lock / softirq_expiry_lock).
//
// thread.hpp embeds one expiry_lock_state in every thread_ctx, so any attached thread can be an
// expirer: it holds `lock` around each expiry pass (expiry_lock.hpp), and a thread that must wait for
// one of its callbacks blocks on that lock. The lock is a detail::pi_mutex (PTHREAD_PRIO_INHERIT), so
// a high-priority waiter boosts the expirer instead of being starved by it.
//
// Kept free of heavy includes: thread.hpp includes this into every translation unit.
#pragma once

#include <rtdefer/detail/pi_mutex.hpp>

#include <atomic>
#include <cstdint>

namespace rtdefer::detail {

/// Per-thread expiry-lock state (one per thread_ctx).
struct expiry_lock_state {
    /// Held by this thread around each expiry pass (expiry_lock.hpp: expiry_pass / expiry_lock_acquire).
    pi_mutex lock;
    /// Waiters blocked (or about to block) on `lock`: the kernel's timer_waiters. When non-zero the
    /// expirer drops and retakes `lock` between callbacks (expiry_sync_wait_running).
    /// Access: relaxed RMW by waiters, relaxed load by the owner (a hint; see expiry_lock.hpp).
    std::atomic<std::uint32_t> waiters{0};
    /// Owner-only: `lock` is held by the owner (misuse checks). Not read by other threads.
    bool held = false;
    /// Owner-only: this thread has run an expiry pass, so its exit waits for a grace period before
    /// its ctx may be freed (see handling_readers in expiry_lock.hpp).
    bool was_expirer = false;
};

} // namespace rtdefer::detail
