// rtdefer/detail/expiry_lock_state.hpp: the per-thread expiry lock (the kernel's
// posix_cputimers_work::mutex, and the RT per-CPU timer_base::expiry_lock / softirq_expiry_lock).
//
// thread.hpp embeds one expiry_lock_state in every thread_ctx, so any attached thread can be an
// expirer: it holds `lock` around each expiry pass (expiry_lock.hpp), and a thread that must wait for
// one of its callbacks blocks on that lock. The lock is a pthread mutex with PTHREAD_PRIO_INHERIT, so
// a high-priority waiter boosts the expirer instead of being starved by it.
//
// Kept free of heavy includes: thread.hpp includes this into every translation unit.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdint>

#include <pthread.h>

namespace rtdefer::detail {

/// A pthread mutex with priority inheritance (the userspace rt_mutex). Non-recursive, error-checking
/// off (PTHREAD_MUTEX_NORMAL): relocking it on the owning thread deadlocks, which the callers rule
/// out before they lock (wait_running returns would_deadlock instead).
/// `pi` says whether PTHREAD_PRIO_INHERIT was accepted; without it (a kernel without PI futexes) the
/// mutex is a plain one and the benchmarks print that.
class pi_mutex {
public:
    pi_mutex() noexcept {
        pthread_mutexattr_t attr;
        ::pthread_mutexattr_init(&attr);
        pi_ = ::pthread_mutexattr_setprotocol(&attr, PTHREAD_PRIO_INHERIT) == 0;
        int rc = ::pthread_mutex_init(&m_, &attr);
        if (rc != 0 && pi_) {
            // ENOTSUP/EINVAL: no PI futexes here. Fall back to a plain mutex, and say so in `pi`.
            ::pthread_mutexattr_setprotocol(&attr, PTHREAD_PRIO_NONE);
            pi_ = false;
            rc = ::pthread_mutex_init(&m_, &attr);
        }
        init_error_ = rc;
        ::pthread_mutexattr_destroy(&attr);
    }
    ~pi_mutex() { ::pthread_mutex_destroy(&m_); }
    pi_mutex(const pi_mutex&) = delete;
    pi_mutex& operator=(const pi_mutex&) = delete;

    /// Returns: 0 or the error of pthread_mutex_lock (EDEADLK, EAGAIN, ...). Blocking.
    int lock() noexcept { return ::pthread_mutex_lock(&m_); }
    /// Returns: 0 or the error of pthread_mutex_unlock. A contended PI unlock is one futex syscall
    /// (FUTEX_UNLOCK_PI hands the lock to the top waiter).
    int unlock() noexcept { return ::pthread_mutex_unlock(&m_); }
    /// Returns: 0 if acquired, EBUSY if held.
    int try_lock() noexcept { return ::pthread_mutex_trylock(&m_); }

    [[nodiscard]] bool priority_inheritance() const noexcept { return pi_; }
    [[nodiscard]] int init_error() const noexcept { return init_error_; }
    pthread_mutex_t* native_handle() noexcept { return &m_; }

private:
    pthread_mutex_t m_;
    bool pi_ = false;
    int init_error_ = 0;
};

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
