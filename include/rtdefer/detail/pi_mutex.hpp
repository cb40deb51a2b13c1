// rtdefer/detail/pi_mutex.hpp: the library's one mutex type (the userspace rt_mutex), with one
// failure policy. Used by the expiry lock, the timer queue, task_work's cancel lock and (through
// setup_lock.hpp) the setup paths.
//
// Failure policy (one for every user):
//   init    PTHREAD_PRIO_INHERIT is asked for; refused (ENOTSUP/EINVAL: no PI futexes) falls back
//           to a plain mutex and priority_inheritance() says so. A failure of the plain init too
//           (EAGAIN/ENOMEM) is reported by init_status() (no_space / system_error): the owner
//           decides (constructors assert it, as they cannot return it).
//   lock    EOWNERDEAD cannot happen (not robust); EDEADLK (relocking on the owner, which the
//           callers rule out first: wait_running returns would_deadlock) and any other error are a
//           programming error or a broken system: asserted (RTDEFER_ASSERT aborts with a message).
//   unlock  EPERM (not the owner) is a programming error: asserted.
// So lock() and unlock() return nothing: no caller has a status to invent for these cases.
//
// Kept free of heavy includes: thread.hpp includes it into every translation unit.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/status.hpp>

#include <cerrno>

#include <pthread.h>

namespace rtdefer::detail {

/// Tag for the constant-initialised form (a namespace-scope constinit object).
struct pi_mutex_static_init_t {
    explicit constexpr pi_mutex_static_init_t() = default;
};
inline constexpr pi_mutex_static_init_t pi_mutex_static_init{};

/// A non-recursive pthread mutex with priority inheritance (PTHREAD_MUTEX_NORMAL).
class pi_mutex {
public:
    /// Effects: initialises with PTHREAD_PRIO_INHERIT (plain if refused; see init_status()).
    /// Progress: bounded. Real-time safety: setup path (pthread_mutex_init).
    pi_mutex() noexcept {
        pthread_mutexattr_t attr;
        int rc = ::pthread_mutexattr_init(&attr);
        if (rc == 0) {
            pi_ = ::pthread_mutexattr_setprotocol(&attr, PTHREAD_PRIO_INHERIT) == 0;
            rc = ::pthread_mutex_init(&m_, &attr);
            if (rc != 0 && pi_) {
                // ENOTSUP/EINVAL: no PI futexes here. Fall back to a plain mutex, and say so.
                (void)::pthread_mutexattr_setprotocol(&attr, PTHREAD_PRIO_NONE);
                pi_ = false;
                rc = ::pthread_mutex_init(&m_, &attr);
            }
            (void)::pthread_mutexattr_destroy(&attr);
        }
        init_ = rc == 0 ? status::ok : rc == EAGAIN || rc == ENOMEM ? status::no_space : status::system_error;
    }
    /// Constant-initialised form for constinit globals (setup paths only). POSIX has no static
    /// initialiser with PTHREAD_PRIO_INHERIT, so this one is plain: priority_inheritance() is false.
    /// Never destroyed: a thread may still take it while static objects are being destroyed.
    constexpr explicit pi_mutex(pi_mutex_static_init_t) noexcept : m_(PTHREAD_MUTEX_INITIALIZER), destroy_(false) {}
    ~pi_mutex() {
        if (destroy_ && init_ == status::ok)
            (void)::pthread_mutex_destroy(&m_);
    }
    pi_mutex(const pi_mutex&) = delete;
    pi_mutex& operator=(const pi_mutex&) = delete;

    /// Effects: locks. Failures asserted (see the policy above). Progress: blocking (PI: boosts
    /// the owner to the caller's priority). Real-time safety: PI mutex; no allocation.
    void lock() noexcept RTDEFER_BLOCKING {
        [[maybe_unused]] const int rc = ::pthread_mutex_lock(&m_);
        RTDEFER_ASSERT(rc == 0, "pi_mutex: pthread_mutex_lock failed (EDEADLK: relocked by its owner)");
    }
    /// Effects: unlocks. A contended PI unlock is one futex syscall (FUTEX_UNLOCK_PI hands the lock
    /// to the top waiter). Failures asserted.
    void unlock() noexcept RTDEFER_BLOCKING {
        [[maybe_unused]] const int rc = ::pthread_mutex_unlock(&m_);
        RTDEFER_ASSERT(rc == 0, "pi_mutex: pthread_mutex_unlock failed (EPERM: not the owner)");
    }
    /// Returns: true if acquired, false if held (EBUSY). Other errors asserted. Progress: wait-free
    /// when uncontended.
    [[nodiscard]] bool try_lock() noexcept RTDEFER_BLOCKING {
        const int rc = ::pthread_mutex_trylock(&m_);
        RTDEFER_ASSERT(rc == 0 || rc == EBUSY, "pi_mutex: pthread_mutex_trylock failed");
        return rc == 0;
    }

    /// Returns: whether PTHREAD_PRIO_INHERIT was accepted. Wait-free.
    [[nodiscard]] bool priority_inheritance() const noexcept { return pi_; }
    /// Returns: ok, or why the init failed (no_space: EAGAIN/ENOMEM; system_error: other). Wait-free.
    [[nodiscard]] status init_status() const noexcept { return init_; }

private:
    pthread_mutex_t m_;
    bool pi_ = false;
    bool destroy_ = true;
    status init_ = status::ok;
};

} // namespace rtdefer::detail
