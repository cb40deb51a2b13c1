// rtdefer/detail/setup_lock.hpp: the lock that serialises the library's setup paths (hook tables,
// signal installation, work-bit registration).
//
// A plain, non-template type on purpose. If a header of ours instantiated std::lock_guard<std::mutex>,
// clang's -Wfunction-effects would point its "in template expansion here" note at our header whenever
// a user's own nonblocking function took a std::lock_guard<std::mutex>: the user's bug would look like
// ours. This guard is never a template, so diagnostics about user code stay on the user's lines.
#pragma once

#include <rtdefer/config.hpp>

#include <pthread.h>

namespace rtdefer::detail {

/// A statically initialisable mutex for setup paths (never taken on a hot path or in a handler).
class setup_mutex {
public:
    constexpr setup_mutex() noexcept = default;
    setup_mutex(const setup_mutex&) = delete;
    setup_mutex& operator=(const setup_mutex&) = delete;

    /// Effects: locks (blocking). A failure is library misuse or a broken system: asserted.
    void lock() noexcept {
        const int rc = ::pthread_mutex_lock(&m_);
        RTDEFER_ASSERT(rc == 0, "setup lock: pthread_mutex_lock failed");
    }
    /// Effects: unlocks.
    void unlock() noexcept { (void)::pthread_mutex_unlock(&m_); }

private:
    pthread_mutex_t m_ = PTHREAD_MUTEX_INITIALIZER;
};

/// RAII holder of a setup_mutex.
class setup_guard {
public:
    explicit setup_guard(setup_mutex& m) noexcept : m_(m) { m_.lock(); }
    ~setup_guard() { m_.unlock(); }
    setup_guard(const setup_guard&) = delete;
    setup_guard& operator=(const setup_guard&) = delete;

private:
    setup_mutex& m_;
};

} // namespace rtdefer::detail
