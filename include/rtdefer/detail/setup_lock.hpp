// rtdefer/detail/setup_lock.hpp: the lock that serialises the library's setup paths (hook tables,
// signal installation, work-bit registration).
//
// A plain, non-template type on purpose. If a header of ours instantiated std::lock_guard<std::mutex>,
// clang's -Wfunction-effects would point its "in template expansion here" note at our header whenever
// a user's own nonblocking function took a std::lock_guard<std::mutex>: the user's bug would look like
// ours. This guard is never a template, so diagnostics about user code stay on the user's lines.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/pi_mutex.hpp>

namespace rtdefer::detail {

/// The constant-initialised pi_mutex for setup paths (never taken on a hot path or in a handler):
/// usable in constinit globals and before main. Its lock failures follow pi_mutex's policy
/// (asserted). Plain, not PI: POSIX has no static initialiser with PTHREAD_PRIO_INHERIT.
class setup_mutex : public pi_mutex {
public:
    constexpr setup_mutex() noexcept : pi_mutex(pi_mutex_static_init) {}
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
